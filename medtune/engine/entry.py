"""The ranks' own command line: ``python -m medtune.engine.main --recipe R --run-dir D [--resume ...]``.

Every rank parses these few arguments here, not through `medtune.cli` (the
engine never imports the command line), runs `medtune.engine.main.main` and
turns a user error into one line and an exit code (`medtune.base.exitcodes`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from medtune.base import exitcodes
from medtune.base.errors import UserError, error_lines
from medtune.engine import ds_compat


def parse(argv: list[str]) -> argparse.Namespace:
    """``recipe``, ``run_dir``, ``resume`` (auto | none | PATH) and ``allow_changed`` from `argv`."""
    p = argparse.ArgumentParser(prog="medtune.engine.main")
    p.add_argument("--recipe", required=True)
    p.add_argument("--run-dir", required=True)
    # The DeepSpeed launcher appends --local_rank=N; LOCAL_RANK carries the same.
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--resume", default="auto", metavar="auto|none|PATH")
    p.add_argument("--allow-changed", action="store_true")
    return p.parse_args(argv)


def run(argv: list[str], rank_main: Callable[..., int]) -> int:
    """`rank_main` (recipe, run_dir, resume, allow_changed) on the parsed `argv`; its exit code.

    A DeepSpeed outside `ds_compat.SUPPORTED` is refused first. A `CheckpointError` is said once (by the rank that raised it loudly) and
    gives `exitcodes.IO_ERROR`; a `RecipeError` prints each of its problems
    on its own line and a `UserError` one line, both `exitcodes.USAGE`.
    """
    args = parse(argv)
    from medtune.engine.checkpoint import CheckpointError

    try:
        ds_compat.check_version()  # before any DeepSpeed internals are touched
        return rank_main(args.recipe, args.run_dir, args.resume, args.allow_changed)
    except CheckpointError as err:  # every rank raises it; one says it
        if err.loud:
            print(f"medtune: error: {err}", file=sys.stderr, flush=True)
        return exitcodes.IO_ERROR
    except UserError as err:  # RecipeError included: one line per problem
        print(error_lines(err), file=sys.stderr)
        return exitcodes.USAGE
