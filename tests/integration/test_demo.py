"""The demo recipe, exactly as `make demo` runs it: 2 CPU ranks, ZeRO-3, the loss falls."""
from __future__ import annotations

from medtune import config
from tests.conftest import RECIPES
from tests.integration.helpers import medtune, train_losses


def test_demo_trains_and_exports(tmp_path):
    run = tmp_path / "demo"
    medtune("train", str(RECIPES / "demo.yaml"), "--run-dir", str(run))
    losses = train_losses(run)
    recipe = config.load(RECIPES / "demo.yaml")
    assert recipe.launch.procs == 2 and len(losses) > 20
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    assert (run / "export" / "model.safetensors").is_file()
