"""Scalars of a run: TensorBoard events and ``metrics.jsonl``, written by rank 0."""
from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON line per logged step and mirrors it to TensorBoard."""

    def __init__(self, run_dir: Path, rank: int, tensorboard: bool):
        self.active = rank == 0
        self._writer = None
        self._lines = None
        if not self.active:
            return
        self._lines = open(run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._lines.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._writer is not None:
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._lines is not None:
            self._lines.close()
