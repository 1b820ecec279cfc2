"""Resume policy: which checkpoint a run starts from, whether it may, and on how many ranks.

The launcher's preflight (`medtune.engine.preflight`) decides this once,
before any rank starts, and records it in the run plan; the ranks only load
what it names (`medtune.engine.checkpoint.load`). Torch-free: the checkpoint
files it reads are JSON (``trainer_state.json``, ``COMPLETE``, ``latest``),
and a universal conversion runs DeepSpeed's converter in a subprocess.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medtune.engine.checkpoint import (MARKER, ResumeError, TrainerState, latest, read_state,  # noqa: F401
                                       to_universal)


@dataclass(frozen=True)
class Decision:
    """Where a run starts: fresh (``start`` None) or from a checkpoint, with the state to start with."""
    start: Path | None
    """The checkpoint to resume from, or None (fresh)."""
    state: TrainerState
    """The trainer state to start with: fresh counters, this recipe's fields and data digest, and
    ``packs_per_step`` (the global batch in packs) the checkpoint's when resuming."""
    universal: Path | None
    """The checkpoint's DeepSpeed universal form when the number of ranks changed, else None."""

    @property
    def grad_accum(self) -> int:
        """Packs (micro-batches of one packed row) per rank per optimizer step."""
        return self.state.packs_per_step // self.state.world


def resolve(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to resume from for ``--resume auto|none|PATH``; `ResumeError` when there is none.

    ``none`` refuses a run directory that already holds a checkpoint (a fresh
    run would overwrite it).
    """
    if resume == "auto":
        return latest(run_dir)
    if resume in ("none", "never"):
        found = latest(run_dir)
        if found is not None:
            raise ResumeError(f"--resume {resume}: {run_dir} already holds checkpoint {found.name}, which "
                              "a fresh run would overwrite; use a new --run-dir or --resume auto")
        return None
    path = Path(resume)
    if (path / MARKER).is_file():
        return path
    found = latest(path)
    if found is None:
        raise ResumeError(f"--resume {path}: not a complete checkpoint (no {MARKER}) nor a run "
                          "directory holding one")
    return found


def training_fields(recipe) -> dict[str, Any]:
    """The recipe fields that change what a run computes, as dotted keys (list items by index).

    Which fields count is marked in the schema (`medtune.config.resume_fields`,
    kind ``refuse``): left out are how often to save or log, where to cache,
    how to launch, ZeRO's communication tuning and the compute kernels (none of
    which changes the math beyond rounding), and evaluation (``data.validation``,
    ``train.eval_*``, ``train.best_*``: its effect on the training data is in
    the data fingerprint). Changing any other field under a resumed run is
    refused (`check_unchanged`). A mapping the schema does not describe field
    by field (``model.config``) is one value.
    """
    from medtune.config import resume_fields, to_dict

    kinds = resume_fields(type(recipe))
    out: dict[str, Any] = {}

    def walk(node, prefix, schema_prefix):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            key, schema_key = f"{prefix}{k}", f"{schema_prefix}{'*' if isinstance(k, int) else k}"
            if kinds.get(schema_key, kinds.get(schema_prefix.rstrip("."), "refuse")) == "free":
                continue
            described = any(s.startswith(schema_key + ".") for s in kinds)
            if v and (isinstance(v, list) or (isinstance(v, dict) and described)):
                walk(v, key + ".", schema_key + ".")
            else:
                out[key] = v
    walk(to_dict(recipe), "", "")
    return json.loads(json.dumps(out))  # the form it takes after a JSON round trip


def check_unchanged(state: TrainerState, recipe_fields: dict[str, Any], data_fingerprint: str,
                    ckpt: Path) -> None:
    """Refuse to resume a run whose training-relevant recipe or data changed (`ResumeError`).

    Only keys the checkpoint knows are compared: a field added to the schema
    since (at its default) does not make an old checkpoint unusable.
    """
    changes = [f"{k}: {v!r} -> {recipe_fields.get(k, '(absent)')!r}"
               for k, v in sorted(state.recipe.items()) if recipe_fields.get(k, "(absent)") != v]
    if state.data_fingerprint and state.data_fingerprint != data_fingerprint:
        changes.append(f"prepared data: {state.data_fingerprint} -> {data_fingerprint}")
    if changes:
        raise ResumeError(f"refusing to resume from {ckpt}: the recipe changed ({'; '.join(changes)}); "
                          "restore it, start a new --run-dir, or pass --allow-changed")


def elastic_accum(packs_per_step: int, world: int, ckpt: Path) -> int:
    """Accumulation steps that keep the checkpoint's global batch on `world` ranks.

    ``packs_per_step`` (the global batch, in packed rows) stays what the run
    started with, so the data order and the loss scale of every later step do
    not depend on the number of ranks; `ResumeError` when `world` does not divide it.
    """
    if packs_per_step % world:
        raise ResumeError(f"cannot resume {ckpt} on {world} ranks: its optimizer steps hold "
                          f"{packs_per_step} packs, which {world} ranks cannot share evenly; "
                          f"use a number of ranks that divides {packs_per_step}")
    return packs_per_step // world


def data_digest(prepared) -> str:
    """What identifies the data a run reads: its tokens (not how they were cached) and the packing."""
    from medtune.data.packing import VERSION

    return f"{prepared.stats.get('content_digest', prepared.fingerprint)}+packing{VERSION}"


def plan_resume(recipe, run: Path, resume: str, allow_changed: bool, data_fingerprint: str,
                world: int, say: Callable[[str], None]) -> Decision:
    """Which checkpoint to start from, the state to start with, and its universal form if needed.

    A fresh run takes ``world * train.grad_accum`` packs per step; a resumed
    one keeps the checkpoint's (`elastic_accum`), whatever the recipe's
    ``grad_accum`` and the number of ranks now. Raises `ResumeError` when the
    recipe or data changed (unless `allow_changed`), the checkpoint cannot be
    shared by `world` ranks, or ``none`` would overwrite existing checkpoints.
    """
    fields = training_fields(recipe)
    fresh = TrainerState(world=world, packs_per_step=world * recipe.train.grad_accum,
                         recipe=fields, data_fingerprint=data_fingerprint)
    start = resolve(run, resume)
    if start is None:
        say(f"starting fresh in {run}")
        return Decision(None, fresh, None)
    saved = read_state(start)
    if not allow_changed:
        check_unchanged(saved, fields, data_fingerprint, start)
    elastic_accum(saved.packs_per_step, world, start)
    fresh.packs_per_step = saved.packs_per_step
    universal = None
    if saved.world != world:
        say(f"resuming {start} (written by {saved.world} ranks) on {world} ranks through a "
            "universal checkpoint")
        universal = to_universal(start)
    say(f"resuming from {start} at step {saved.global_step} (epoch {saved.epoch}, "
        f"{saved.consumed_samples} samples consumed)")
    return Decision(start, fresh, universal)
