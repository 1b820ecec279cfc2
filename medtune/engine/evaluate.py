"""Evaluation during training: ``eval/loss`` over the validation set (and task metrics), the best checkpoint.

Every ``train.eval_every`` optimizer steps and at the last step, every rank
runs `Evaluator.__call__` together: the validation set's packs are shared
round robin over the ranks, each forward runs with the training kernels and
loss head (`medtune.engine.trainer.micro_loss`) under ``torch.no_grad`` with
the model in eval mode (no dropout), and one all-reduce sums ``(sum of
cross-entropy, response tokens)`` over the ranks, so

    eval/loss = sum over every response token of the validation set of CE / their number

whatever the number of ranks. Nothing the training reads is touched: the
torch (and CUDA), Python and NumPy RNG states are restored afterwards
(`torch.random.fork_rng`), the data position lives in the trainer state,
which evaluation only reads, and the model's train/eval mode is restored.
With ``train.eval_tasks`` the task metrics of `medtune.evaluation.during`
join the same log line.
"""
from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medtune.config import Recipe, best_mode

class EvalHooks:
    """Called by `validation_loss` at a fixed point of an evaluation; the default does nothing.

    ``after_first_pack(step, run_dir, rank)`` runs on every rank once its first
    validation pack is computed, before the ranks' all-reduce. Tests replace
    `HOOKS` (tests/hooks/sitecustomize.py) to hold an evaluation and kill it there.
    """

    def after_first_pack(self, step: int, run_dir: Path, rank: int) -> None:
        return None


HOOKS = EvalHooks()
"""The hooks `Evaluator` calls unless it is given others."""


@contextlib.contextmanager
def rng_kept():
    """Restore the torch (CPU and current CUDA device), Python and NumPy RNG states on exit."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def eval_mode(engine):
    """The model in eval mode (dropout off) inside, its previous mode after."""
    module = getattr(engine, "module", engine)
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@torch.no_grad()
def validation_loss(engine, data, rank: int, world: int, kernels,
                    after_first_pack: Callable[[], None] | None = None) -> tuple[float, int]:
    """Token-mean response cross-entropy over every pack of `data` and all ranks (a collective).

    Pack ``p`` runs on rank ``p % world``; a rank with fewer packs runs empty
    placeholder rows so every rank makes the same number of forward calls
    (ZeRO-3 gathers each layer's weights collectively). Returns ``(loss,
    response tokens)``, the same on every rank; the loss is NaN for a set
    with no response token. `after_first_pack` is called once this rank's
    first pack is computed (`EvalHooks`).
    """
    import deepspeed.comm as dist

    from medtune.engine.trainer import micro_loss

    rounds = math.ceil(len(data.packs) / world)
    mine = [p if p < len(data.packs) else None for p in range(rank, rounds * world, world)]
    local = torch.zeros(2, dtype=torch.float64, device=engine.device)
    for i, pack_index in enumerate(mine):
        batch = data.batch(pack_index)
        local[0] += micro_loss(engine, batch, engine.device, kernels).double()
        local[1] += batch.n_label_tokens
        if after_first_pack is not None and i == 0:
            after_first_pack()
    dist.all_reduce(local)
    tokens = int(local[1].item())
    return (local[0].item() / tokens if tokens else float("nan")), tokens


class Evaluator:
    """The trainer's evaluation hook: when it is due, what it computes and logs, and the best step.

    `validation` is the validation set's `medtune.engine.trainer.PackedData`
    (None without ``data.validation``).
    """

    def __init__(self, recipe: Recipe, run_dir: Path, rank: int, world: int, validation, kernels,
                 tokenizer=None, say: Callable[[str], None] = print, hooks: EvalHooks | None = None):
        self.recipe, self.run_dir, self.rank, self.world = recipe, run_dir, rank, world
        self.hooks = hooks or HOOKS
        self.validation, self.kernels, self.tokenizer, self.say = validation, kernels, tokenizer, say
        self.every = recipe.train.eval_every
        self.metric = recipe.train.best_metric
        self.mode = best_mode(recipe.train)

    def due(self, step: int, total: int) -> bool:
        """Whether optimizer step `step` (1-based, of `total`) ends with an evaluation."""
        return bool(self.every) and step > 0 and (step % self.every == 0 or step == total)

    def __call__(self, engine, state, log) -> dict[str, float]:
        """Evaluate at ``state.global_step`` on every rank; log, print, and record the best in `state`."""
        step = state.global_step
        began = time.perf_counter()
        scalars: dict[str, float] = {}
        hook = functools.partial(self.hooks.after_first_pack, step, self.run_dir, self.rank)
        with rng_kept(), eval_mode(engine):
            if self.validation is not None:
                loss, tokens = validation_loss(engine, self.validation, self.rank, self.world, self.kernels,
                                               hook)
                scalars["eval/loss"] = loss
            if self.recipe.train.eval_tasks is not None:
                from medtune.evaluation.during import task_metrics  # trackers' part (issue 17)

                scalars.update(task_metrics(engine, self.tokenizer, self.recipe, step, self.run_dir,
                                            self.rank, self.world, say=self.say))
        scalars["eval/seconds"] = time.perf_counter() - began
        state.last_eval_step = step
        best = self._record_best(state, scalars)
        log.log(step, scalars)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k != "eval/seconds")
        self.say(f"step {step}: {shown} ({scalars['eval/seconds']:.1f} s)" + (" -- best so far" if best else ""))
        return scalars

    def _record_best(self, state, scalars: dict[str, float]) -> bool:
        """Whether this evaluation is the best of ``train.best_metric`` so far (then kept in `state`)."""
        if self.metric is None:
            return False
        if state.best_metric != self.metric:  # another metric was best before (a resumed run)
            state.best_metric, state.best_value, state.best_step = self.metric, None, None
        value = scalars.get(self.metric)
        if value is None:
            self.say(f"train.best_metric {self.metric} was not computed (got: {', '.join(sorted(scalars))})")
            return False
        if not math.isfinite(value):
            return False
        old = state.best_value
        better = old is None or (value < old if self.mode == "min" else value > old)
        if better:
            state.best_value, state.best_step = value, state.global_step
        return better
