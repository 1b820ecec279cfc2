"""What a run records, by rank 0: scalars (``metrics.jsonl`` and the trackers) and the data order.

``data_order.jsonl`` lists the samples of every optimizer step, so anyone can
check that a resumed run saw each sample exactly once. A run resumed from
step N first drops whatever an interrupted run logged after N (TensorBoard
through ``purge_step``; see `medtune.engine.trackers` for W&B and MLflow), so
the curves continue without a gap or overlap. A tracker that fails (its
service down, not logged in) is reported in one line and dropped: the run goes on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medtune.engine import trackers


class MetricsLog:
    """Rank 0 writes every scalar to ``metrics.jsonl`` and to each tracker of
    ``logging.report_to`` (`medtune.engine.trackers`) at the same step; other ranks do nothing."""

    def __init__(self, run_dir: Path, rank: int, recipe, resume_step: int = 0):
        self.active = rank == 0
        self._trackers: list = []
        self._files: dict[str, object] = {}
        if not self.active:
            return
        for name in ("metrics.jsonl", "data_order.jsonl"):
            path = run_dir / name
            _truncate_after(path, resume_step)
            self._files[name] = open(path, "a", buffering=1)
        self._trackers = trackers.open_all(recipe, run_dir, resume_step)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._files["metrics.jsonl"].write(json.dumps({"step": step, **scalars}) + "\n")
        for tracker in list(self._trackers):
            try:
                tracker.log(step, scalars)
            except Exception as err:  # noqa: BLE001 (a tracker service's failure is not the run's)
                self._trackers.remove(tracker)
                trackers.failed(tracker.name, f"logging step {step} failed", err)

    def order(self, step: int, epoch: int, samples: list[int]) -> None:
        if self.active:
            self._files["data_order.jsonl"].write(
                json.dumps({"step": step, "epoch": epoch, "samples": samples}) + "\n")

    def close(self) -> None:
        """Close the files, then end every tracker's run; a tracker that fails to end is reported
        (one line on stderr), never raised: the run's files are written whatever it does."""
        for fh in self._files.values():
            fh.close()
        for tracker in self._trackers:
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001 (a tracker service's failure is not the run's)
                trackers.failed(tracker.name, "ending its run failed", err)


def _truncate_after(path: Path, step: int) -> None:
    """Keep only the lines of steps <= `step` (none when a run starts afresh at 0)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


@dataclass
class Throughput:
    """Tokens/s, achieved TFLOP/s and MFU per rank, from the plan and each step's wall time.

    FLOPs are model FLOPs (`medtune.models.flops.FlopModel`: every weight matmul of
    every token, forward and backward, plus causal attention per *sample* of
    a packed row, never per row); activation recomputation is not counted, as
    is usual for MFU. Every rank holds the same plan, so no communication is
    needed: per-rank figures are the step's totals over ``world``. The first
    step this process runs (start-up, allocator warm-up) stays out of the
    summary.
    """
    world: int
    peak_tflops: float | None
    """Peak dense TFLOP/s of one device (None: no MFU)."""
    steps: int = 0
    tokens: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    _seen: int = field(default=0, repr=False)

    def step(self, tokens: int, flops: float, seconds: float) -> dict[str, float]:
        """Record one optimizer step; return its scalars for the log."""
        self._seen += 1
        if self._seen > 1:
            self.steps += 1
            self.tokens += tokens
            self.flops += flops
            self.seconds += seconds
        return self._scalars(tokens, flops, seconds)

    def _scalars(self, tokens: int, flops: float, seconds: float) -> dict[str, float]:
        from medtune.models.flops import mfu

        per_rank = flops / self.world / seconds / 1e12
        out = {"perf/tokens_per_s": tokens / seconds, "perf/tokens_per_s_per_rank": tokens / seconds / self.world,
               "perf/tflops_per_rank": per_rank}
        if self.peak_tflops:
            out["perf/mfu"] = mfu(flops, seconds, self.world, self.peak_tflops)
        return out

    @property
    def first_step(self) -> bool:
        """Whether the step just recorded was this process's first."""
        return self._seen == 1

    def summary(self) -> str:
        """One line for the end of the run (the mean over steps after the first)."""
        if not self.steps:
            return "throughput: too few steps to measure (the first one is warm-up)"
        s = self._scalars(self.tokens, self.flops, self.seconds)
        mfu = f", MFU {s['perf/mfu']:.1%}" if "perf/mfu" in s else ""
        return (f"throughput over {self.steps} steps: {s['perf/tokens_per_s']:,.0f} tokens/s "
                f"({s['perf/tokens_per_s_per_rank']:,.0f} per rank), "
                f"{s['perf/tflops_per_rank']:.3g} TFLOP/s per rank{mfu}")


def model_state_bytes(engine) -> dict[str, int]:
    """Bytes of model states this rank holds under ZeRO-3: its shards, not activations.

    Counted from the tensors DeepSpeed's stage-3 optimizer keeps (each storage
    once): the parameter shards in the model dtype plus the small parameters
    every rank keeps whole (below the persistence threshold), the fp32 master
    shards, the optimizer's states (AdamW creates them at the first step: call
    this after one), and the flat gradient-partition buffer.
    """
    import torch

    seen: set[int] = set()

    def size(tensors) -> int:
        total = 0
        for t in tensors:
            if not torch.is_tensor(t) or t.numel() == 0:
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    from medtune.engine import ds_compat

    return {kind: size(tensors) for kind, tensors in ds_compat.zero3_state_tensors(engine).items()}
