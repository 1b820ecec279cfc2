"""Done-means 2 of issue 17, on its own: task metrics from the sharded ZeRO-3 model (2 CPU ranks)
equal `medtune eval`'s on the same weights exported, answer for answer."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medtune.launcher.deepspeed import free_port
from tests.conftest import REPO, SHARED_DATA, needs_shared_data
from tests.integration.helpers import medtune, save_tiny_model, write_recipe

pytestmark = needs_shared_data()


def eval_recipe(path, batch_size: int):
    """NCBI-disease test (NER) and PubMedQA test (QA): 3 + 2 samples, so 2 ranks get uneven shares."""
    return write_recipe(path, {
        "sets": [{"name": "ncbi-disease-test", "path": str(SHARED_DATA / "ncbi_disease"), "format": "conll",
                  "split": "test", "instructions": "ner-disease", "limit": 3},
                 {"name": "pubmedqa-test", "path": str(SHARED_DATA / "pubmedqa"), "format": "pubmedqa",
                  "split": "test", "instructions": "pubmedqa", "limit": 2}],
        "template": "paper",
        "generation": {"max_new_tokens": 12, "num_beams": 1, "batch_size": batch_size},
    })


def run_driver(model, recipe, run_dir, step: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(REPO / "tests" / "integration" / "during_driver.py"),
                           str(model), str(recipe), str(run_dir), str(step)],
                          capture_output=True, text=True, timeout=400, env=env)


@pytest.mark.parametrize("batch_size", [2])
def test_task_metrics_under_zero3_equal_medtune_eval(tmp_path, batch_size):
    # batch 2 with shares of 3 and 2 samples: rank 0 makes 2 generate calls, rank 1 only 1 of its own
    model = save_tiny_model(tmp_path / "model", seed=3)
    recipe = eval_recipe(tmp_path / "eval.yaml", batch_size)
    run = tmp_path / "run"
    run.mkdir()
    proc = run_driver(model, recipe, run, step=7)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((run / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # every rank returns the same dict
    for r in ranks:
        assert r["rng_unchanged"] and r["training"] and r["partitioned"]
        assert r["attention"] == "medtune_per_sample"  # training's attention back in place
    got = ranks[0]["metrics"]

    out = tmp_path / "eval"
    medtune("eval", "--model", str(model), "--recipe", str(recipe), "--out", str(out))
    want = json.loads((out / "results.json").read_text())["sets"]
    step_dir = run / "evals" / "step-7"
    assert (step_dir / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()
    for name, e in want.items():
        assert got[f"eval/{name}/{e['headline']}"] == e["metrics"][e["headline"]]
        assert got[f"eval/{name}/parse_failure_rate"] == e["parse"]["failure_rate"]
        lines = (step_dir / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == e["samples"] == {"ncbi-disease-test": 3, "pubmedqa-test": 2}[name]
    assert got["eval/ncbi-disease-test/f1"] == want["ncbi-disease-test"]["metrics"]["f1"]
    assert got["eval/ncbi-disease-test/lenient_f1"] == want["ncbi-disease-test"]["metrics"]["lenient"]["f1"]
    assert got["eval/pubmedqa-test/accuracy"] == want["pubmedqa-test"]["metrics"]["accuracy"]
    assert json.loads((step_dir / "results.json").read_text())["sets"] == want
