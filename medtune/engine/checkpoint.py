"""DeepSpeed checkpoints plus the trainer's own state, as JSON and safetensors.

Layout of ``RUN_DIR/checkpoints``::

    step-00000010/           DeepSpeed's model/optimizer shards (one per rank)
      trainer_state.json     step, epoch, data position, the recipe fingerprint
      rng/rank-00000.safetensors   every rank's torch RNG state (+ python/numpy in JSON)
      COMPLETE               written last, after every rank finished
    latest                   name of the newest complete checkpoint

A checkpoint without ``COMPLETE`` never counts.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

MARKER = "COMPLETE"


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    consumed_samples: int = 0
    world: int = 1


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def save(engine, run_dir: Path, state: TrainerState, rank: int) -> Path:
    """Write a complete checkpoint of this step from every rank (a collective)."""
    import deepspeed.comm as dist

    root = run_dir / "checkpoints"
    tag = tag_for(state.global_step)
    engine.save_checkpoint(str(root), tag=tag, client_state={}, save_latest=False)
    out = root / tag
    _save_rng(out / "rng", rank)
    dist.barrier()
    if rank == 0:
        _write_atomic(out / "trainer_state.json", json.dumps(asdict(state), indent=2))
        _write_atomic(out / MARKER, "")
        _write_atomic(root / "latest", tag)
    dist.barrier()
    return out


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = run_dir / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / MARKER).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def read_state(ckpt: Path) -> TrainerState:
    return TrainerState(**json.loads((ckpt / "trainer_state.json").read_text()))


def _save_rng(folder: Path, rank: int) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(folder / f"rank-{rank:05d}.safetensors"))
    np_state = np.random.get_state()
    py_state = random.getstate()
    extra = {"python": [py_state[0], list(py_state[1]), py_state[2]],
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    _write_atomic(folder / f"rank-{rank:05d}.json", json.dumps(extra))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
