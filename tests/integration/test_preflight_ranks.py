"""The ranks start from the launcher's run plan and decide nothing again (issue 16, done-means 2).

A ``sitecustomize`` on the ranks' PYTHONPATH wraps the deciding functions in
every process of a real 2-rank demo run and appends one line per call to a
file: the launching process validates, prepares and plans once; each rank
only reads the plan. The same counter run against a checkout from before
the run plan (main 7c73a10) counts, per rank, one ``config.load``, one
``prepare``, one ``plan_resume`` and one ``hierarchy.resolve``.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

from tests.conftest import RECIPES
from tests.integration.helpers import medtune

COUNTER = '''
import os, sys, importlib
_OUT = os.environ.get("MEDTUNE_TEST_CALLS")
if _OUT:
    _cmd = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode()
    _role = (None if "deepspeed.launcher" in _cmd else "rank" if "medtune.engine.main" in _cmd
             else "launcher" if "medtune.cli" in _cmd else None)
    if _role:
        def _wrap(module, name):
            try:
                mod = importlib.import_module(module)
            except ImportError:
                return
            fn = getattr(mod, name, None)
            if fn is None:
                return
            def counted(*a, **k):
                with open(_OUT, "a") as f:
                    f.write(f"{os.getpid()} {_role} {module}.{name}\\n")
                return fn(*a, **k)
            setattr(mod, name, counted)
        for _m, _n in [("medtune.config", "load"), ("medtune.config", "validate"),
                       ("medtune.data.prepare", "prepare"), ("medtune.engine.main", "plan_resume"),
                       ("medtune.engine.resume", "plan_resume"), ("medtune.engine.hierarchy", "resolve"),
                       ("medtune.engine.hierarchy", "problems"), ("medtune.engine.preflight", "preflight"),
                       ("medtune.engine.preflight", "read")]:
            if _role == "launcher" or _m != "medtune.engine.main":  # the rank's __main__ is its own
                _wrap(_m, _n)
'''

DECISIONS = ("medtune.config.load", "medtune.config.validate", "medtune.data.prepare.prepare",
             "medtune.engine.main.plan_resume", "medtune.engine.resume.plan_resume",
             "medtune.engine.hierarchy.resolve", "medtune.engine.hierarchy.problems",
             "medtune.engine.preflight.preflight")


def test_ranks_read_the_plan_and_never_validate_prepare_or_plan_again(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNTER)
    calls = tmp_path / "calls.txt"
    run = tmp_path / "run"
    done = medtune("train", str(RECIPES / "demo.yaml"), "train.max_steps=2", "train.export=false",
                   "--run-dir", str(run),
                   env_extra={"PYTHONPATH": str(site), "MEDTUNE_TEST_CALLS": str(calls)})
    lines = [line.split() for line in calls.read_text().splitlines()]
    launcher = collections.Counter(name for _pid, role, name in lines if role == "launcher")
    ranks: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for pid, role, name in lines:
        if role == "rank":
            ranks[pid][name] += 1
    # once, in the launching process
    assert launcher["medtune.data.prepare.prepare"] == 1 and launcher["medtune.engine.resume.plan_resume"] == 1
    assert launcher["medtune.engine.hierarchy.resolve"] == 1 and launcher["medtune.engine.preflight.preflight"] == 1
    # never in a rank: each reads the plan, once
    assert len(ranks) == 2, dict(ranks)
    assert [dict(c) for c in ranks.values()] == [{"medtune.engine.preflight.read": 1}] * 2
    assert not [n for c in ranks.values() for n in c if n in DECISIONS]
    out = done.stdout + done.stderr
    assert out.count(f"run plan: {run / 'run_plan.json'}") == 1  # said by rank 0
    assert out.count(f"starting fresh in {run}") == 1  # the launcher's decision, not said again
    plan = json.loads((run / "run_plan.json").read_text())
    assert json.loads((run / "deepspeed_config.json").read_text())["gradient_accumulation_steps"] == \
        plan["grad_accum"] == 2
    assert Path(plan["recipe_file"]) == run / "recipe.yaml"
