"""The training loop: packed rows -> loss over response tokens -> optimizer steps."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from medtune.config import Recipe
from medtune.data.collator import Batch, collate
from medtune.data.packed import PackedData
from medtune.data.packing import plan_epoch
from medtune.engine.checkpoint import TrainerState
from medtune.engine.metrics import MetricsLog, Throughput, model_state_bytes
from medtune.kernels.attention import Choice, varlen_kwargs
from medtune.kernels.loss import LogitTransform, ce_sum, chunked_ce_sum


@dataclass(frozen=True)
class Kernels:
    """How each micro-batch is computed: the resolved attention backend and the loss head."""
    attention: Choice
    loss: str = "standard"
    """``standard`` or ``chunked`` (`medtune.kernels.loss`)."""
    chunk_tokens: int = 0
    """Tokens per chunk of the chunked loss (0: its automatic size)."""


def model_inputs(batch: Batch, device, attention: Choice) -> dict:
    """Keyword arguments of the model call for a packed row.

    No attention mask and no KV cache, ever: transformers' own attention then
    isolates the samples from ``position_ids`` restarting at 0, and the varlen
    backends get the row's sample bounds, computed on the host by the collator.
    """
    inputs = dict(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                  attention_mask=None, use_cache=False)
    if attention.varlen:
        inputs.update(varlen_kwargs(batch.cu_seqlens, batch.max_seqlen, device))
    return inputs


def forward(model, batch: Batch, device, attention: Choice = Choice("sdpa", "default")) -> torch.Tensor:
    """Logits of every position of a packed row, its samples kept apart."""
    return model(**model_inputs(batch, device, attention)).logits


def micro_loss(model, batch: Batch, device, kernels: Kernels) -> torch.Tensor:
    """Summed cross-entropy over the response tokens of one packed row.

    Only the positions that predict a label reach the vocabulary projection
    (``logits_to_keep`` with the collator's positions): prompt tokens, often
    most of an instruction sample, cost no ``[tokens, vocab]`` work. The
    chunked head goes further and never holds even those logits at once; it
    applies the model's own logit transform (soft-cap, scale) itself.
    """
    inputs = model_inputs(batch, device, kernels.attention)
    # 1-D: a [1, n] tensor is read as per-row positions by transformers 5.24 but indexes
    # as [1, 1, n, h] in 5.17; a packed batch is one row, so both mean the same
    positions = batch.loss_positions[0].to(device)
    targets = batch.targets.to(device)
    if kernels.loss == "standard":
        return ce_sum(model(**inputs, logits_to_keep=positions).logits[0], targets)
    # lm_head runs on no position at all; the chunked head reads the final hidden states
    out = model(**inputs, logits_to_keep=positions[:0], output_hidden_states=True)
    hidden = out.hidden_states[-1][0].index_select(0, positions)
    net = _unwrap(model)
    weight = net.get_output_embeddings().weight
    return chunked_ce_sum(hidden, weight, targets, kernels.chunk_tokens, LogitTransform.from_config(net.config))


def _unwrap(model):
    return getattr(model, "module", model)  # a DeepSpeed engine holds the model as .module


def steps_per_epoch(data: PackedData, packs_per_step: int) -> int:
    return math.ceil(len(data.packs) / packs_per_step)


def total_steps(recipe: Recipe, data: PackedData, packs_per_step: int) -> int:
    full = recipe.train.epochs * steps_per_epoch(data, packs_per_step)
    return min(full, recipe.train.max_steps) if recipe.train.max_steps else full


def train_step(engine, data: PackedData, my_slots: tuple[int | None, ...], n_step: int, world: int,
               normalisation: str, kernels: Kernels,
               loss_hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Run one optimizer step over this rank's packs; return its summed loss.

    With ``tokens`` normalisation the gradient is that of
    ``sum(CE over every response token of the step) / n_step``, counted over
    all micro-batches and ranks. ``n_step`` is known on every rank without
    communication because every rank holds the same plan. DeepSpeed divides
    each backward by the accumulation steps and averages gradients over
    ranks, so each micro-batch's sum is scaled by ``world * accum / n_step``.
    `loss_hook`, when given, replaces each micro-batch's summed loss by its
    result before anything reads it.
    """
    grad_accum = len(my_slots)
    # on the engine's device: the step's one collective runs there (NCCL takes no CPU tensors)
    local_sum = torch.zeros((), dtype=torch.float64, device=engine.device)
    for pack_index in my_slots:
        batch = data.batch(pack_index)
        summed = micro_loss(engine, batch, engine.device, kernels)
        if loss_hook is not None:
            summed = loss_hook(summed)
        local_sum += summed.detach().double()
        if normalisation == "tokens":
            loss = summed * (world * grad_accum / max(n_step, 1))
        else:  # micro_mean: every micro-batch weighs the same, whatever its token count
            loss = summed / max(batch.n_label_tokens, 1)
        engine.backward(loss)
        engine.step()
    return local_sum


class TrainHooks:
    """Called by `run` at fixed points of training; the default changes nothing.

    ``loss_hook(step)`` returns a function applied to every micro-batch's
    summed loss of optimizer step `step` (1-based), or None to leave them be.
    Tests replace `HOOKS` (tests/hooks/sitecustomize.py), e.g. to make a
    step's loss NaN as a diverging run would.
    """

    def loss_hook(self, step: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return None


HOOKS = TrainHooks()
"""The hooks `run` calls unless it is given others."""


def run(engine, data: PackedData, recipe: Recipe, rank: int, world: int, state: TrainerState,
        log: MetricsLog, save: Callable[[TrainerState], Path], stop: Callable[[], bool],
        say: Callable[[str], None], kernels: Kernels, perf: Throughput, evaluator=None,
        hooks: TrainHooks | None = None) -> str:
    """Train from `state` (updated in place) to the end of the recipe.

    `evaluator` (`medtune.engine.evaluate.Evaluator`) evaluates after the
    steps it says are due, before any checkpoint of that step; with
    ``train.best_metric`` every evaluated step is also checkpointed.

    Returns why it ended: ``done``, ``signal`` (a stop was requested: the step
    in progress was finished and saved) or ``bad_loss`` (too many non-finite
    steps in a row: saved with the last good weights, since DeepSpeed applies
    no update for a step whose gradient norm is not finite). `hooks` defaults
    to the module's `HOOKS`.
    """
    import deepspeed.comm as dist
    from tqdm import tqdm

    t = recipe.train
    pps = state.packs_per_step
    total = total_steps(recipe, data, pps)
    hooks = hooks or HOOKS
    bar = tqdm(total=total, initial=state.global_step, desc="train", unit="step",
               disable=rank != 0 or not recipe.logging.progress, dynamic_ncols=True)
    say(f"{len(data.packs)} packs of <= {data.max_tokens} tokens, {pps} packs per step, "
        f"{steps_per_epoch(data, pps)} steps/epoch, {total} steps on {world} ranks")
    try:
        while state.global_step < total:
            plan = plan_epoch(data.pack_flops, pps, world, recipe.data.seed, state.epoch)
            step = plan[state.step_in_epoch]
            in_step = [p for slots in step.slots for p in slots if p is not None]
            n_step = sum(data.pack_labels[p] for p in in_step)
            lr = engine.get_lr()[0]
            skipped = engine.skipped_steps
            began = time.perf_counter()
            local_sum = train_step(engine, data, step.slots[rank], n_step, world, t.loss_normalisation,
                                   kernels, hooks.loss_hook(state.global_step + 1))
            # one collective per step: the loss, and whether any rank was asked to stop
            shared = torch.stack([local_sum, torch.tensor(float(stop()), dtype=torch.float64,
                                                          device=local_sum.device)])
            dist.all_reduce(shared)
            elapsed = time.perf_counter() - began
            loss = shared[0].item() / max(n_step, 1)
            bad = engine.skipped_steps > skipped or not math.isfinite(loss)
            samples = sorted(i for p in in_step for i in data.packs[p])
            log.order(state.global_step + 1, state.epoch, samples)
            _advance(state, len(samples), len(plan), bad)
            tokens = sum(data.pack_tokens[p] for p in in_step)
            speed = perf.step(tokens, sum(data.pack_flops[p] for p in in_step), elapsed)
            if perf.first_step:  # optimizer states exist from the first step on
                states = model_state_bytes(engine)
                speed["memory/model_states_mib"] = sum(states.values()) / 2**20
                say(f"model states on rank {rank}: {speed['memory/model_states_mib']:,.1f} MiB ("
                    + ", ".join(f"{k} {v / 2**20:,.1f}" for k, v in states.items()) + ")")
            if state.global_step % recipe.logging.every == 0 or state.global_step == total or bad:
                log.log(state.global_step, {
                    "train/loss": loss, "train/lr": lr,
                    "train/grad_norm": float(engine.get_global_grad_norm() or 0.0),
                    "train/tokens_per_s": tokens / elapsed,
                    "train/packing_fill": tokens / (pps * data.max_tokens),
                    "train/skipped_steps": state.skipped_steps, **speed,
                })
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            bar.update(1)
            if _too_many_bad(state, bad, t.max_bad_steps, save, say):
                return "bad_loss"
            if _evaluate_and_save(engine, state, t, total, evaluator, log, save, shared[1].item() > 0, say):
                return "signal"
        if evaluator is not None and evaluator.every and state.last_eval_step != state.global_step:
            evaluator(engine, state, log)  # resumed at the end, past its evaluation
        return "done"
    finally:
        bar.close()
        say(perf.summary())


def _too_many_bad(state: TrainerState, bad: bool, limit: int, save: Callable[[TrainerState], Path],
                  say: Callable[[str], None]) -> bool:
    """Report a skipped (non-finite) step; at `limit` in a row, checkpoint and return True (stop)."""
    if bad:
        say(f"step {state.global_step}: non-finite loss or gradient, step skipped "
            f"({state.bad_steps_in_row} in a row, limit {limit})")
    if state.bad_steps_in_row < limit:
        return False
    save(state)
    say(f"stopping: {state.bad_steps_in_row} non-finite steps in a row; the checkpoint of "
        f"step {state.global_step} holds the last good weights (no update was applied since)")
    return True


def _evaluate_and_save(engine, state: TrainerState, t, total: int, evaluator, log: MetricsLog,
                       save: Callable[[TrainerState], Path], stop: bool, say: Callable[[str], None]) -> bool:
    """After a step: evaluate if due, then checkpoint (stop requested, ``save_every``, or an
    evaluation under ``train.best_metric``); True when the run must stop now."""
    evaluated = evaluator is not None and evaluator.due(state.global_step, total)
    if evaluated:
        evaluator(engine, state, log)
    if stop:
        save(state)
        say(f"stop requested: checkpoint of step {state.global_step} written")
        return True
    periodic = t.save_every and state.global_step % t.save_every == 0
    if (periodic or (evaluated and t.best_metric)) and state.global_step < total:
        save(state)
    return False


def _advance(state: TrainerState, samples: int, steps_in_epoch: int, bad: bool) -> None:
    """Count one optimizer step of `samples` samples in `state`: its position and bad-step streak."""
    state.global_step += 1
    state.consumed_samples += samples
    state.step_in_epoch += 1
    if state.step_in_epoch == steps_in_epoch:
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
    state.bad_steps_in_row = state.bad_steps_in_row + 1 if bad else 0
    state.skipped_steps += int(bad)


@torch.no_grad()
def probe_logits(engine, data: PackedData, attention: Choice) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the first sample alone (a collective): kept beside the export to check it."""
    first = data.dataset[0]
    batch = collate([(first["input_ids"], first["labels"])], data.pad_id)
    engine.module.eval()
    logits = forward(engine, batch, engine.device, attention).float().cpu()
    engine.module.train()
    return batch.input_ids, logits
