"""What a run records, by rank 0: scalars (TensorBoard and ``metrics.jsonl``) and the data order.

``data_order.jsonl`` lists the samples of every optimizer step, so anyone can
check that a resumed run saw each sample exactly once. A run resumed from
step N first drops whatever an interrupted run logged after N (TensorBoard
through ``purge_step``), so the curves continue without a gap or overlap.
"""
from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    def __init__(self, run_dir: Path, rank: int, tensorboard: bool, resume_step: int = 0):
        self.active = rank == 0
        self._writer = None
        self._files: dict[str, object] = {}
        if not self.active:
            return
        for name in ("metrics.jsonl", "data_order.jsonl"):
            path = run_dir / name
            _truncate_after(path, resume_step)
            self._files[name] = open(path, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                         purge_step=resume_step + 1)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._files["metrics.jsonl"].write(json.dumps({"step": step, **scalars}) + "\n")
        if self._writer is not None:
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, global_step=step)

    def order(self, step: int, epoch: int, samples: list[int]) -> None:
        if self.active:
            self._files["data_order.jsonl"].write(
                json.dumps({"step": step, "epoch": epoch, "samples": samples}) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for fh in self._files.values():
            fh.close()


def _truncate_after(path: Path, step: int) -> None:
    """Keep only the lines of steps <= `step` (none when a run starts afresh at 0)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))
