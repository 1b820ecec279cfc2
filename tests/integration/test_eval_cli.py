"""End to end on CPU: the demo-trained tiny model, exported, evaluated on a slice of the shared corpora."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medtune.launcher.run import free_port
from tests.conftest import RECIPES, needs_shared_data
from tests.integration.helpers import medtune

pytestmark = needs_shared_data()

SLICE = str(RECIPES / "eval" / "shared-slice.yaml")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval-demo") / "run"
    medtune("train", str(RECIPES / "demo.yaml"), "--run-dir", str(run), "train.max_steps=3")
    assert (run / "export" / "config.json").is_file()
    return run / "export"


def test_eval_writes_results_and_table(exported, tmp_path):
    out = tmp_path / "eval"
    proc = medtune("eval", "--model", str(exported), "--recipe", SLICE, "--out", str(out), "--seed-compat")
    results = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    print(json.dumps({k: {"metrics": {m: v for m, v in e["metrics"].items() if m != "per_label_f1"},
                          "parse": e["parse"], "seed_compat": e.get("seed_compat")}
                      for k, e in results["sets"].items()}, indent=1))
    assert set(results["sets"]) == {"ncbi-disease-test", "bc5cdr-chem-test", "pubmedqa-test"}
    for name, e in results["sets"].items():
        assert e["samples"] == 4
        assert 0 <= e["parse"]["failures"] <= 4
        assert 0.0 <= e["metrics"][e["headline"]] <= 1.0
    ncbi = results["sets"]["ncbi-disease-test"]
    assert ncbi["paper"]["7b"] == 87.18 and ncbi["paper"]["13b"] == 85.69
    assert ncbi["seed_compat"]["tokens"] < ncbi["metrics"]["tokens"]
    assert "| ncbi-disease-test | ner | 4 | f1 |" in md and "87.18" in md and "93.88" in md
    assert len((out / "generations.jsonl").read_text().splitlines()) == 12
    assert "wrote" in proc.stdout
    for e in (ncbi, results["sets"]["bc5cdr-chem-test"]):       # three NER scores side by side
        assert {"f1", "lenient"} <= set(e["metrics"]) and "f1" in e["seed_compat"]
    assert "| ours | ours lenient | seed-compatible | paper 7B |" in md
    assert "compare them with the **seed-compatible** column" in md

    # the same generations scored without the model give the same numbers
    scored = tmp_path / "scored"
    medtune("score", str(out / "generations.jsonl"), "--recipe", SLICE, "--out", str(scored),
            "--model", str(exported))
    again = json.loads((scored / "results.json").read_text())
    assert again["sets"] == results["sets"]
    assert (scored / "results.md").read_text() == md


def test_two_ranks_split_the_samples_and_agree_with_one(exported, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--model", str(exported), "--recipe", SLICE, "--sets", "pubmedqa-test,ncbi-disease-test"]
    medtune("eval", *args, "--out", str(one))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), "-m", "medtune.cli", "eval", *args, "--out", str(two)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    a = json.loads((one / "results.json").read_text())
    b = json.loads((two / "results.json").read_text())
    assert b["ranks"] == 2 and a["ranks"] == 1
    assert (one / "generations.jsonl").read_text() == (two / "generations.jsonl").read_text()
    assert {k: e["metrics"] for k, e in a["sets"].items()} == {k: e["metrics"] for k, e in b["sets"].items()}


def test_eval_reports_a_bad_recipe_in_one_line(exported, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sets:\n  - {path: /nowhere, format: conll, split: test}\n")
    proc = medtune("eval", "--model", str(exported), "--recipe", str(bad), "--out", str(tmp_path / "o"),
                   check=False)
    assert proc.returncode == 2
    assert "medtune: error:" in proc.stderr and "Traceback" not in proc.stderr
