"""Done-means 5 of issue 17: a real 2-rank ZeRO-3 run of the demo logs to W&B (offline) and MLflow
(file store) the recipe as config and the same metric series as its metrics.jsonl."""
from __future__ import annotations

import json

from medtune.engine import trackers
from tests.conftest import RECIPES
from tests.integration.helpers import medtune, write_recipe
from tests.unit.engine.test_trackers import jsonl_series, mlflow_series, wandb_config, wandb_history


def test_two_rank_run_fills_wandb_and_mlflow_like_metrics_jsonl(tmp_path):
    recipe = write_recipe(tmp_path / "tracked.yaml", {
        "base": [str(RECIPES / "demo.yaml")],
        "name": "tracked",
        "train": {"max_steps": 3, "lr": 2.0e-3},
        "logging": {"progress": False, "report_to": ["tensorboard", "wandb", "mlflow"]},
    })
    run = tmp_path / "run"
    medtune("train", str(recipe), "--run-dir", str(run),
            env_extra={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_TRACKING_URI": ""})
    want = jsonl_series(run)
    assert [s for s, _ in want["train/loss"]] == [1, 2, 3]
    assert {"train/loss", "train/lr", "train/grad_norm", "perf/tokens_per_s"} <= set(want)

    params, got = mlflow_series(run)
    assert got == want
    assert params["train.lr"] == "0.002" and params["name"] == "tracked"
    assert json.loads(params["launch.procs"]) == 2

    history = wandb_history(run)
    assert sorted(history) == [1, 2, 3]
    assert {k: [(s, history[s][k]) for s in sorted(history) if k in history[s]] for k in want} == want
    cfg = wandb_config(run)
    assert cfg["train.lr"] == 0.002 and cfg["launch.procs"] == 2 and cfg["name"] == "tracked"
    assert set(json.loads((run / trackers.IDS_FILE).read_text())) == {"wandb", "mlflow"}
