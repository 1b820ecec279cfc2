"""Checkpoint bookkeeping without processes: retention, resume choice, recipe changes, elasticity."""
from __future__ import annotations

from pathlib import Path

import pytest

from medtune import config
from medtune.engine.checkpoint import (MARKER, ResumeError, TrainerState, _recorded, finished, latest,
                                       mark_finished, prune)
from medtune.engine.resume import check_unchanged, elastic_accum, resolve, training_fields
from tests.conftest import RECIPES


def _ckpt(run: Path, step: int, complete: bool = True) -> Path:
    p = run / "checkpoints" / f"step-{step:08d}"
    p.mkdir(parents=True)
    if complete:
        (p / MARKER).write_text("")
    return p


def test_latest_ignores_incomplete(tmp_path):
    _ckpt(tmp_path, 4)
    _ckpt(tmp_path, 8, complete=False)
    assert latest(tmp_path).name == "step-00000004"
    assert resolve(tmp_path, "auto").name == "step-00000004"


def test_retention_never_deletes_the_newest_complete(tmp_path):
    for s in (2, 4, 6):
        _ckpt(tmp_path, s)
    _ckpt(tmp_path, 5, complete=False)
    _ckpt(tmp_path, 8, complete=False)  # a save in progress
    prune(tmp_path / "checkpoints", keep_last=1)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-00000006", "step-00000008"]
    prune(tmp_path / "checkpoints", keep_last=None)
    assert latest(tmp_path).name == "step-00000006"


def test_resume_none_refuses_to_overwrite(tmp_path):
    _ckpt(tmp_path, 4)
    with pytest.raises(ResumeError, match="would overwrite"):
        resolve(tmp_path, "none")
    assert resolve(tmp_path / "empty", "none") is None
    with pytest.raises(ResumeError, match="--resume never: .* would overwrite"):  # the preflight's word
        resolve(tmp_path, "never")


def test_resume_path_must_be_complete(tmp_path):
    ck = _ckpt(tmp_path, 4, complete=False)
    with pytest.raises(ResumeError, match="not a complete checkpoint"):
        resolve(tmp_path, str(ck))
    assert resolve(tmp_path / "x", str(_ckpt(tmp_path, 6))).name == "step-00000006"


def test_changed_recipe_names_the_key_and_new_fields_are_tolerated():
    old = training_fields(config.load(RECIPES / "demo.yaml"))
    state = TrainerState(recipe=old, data_fingerprint="abc")
    check_unchanged(state, old, "abc", Path("c"))
    check_unchanged(state, {**old, "train.some_new_field": 1}, "abc", Path("c"))
    check_unchanged(state, training_fields(config.load(RECIPES / "demo.yaml", ["launch.procs=4"])),
                    "abc", Path("c"))
    new = training_fields(config.load(RECIPES / "demo.yaml", ["train.lr=1e-4"]))
    with pytest.raises(ResumeError, match=r"train.lr: 0.003 -> 0.0001"):
        check_unchanged(state, new, "abc", Path("c"))
    with pytest.raises(ResumeError, match="prepared data: abc -> xyz"):
        check_unchanged(state, old, "xyz", Path("c"))


@pytest.mark.parametrize("packs,world,accum", [(4, 1, 4), (4, 2, 2), (4, 4, 1)])
def test_elastic_accumulation_keeps_the_global_batch(packs, world, accum):
    assert elastic_accum(packs, world, Path("c")) == accum


def test_elastic_refuses_uneven_sharing():
    with pytest.raises(ResumeError, match="cannot share evenly"):
        elastic_accum(4, 3, Path("c"))


def test_a_run_is_finished_only_at_the_checkpoint_it_finished_with(tmp_path):
    assert finished(tmp_path) is None  # nothing there
    last = _ckpt(tmp_path, 6)
    assert finished(tmp_path) is None  # interrupted: checkpoints but no end
    mark_finished(tmp_path, last, 6, tmp_path / "export")
    assert finished(tmp_path) == {"step": 6, "checkpoint": "step-00000006",
                                  "export": str(tmp_path / "export")}
    _ckpt(tmp_path, 8)  # trained on since (e.g. a larger max_steps with --allow-changed)
    assert finished(tmp_path) is None


def test_a_failed_save_is_recorded_whatever_it_raises():
    # a full disk makes torch.save raise RuntimeError, not OSError
    failed: list[str] = []
    with _recorded(failed):
        raise RuntimeError("[enforce fail at inline_container.cc:664] .\n unexpected pos 1472 vs 1364")
    with _recorded(failed):
        raise OSError(28, "No space left on device")
    assert failed == ["RuntimeError: [enforce fail at inline_container.cc:664] . unexpected pos 1472 vs 1364",
                      "OSError: [Errno 28] No space left on device"]
    with pytest.raises(KeyboardInterrupt), _recorded(failed):
        raise KeyboardInterrupt  # not a failure of the save: never swallowed


def test_the_best_checkpoint_survives_keep_last_and_is_found_through_its_pointer(tmp_path):
    """transformers#15089 / #11748: the best checkpoint deleted under save_total_limit."""
    from medtune.engine.checkpoint import BEST, best_checkpoint, point_best, repair_best

    root = tmp_path / "checkpoints"
    for s in (2, 4, 6):
        _ckpt(tmp_path, s)
    point_best(root, "step-00000002")
    assert prune(root, keep_last=1) == [root / "step-00000004"]
    assert best_checkpoint(tmp_path) == root / "step-00000002"
    assert latest(tmp_path).name == "step-00000006"  # `best` is not a step-* checkpoint
    (root / BEST).unlink()
    (root / BEST).write_text("step-00000006\n")  # a file system without symlinks: a pointer file
    assert best_checkpoint(tmp_path) == root / "step-00000006"
    repair_best(tmp_path, TrainerState(best_step=2))  # a kill between COMPLETE and the pointer
    assert best_checkpoint(tmp_path) == root / "step-00000002"
    (root / "step-00000002" / MARKER).unlink()
    assert best_checkpoint(tmp_path) is None
