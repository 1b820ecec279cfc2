"""`tools/gpu_check.sh --cpu-rehearsal`: the one-call GPU check, run here with CPU stand-ins.

The lent GPU machine runs ``tools/gpu_check.sh OUT`` once, in a few minutes of
a short lease, so everything but the GPU itself is proven here first: the
install of the carried wheels into a private folder (medtune's own wheel as
the stand-in where no ``.whl/`` was built, as in CI), tests/gpu (they skip
themselves without CUDA), the killed and resumed 1-rank ZeRO-3 run with its
bit-exact comparison and reloaded export, the benchmark with its engine row,
the output files and the summary table printed last.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

STEPS = ["install", "tests/gpu", "train", "bench"]
FILES = {"summary.json", "summary.md", "versions.txt", "pytest.txt", "pytest.xml", "train.txt", "bench.txt"}


def test_cpu_rehearsal_passes_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), str(out), "--cpu-rehearsal"],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=1300)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == STEPS
    failed = {s["step"]: s["numbers"] for s in summary["steps"] if s["result"] != "passed"}
    assert not failed, f"{failed}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0 and summary["passed"] is True

    # what a lent machine sends back: at most 8 plain files, directly in OUT
    assert {p.name for p in out.iterdir()} == FILES and all(p.is_file() for p in out.iterdir())

    table = (out / "summary.md").read_text()
    assert "| check | result | s | numbers |" in table
    for step in STEPS:
        assert f"| {step} | passed |" in table
    assert "| packed, sdpa_varlen, DeepSpeed ZeRO-3 engine |" in table
    assert proc.stdout.rstrip().endswith(table.rstrip()), "the table is not the last thing printed"

    steps = {s["step"]: s for s in summary["steps"]}
    train = steps["train"]["details"]
    assert train["checkpoint_after_kill"] == "step-00000004" and train["resumed_from_checkpoint"]
    assert train["bit_exact"] and train["losses_equal"] and train["weights_equal"]
    assert train["reload_ok"] and train["reload_rel_diff"] <= 1e-4
    bench = steps["bench"]["details"]
    assert bench["engine_backend"] == "sdpa_varlen" and bench["engine_vs_plain"] > 0
    assert {v["variant"] for v in bench["variants"]} >= {"padded, sdpa + padding mask", "packed, sdpa_varlen"}
    assert steps["install"]["versions"]["deepspeed"] and "torch" in steps["install"]["versions"]
