"""The shared baseline run's read-only guard (tests/integration/conftest.py `baseline_run`)."""
from __future__ import annotations

import os

from tests.integration.helpers import changed_paths, tree_digest


def test_every_kind_of_change_to_a_run_is_named(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000004").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step-00000004")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "data_order.jsonl").write_text("{}\n")
    digest = tree_digest(run)
    assert changed_paths(run, digest) == []
    (run / "metrics.jsonl").write_text('{"step": 2}\n')                  # same size, other bytes
    (run / "checkpoints" / "step-00000008").mkdir()                      # a new (empty) directory
    (run / "data_order.jsonl").unlink()                                  # a removed file
    os.symlink("step-00000004", run / "checkpoints" / "newest")          # a new link
    assert changed_paths(run, digest) == ["checkpoints/newest", "checkpoints/step-00000008",
                                          "data_order.jsonl", "metrics.jsonl"]
