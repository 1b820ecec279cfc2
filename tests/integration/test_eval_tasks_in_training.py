"""Done-means 2 of issue 17 end to end: a 2-rank ZeRO-3 demo run with train.eval_tasks logs
eval/<set>/f1 and accuracy at each evaluation, equal to what `medtune eval` reports for the
checkpoint of that step (exported), and keeps each evaluation's generations in the run directory.

Needs both halves of issue 17: evalloss's hook (train.eval_every, train.eval_tasks) calls
`medtune.evaluation.during.task_metrics` (trackers').
"""
from __future__ import annotations

import json

from medtune.engine.checkpoint import tag_for
from tests.conftest import RECIPES, SHARED_DATA, needs_shared_data
from tests.integration.helpers import medtune, metrics, write_recipe

pytestmark = needs_shared_data()


def test_task_metrics_logged_during_training_equal_medtune_eval_of_that_checkpoint(tmp_path):
    tasks = write_recipe(tmp_path / "tasks.yaml", {
        "sets": [{"name": "ncbi-disease-test", "path": str(SHARED_DATA / "ncbi_disease"), "format": "conll",
                  "split": "test", "instructions": "ner-disease", "limit": 3},
                 {"name": "pubmedqa-test", "path": str(SHARED_DATA / "pubmedqa"), "format": "pubmedqa",
                  "split": "test", "instructions": "pubmedqa", "limit": 2}],
        "template": "paper",
        "generation": {"max_new_tokens": 16, "num_beams": 1, "batch_size": 2},
    })
    recipe = write_recipe(tmp_path / "train.yaml", {
        "base": [str(RECIPES / "demo.yaml")],
        "train": {"max_steps": 12, "save_every": 6, "eval_every": 6, "eval_tasks": str(tasks)},
        "logging": {"progress": False},
    })
    run = tmp_path / "run"
    medtune("train", str(recipe), "--run-dir", str(run))
    logged = {}
    for row in metrics(run):
        if any(k.startswith("eval/") for k in row):
            logged.setdefault(row["step"], {}).update(row)
    assert sorted(logged) == [6, 12]
    for step in (6, 12):
        got = logged[step]
        export, out = tmp_path / f"export-{step}", tmp_path / f"eval-{step}"
        medtune("export", str(run / "checkpoints" / tag_for(step)), "--out", str(export))
        medtune("eval", "--model", str(export), "--recipe", str(tasks), "--out", str(out))
        want = json.loads((out / "results.json").read_text())["sets"]
        print(step, {k: v for k, v in got.items() if k.endswith(("/f1", "/accuracy", "failure_rate"))})
        assert got["eval/ncbi-disease-test/f1"] == want["ncbi-disease-test"]["metrics"]["f1"]
        assert got["eval/pubmedqa-test/accuracy"] == want["pubmedqa-test"]["metrics"]["accuracy"]
        for name, e in want.items():
            assert got[f"eval/{name}/parse_failure_rate"] == e["parse"]["failure_rate"]
        kept = run / "evals" / f"step-{step}"
        assert (kept / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()
        assert len((kept / "ncbi-disease-test.jsonl").read_text().splitlines()) == 3
        assert len((kept / "pubmedqa-test.jsonl").read_text().splitlines()) == 2
