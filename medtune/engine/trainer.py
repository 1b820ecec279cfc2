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
from medtune.data.packing import Step, pack, plan_epoch
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

    def samples_in(self, step: Step) -> int:
        return sum(len(self.packs[p]) for slots in step.slots for p in slots if p is not None)


def forward(model, batch: Batch, device) -> torch.Tensor:
    """Logits of a packed row, its samples kept apart.

    transformers isolates the samples (block-diagonal causal attention from
    ``position_ids`` restarting at 0) only when there is no attention mask
    and no KV cache, so neither is ever passed here.
    """
    return model(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                 attention_mask=None, use_cache=False).logits


def steps_per_epoch(data: PackedData, world: int, grad_accum: int) -> int:
    return math.ceil(len(data.packs) / (world * grad_accum))


def total_steps(recipe: Recipe, data: PackedData, world: int) -> int:
    full = recipe.train.epochs * steps_per_epoch(data, world, recipe.train.grad_accum)
    return min(full, recipe.train.max_steps) if recipe.train.max_steps else full


def train_step(engine, data: PackedData, step: Step, rank: int, world: int,
               normalisation: str) -> tuple[torch.Tensor, int]:
    """Run one optimizer step; return this rank's summed loss and the step's label tokens.

    With ``tokens`` normalisation the gradient is that of
    ``sum(CE over every response token of the step) / N``, N counted over all
    micro-batches and ranks. N is known on every rank without communication
    because every rank holds the same plan. DeepSpeed divides each backward
    by the accumulation steps and averages gradients over ranks, so each
    micro-batch's sum is scaled by ``world * grad_accum / N`` to cancel that.
    """
    grad_accum = len(step.slots[rank])
    n_step = sum(data.pack_labels[p] for slots in step.slots for p in slots if p is not None)
    local_sum = torch.zeros((), dtype=torch.float64)
    for micro in range(grad_accum):
        batch = data.batch(step.slots[rank][micro])
        ce_sum = token_ce_sum(forward(engine, batch, engine.device), batch.labels)
        local_sum += ce_sum.detach().double().cpu()
        if normalisation == "tokens":
            loss = ce_sum * (world * grad_accum / max(n_step, 1))
        else:  # micro_mean: every micro-batch weighs the same, whatever its token count
            loss = ce_sum / max(batch.n_label_tokens, 1)
        engine.backward(loss)
        engine.step()
    return local_sum, n_step


def run(engine, data: PackedData, recipe: Recipe, rank: int, world: int, state: TrainerState,
        log: MetricsLog, save: Callable[[TrainerState], Path], say: Callable[[str], None]) -> TrainerState:
    """Train from `state` to the end of the recipe; return the final state."""
    import deepspeed.comm as dist
    from tqdm import tqdm

    t = recipe.train
    total = total_steps(recipe, data, world)
    per_epoch = steps_per_epoch(data, world, t.grad_accum)
    bar = tqdm(total=total, initial=state.global_step, desc="train", unit="step",
               disable=rank != 0 or not recipe.logging.progress, dynamic_ncols=True)
    say(f"{len(data.packs)} packs of <= {data.max_tokens} tokens, {per_epoch} steps/epoch, "
        f"{total} steps on {world} ranks")
    while state.global_step < total:
        plan = plan_epoch(data.pack_tokens, world, t.grad_accum, recipe.data.seed, state.epoch)
        step = plan[state.step_in_epoch]
        lr = engine.get_lr()[0]
        began = time.perf_counter()
        local_sum, n_step = train_step(engine, data, step, rank, world, t.loss_normalisation)
        dist.all_reduce(local_sum)
        elapsed = time.perf_counter() - began
        state.global_step += 1
        state.consumed_samples += data.samples_in(step)
        state.step_in_epoch += 1
        if state.step_in_epoch == len(plan):
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        loss = local_sum.item() / max(n_step, 1)
        tokens = sum(data.pack_tokens[p] for slots in step.slots for p in slots if p is not None)
        if state.global_step % recipe.logging.every == 0 or state.global_step == total:
            log.log(state.global_step, {
                "train/loss": loss, "train/lr": lr,
                "train/grad_norm": float(engine.get_global_grad_norm() or 0.0),
                "train/tokens_per_s": tokens / elapsed,
                "train/packing_fill": tokens / (world * t.grad_accum * data.max_tokens),
            })
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        if t.save_every and state.global_step % t.save_every == 0 and state.global_step < total:
            save(state)
    bar.close()
    return state


@torch.no_grad()
def probe_logits(engine, data: PackedData) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the first sample alone (a collective): kept beside the export to check it."""
    ids = torch.tensor([data.dataset[0]["input_ids"]], dtype=torch.long)
    engine.module.eval()
    logits = engine(input_ids=ids.to(engine.device), use_cache=False).logits.float().cpu()
    engine.module.train()
    return ids, logits
