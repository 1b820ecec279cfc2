"""Faults for real medtune processes, injected through `sitecustomize` (see its docstring)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hooks.sitecustomize import SPEC_ENV

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def env(fail_save_at: int | None = None, hold_save_at: int | None = None,
        nan_at: list[int] | None = None, hold_eval_at: int | None = None) -> dict[str, str]:
    """Environment entries that give every medtune process started with them these faults.

    Merged over ``os.environ``: this folder goes first on ``PYTHONPATH`` (then
    the repository and what was there), the faults into ``MEDTUNE_TEST_HOOKS``.
    """
    spec = {k: v for k, v in (("fail_save_at", fail_save_at), ("hold_save_at", hold_save_at),
                              ("nan_at", nan_at), ("hold_eval_at", hold_eval_at)) if v is not None}
    path = [str(HERE), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), SPEC_ENV: json.dumps(spec)}
