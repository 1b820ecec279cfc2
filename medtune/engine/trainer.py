"""The training loop: packed rows -> loss over response tokens -> optimizer steps."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from medtune.config import Recipe
from medtune.data.collator import Batch, collate
from medtune.data.packing import pack, plan_epoch
from medtune.engine.checkpoint import TrainerState
from medtune.engine.metrics import MetricsLog
from medtune.kernels.loss import token_ce_sum


@dataclass(frozen=True)
class PackedData:
    """The tokenized samples and their packs; every rank holds the same plan."""
    dataset: object                 # datasets.Dataset with input_ids / labels
    packs: list[list[int]]
    pack_tokens: list[int]
    pack_labels: list[int]
    max_tokens: int
    pad_id: int

    @classmethod
    def build(cls, dataset, max_tokens: int, pad_id: int) -> "PackedData":
        lengths = dataset["length"]
        n_labels = dataset["n_labels"]
        packs = pack(lengths, max_tokens)
        return cls(dataset, packs, [sum(lengths[i] for i in p) for p in packs],
                   [sum(n_labels[i] for i in p) for p in packs], max_tokens, pad_id)

    def batch(self, pack_index: int | None) -> Batch:
        if pack_index is None:
            return collate([], self.pad_id)
        rows = self.dataset[self.packs[pack_index]]
        return collate(list(zip(rows["input_ids"], rows["labels"])), self.pad_id)


def forward(model, batch: Batch, device) -> torch.Tensor:
    """Logits of a packed row, its samples kept apart.

    transformers isolates the samples (block-diagonal causal attention from
    ``position_ids`` restarting at 0) only when there is no attention mask
    and no KV cache, so neither is ever passed here.
    """
    return model(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                 attention_mask=None, use_cache=False).logits


def steps_per_epoch(data: PackedData, packs_per_step: int) -> int:
    return math.ceil(len(data.packs) / packs_per_step)


def total_steps(recipe: Recipe, data: PackedData, packs_per_step: int) -> int:
    full = recipe.train.epochs * steps_per_epoch(data, packs_per_step)
    return min(full, recipe.train.max_steps) if recipe.train.max_steps else full


def train_step(engine, data: PackedData, my_slots: tuple[int | None, ...], n_step: int, world: int,
               normalisation: str, poison: bool = False) -> torch.Tensor:
    """Run one optimizer step over this rank's packs; return its summed loss.

    With ``tokens`` normalisation the gradient is that of
    ``sum(CE over every response token of the step) / n_step``, counted over
    all micro-batches and ranks. ``n_step`` is known on every rank without
    communication because every rank holds the same plan. DeepSpeed divides
    each backward by the accumulation steps and averages gradients over
    ranks, so each micro-batch's sum is scaled by ``world * accum / n_step``.
    """
    grad_accum = len(my_slots)
    local_sum = torch.zeros((), dtype=torch.float64)
    for pack_index in my_slots:
        batch = data.batch(pack_index)
        ce_sum = token_ce_sum(forward(engine, batch, engine.device), batch.labels)
        if poison:  # test hook: a non-finite loss, as a diverging run would produce
            ce_sum = ce_sum * float("nan")
        local_sum += ce_sum.detach().double().cpu()
        if normalisation == "tokens":
            loss = ce_sum * (world * grad_accum / max(n_step, 1))
        else:  # micro_mean: every micro-batch weighs the same, whatever its token count
            loss = ce_sum / max(batch.n_label_tokens, 1)
        engine.backward(loss)
        engine.step()
    return local_sum


NAN_ENV = "MEDTUNE_TEST_NAN_AT_STEPS"  # test hook: comma-separated steps whose loss is made NaN


def run(engine, data: PackedData, recipe: Recipe, rank: int, world: int, state: TrainerState,
        log: MetricsLog, save: Callable[[TrainerState], Path], stop: Callable[[], bool],
        say: Callable[[str], None]) -> str:
    """Train from `state` (updated in place) to the end of the recipe.

    Returns why it ended: ``done``, ``signal`` (a stop was requested: the step
    in progress was finished and saved) or ``bad_loss`` (too many non-finite
    steps in a row: saved with the last good weights, since DeepSpeed applies
    no update for a step whose gradient norm is not finite).
    """
    import deepspeed.comm as dist
    from tqdm import tqdm

    t = recipe.train
    pps = state.packs_per_step
    total = total_steps(recipe, data, pps)
    poisoned = {int(x) for x in os.environ.get(NAN_ENV, "").split(",") if x}
    bar = tqdm(total=total, initial=state.global_step, desc="train", unit="step",
               disable=rank != 0 or not recipe.logging.progress, dynamic_ncols=True)
    say(f"{len(data.packs)} packs of <= {data.max_tokens} tokens, {pps} packs per step, "
        f"{steps_per_epoch(data, pps)} steps/epoch, {total} steps on {world} ranks")
    try:
        while state.global_step < total:
            plan = plan_epoch(data.pack_tokens, pps, world, recipe.data.seed, state.epoch)
            step = plan[state.step_in_epoch]
            in_step = [p for slots in step.slots for p in slots if p is not None]
            n_step = sum(data.pack_labels[p] for p in in_step)
            lr = engine.get_lr()[0]
            skipped = engine.skipped_steps
            began = time.perf_counter()
            local_sum = train_step(engine, data, step.slots[rank], n_step, world, t.loss_normalisation,
                                   poison=state.global_step + 1 in poisoned)
            # one collective per step: the loss, and whether any rank was asked to stop
            shared = torch.stack([local_sum, torch.tensor(float(stop()), dtype=torch.float64)])
            dist.all_reduce(shared)
            elapsed = time.perf_counter() - began
            loss = shared[0].item() / max(n_step, 1)
            bad = engine.skipped_steps > skipped or not math.isfinite(loss)
            samples = sorted(i for p in in_step for i in data.packs[p])
            log.order(state.global_step + 1, state.epoch, samples)
            state.global_step += 1
            state.consumed_samples += len(samples)
            state.step_in_epoch += 1
            if state.step_in_epoch == len(plan):
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            state.bad_steps_in_row = state.bad_steps_in_row + 1 if bad else 0
            state.skipped_steps += int(bad)
            tokens = sum(data.pack_tokens[p] for p in in_step)
            if state.global_step % recipe.logging.every == 0 or state.global_step == total or bad:
                log.log(state.global_step, {
                    "train/loss": loss, "train/lr": lr,
                    "train/grad_norm": float(engine.get_global_grad_norm() or 0.0),
                    "train/tokens_per_s": tokens / elapsed,
                    "train/packing_fill": tokens / (pps * data.max_tokens),
                    "train/skipped_steps": state.skipped_steps,
                })
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            bar.update(1)
            if bad:
                say(f"step {state.global_step}: non-finite loss or gradient, step skipped "
                    f"({state.bad_steps_in_row} in a row, limit {t.max_bad_steps})")
            if state.bad_steps_in_row >= t.max_bad_steps:
                save(state)
                say(f"stopping: {state.bad_steps_in_row} non-finite steps in a row; the checkpoint of "
                    f"step {state.global_step} holds the last good weights (no update was applied since)")
                return "bad_loss"
            if shared[1].item() > 0:
                save(state)
                say(f"stop requested: checkpoint of step {state.global_step} written")
                return "signal"
            if t.save_every and state.global_step % t.save_every == 0 and state.global_step < total:
                save(state)
        return "done"
    finally:
        bar.close()


@torch.no_grad()
def probe_logits(engine, data: PackedData) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the first sample alone (a collective): kept beside the export to check it."""
    ids = torch.tensor([data.dataset[0]["input_ids"]], dtype=torch.long)
    engine.module.eval()
    logits = engine(input_ids=ids.to(engine.device), use_cache=False).logits.float().cpu()
    engine.module.train()
    return ids, logits
