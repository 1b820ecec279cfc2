"""Crash-proof DeepSpeed checkpoints plus the trainer's own state: the I/O of saving and loading.

Layout of ``RUN_DIR/checkpoints``::

    step-00000010/                 DeepSpeed's model/optimizer shards (one file per rank)
      rng/rank-00000.safetensors   every rank's torch RNG state (+ python/numpy as JSON)
      trainer_state.json           step, epoch, data position, what the run was trained on
      COMPLETE                     written last, after every rank finished writing
    universal/step-00000010/       made on demand to resume on another number of ranks
    latest                         name of the newest complete checkpoint
    best -> step-00000008          the best checkpoint of ``train.best_metric`` (a symlink; a
                                   file holding the name where symlinks cannot be made); never
                                   deleted by ``keep_last``

and ``RUN_DIR/finished.json`` once a run trained to its end (and exported).

A checkpoint counts only with ``COMPLETE``: a kill or a failed write during a
save leaves the previous checkpoint the newest one. Nothing is pickled by
medtune: state is JSON and tensors are safetensors. Which checkpoint a run
resumes from, and whether it may, is `medtune.engine.resume`'s policy; this
module imports torch only inside the functions that move tensors, so the
launcher's preflight reads checkpoints without it.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medtune.base.errors import UserError
from medtune.base.fsutil import locked, write_atomic
from medtune.engine import ds_compat

MARKER = "COMPLETE"
FINISHED = "finished.json"
"""In the run directory: written by rank 0 when a run ended normally (after its export)."""


class ResumeError(UserError):
    """A run that cannot resume as asked; the message says what to do."""


class CheckpointError(UserError):
    """A checkpoint could not be written; the previous one is intact.

    Raised on every rank alike; only the one with ``loud`` set prints it.
    """

    def __init__(self, message: str, loud: bool = True):
        super().__init__(message)
        self.loud = loud


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    consumed_samples: int = 0
    world: int = 1
    packs_per_step: int = 1
    """Packs in one optimizer step over all ranks: kept when the world changes."""
    bad_steps_in_row: int = 0
    skipped_steps: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)
    """The training-relevant recipe fields (dotted keys) the run was started with."""
    data_fingerprint: str = ""
    last_eval_step: int = 0
    """The step of the latest evaluation (``train.eval_every``), 0 before any."""
    best_metric: str | None = None
    """``train.best_metric`` that `best_value` and `best_step` are of."""
    best_value: float | None = None
    best_step: int | None = None
    """The step of the best evaluation so far; its checkpoint is ``checkpoints/best``."""


BEST = "best"


class SaveHooks:
    """Called by `save` at fixed points of a checkpoint write; the default does nothing.

    ``after_shards(step, folder, rank)`` runs on every rank once its DeepSpeed
    shards and RNG state are in `folder` and before the ranks agree that the
    write succeeded: an exception there counts as this rank's failed write,
    and a process killed there leaves the checkpoint without ``COMPLETE``.
    Tests replace `HOOKS` (tests/hooks/sitecustomize.py) to fail or hold a save.
    """

    def after_shards(self, step: int, folder: Path, rank: int) -> None:
        return None


HOOKS = SaveHooks()
"""The hooks `save` calls unless it is given others."""


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


# ---------------------------------------------------------------- saving

def save(engine, run_dir: Path, state: TrainerState, rank: int, keep_last: int | None,
         hooks: SaveHooks | None = None) -> Path:
    """Write a complete checkpoint of this step from every rank (a collective).

    Any failure of a write on any rank (a full disk makes ``torch.save``
    raise ``RuntimeError``, not ``OSError``) is caught on that rank; the ranks
    then agree on it in one collective, so every rank, the failed one and the
    others, leaves through the same calls and none waits in a barrier for a
    rank that gave up. The partial checkpoint is removed and every rank raises
    `CheckpointError` ("writing checkpoint X failed (rank R: reason); the
    previous checkpoint Y is intact"), which rank 0 prints. `hooks` defaults
    to the module's `HOOKS`.
    """
    import deepspeed.comm as dist

    root = run_dir / "checkpoints"
    out = root / tag_for(state.global_step)
    if (out / MARKER).is_file():
        return out  # this very step is saved already (e.g. a signal right after a periodic save)
    failed: list[str] = []
    with _recorded(failed):
        if rank == 0 and out.exists():
            shutil.rmtree(out)  # the remains of a save that was killed
    dist.barrier()
    with _recorded(failed), ds_compat.checkpoint_writes_recorded(engine, failed, _recorded):
        # every collective of DeepSpeed's save runs on every rank; only the writes may fail
        engine.save_checkpoint(str(root), tag=out.name, client_state={}, save_latest=False)
    if not failed:
        with _recorded(failed):
            _save_rng(out / "rng", rank)
            (hooks or HOOKS).after_shards(state.global_step, out, rank)
    _agree(failed, run_dir, out, rank)
    if rank == 0:
        with _recorded(failed):
            write_atomic(out / "trainer_state.json", json.dumps(asdict(state), indent=2))
            write_atomic(out / MARKER, time.strftime("%Y-%m-%dT%H:%M:%S"))
            write_atomic(root / "latest", out.name)
            if state.best_step is not None:
                point_best(root, tag_for(state.best_step))
    _agree(failed, run_dir, out, rank)
    if rank == 0:
        prune(root, keep_last)
    dist.barrier()
    return out


class _recorded:
    """A context manager that records (not raises) any exception as one line in `failed`."""

    def __init__(self, failed: list[str]):
        self.failed = failed

    def __enter__(self):
        return self

    def __exit__(self, kind, err, _tb):
        if err is None or not isinstance(err, Exception):
            return False
        self.failed.append(" ".join(f"{kind.__name__}: {err}".split())[:300])
        return True


def _agree(failed: list[str], run_dir: Path, out: Path, rank: int) -> None:
    """One collective in which the ranks learn whether any of them failed; then all raise alike."""
    import torch.distributed as tdist

    reasons: list[str | None] = [None] * tdist.get_world_size()
    tdist.all_gather_object(reasons, f"rank {rank}: {failed[0]}" if failed else None)
    reasons = [r for r in reasons if r]
    if not reasons:
        return
    free = shutil.disk_usage(run_dir).free if run_dir.exists() else 0  # before the clean-up below
    if rank == 0:
        shutil.rmtree(out, ignore_errors=True)  # no rank writes to it any more
    prev = latest(run_dir)
    kept = f"the previous checkpoint {prev} is intact" if prev else "there is no earlier checkpoint"
    raise CheckpointError(f"writing checkpoint {out} failed ({reasons[0]}; {free / 2**20:.1f} MiB free "
                          f"on the run directory's file system); {kept}", loud=rank == 0)


def prune(root: Path, keep_last: int | None) -> list[Path]:
    """Delete complete checkpoints beyond the newest `keep_last`, and leftovers older than them.

    The newest complete checkpoint and the best one (``checkpoints/best``)
    are never deleted.
    """
    steps = sorted(root.glob("step-*"))
    complete = [p for p in steps if (p / MARKER).is_file()]
    if not complete:
        return []
    newest = complete[-1]
    best = best_checkpoint(root.parent)
    keep = set(complete[-keep_last:] if keep_last else complete) | {newest} | ({best} if best else set())
    doomed = [p for p in steps if p not in keep and p.name < newest.name]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
        shutil.rmtree(root / "universal" / p.name, ignore_errors=True)
    return doomed


def _save_rng(folder: Path, rank: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(folder / f"rank-{rank:05d}.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    extra = {"python": [version, list(internal), gauss_next],
             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    write_atomic(folder / f"rank-{rank:05d}.json", json.dumps(extra))


# ---------------------------------------------------------------- reading and loading

def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = run_dir / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / MARKER).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def finished(run_dir: Path) -> dict | None:
    """What a run that trained to its end recorded (``step``, ``checkpoint``, ``export``), or None.

    None as well when a newer checkpoint than the finished one exists (the
    run was continued since, e.g. with a larger ``train.max_steps``).
    """
    try:
        done = json.loads((run_dir / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    newest = latest(run_dir)
    return done if newest is not None and newest.name == done.get("checkpoint") else None


def point_best(root: Path, name: str) -> None:
    """Make ``root/best`` name checkpoint `name` (atomically: a symlink, else a file holding the name)."""
    tmp = root / f".{BEST}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(name, tmp, target_is_directory=True)
    except OSError:  # a file system without symlinks: a pointer file the readers follow alike
        tmp.write_text(name)
    os.replace(tmp, root / BEST)


def best_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint ``RUN/checkpoints/best`` names, or None (no best, or it is gone)."""
    link = run_dir / "checkpoints" / BEST
    try:
        name = os.readlink(link) if link.is_symlink() else link.read_text().strip()
    except OSError:
        return None
    found = link.parent / Path(name).name
    return found if found.name.startswith("step-") and (found / MARKER).is_file() else None


def repair_best(run_dir: Path, state: TrainerState) -> None:
    """Point ``checkpoints/best`` at the best step `state` (a resumed one) records, if that checkpoint exists.

    A kill between a checkpoint's ``COMPLETE`` and its ``best`` pointer, or a
    resume from an older checkpoint, leaves the pointer behind its state.
    """
    if state.best_step is None:
        return
    root = run_dir / "checkpoints"
    if (root / tag_for(state.best_step) / MARKER).is_file():
        point_best(root, tag_for(state.best_step))


def mark_finished(run_dir: Path, ckpt: Path, step: int, export: Path | None) -> None:
    """Record (rank 0) that the run trained to its end at checkpoint `ckpt`."""
    write_atomic(run_dir / FINISHED, json.dumps({"step": step, "checkpoint": ckpt.name,
                                                 "export": str(export) if export else None}))


def read_state(ckpt: Path) -> TrainerState:
    return TrainerState(**json.loads((ckpt / "trainer_state.json").read_text()))


def to_universal(ckpt: Path) -> Path:
    """DeepSpeed's universal form of `ckpt` (made once, atomically), loadable on any world size."""
    out = ckpt.parent / "universal" / ckpt.name
    with locked(ckpt.parent / "universal.lock"):
        if (out / MARKER).is_file():
            return out
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        cmd = ds_compat.universal_argv(sys.executable, ckpt, tmp)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ResumeError(f"converting {ckpt} to a universal checkpoint failed:\n{done.stderr[-3000:]}")
        write_atomic(tmp / MARKER, "")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def load(engine, ckpt: Path, universal: Path | None, rank: int) -> TrainerState:
    """Restore model, optimizer, scheduler and this rank's RNGs; return the trainer state."""
    src = universal or ckpt
    decays = [g["weight_decay"] for g in ds_compat.torch_optimizer(engine).param_groups]
    loaded, _ = engine.load_checkpoint(str(src.parent), tag=src.name, load_optimizer_states=True,
                                       load_lr_scheduler_states=True)
    if loaded is None:  # DeepSpeed's way of saying it found nothing: never resume silently
        raise ResumeError(f"DeepSpeed loaded nothing from {src}")
    if universal is not None:
        ds_compat.unshare_adam_steps(engine)
        # the universal loader copies group 0's hyperparameters into every
        # group, which would put weight decay on biases and norms
        for group, decay in zip(ds_compat.torch_optimizer(engine).param_groups, decays):
            group["weight_decay"] = decay
    _load_rng(ckpt / "rng", rank)
    return read_state(ckpt)


def _load_rng(folder: Path, rank: int) -> None:
    """Restore this rank's RNGs; a rank the checkpoint did not have keeps its fresh seed."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    f = folder / f"rank-{rank:05d}.safetensors"
    if not f.is_file():
        return
    tensors = load_file(str(f))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    extra = json.loads((folder / f"rank-{rank:05d}.json").read_text())
    version, internal, gauss_next = extra["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = extra["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
