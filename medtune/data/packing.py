"""Samples -> packs of at most ``max_tokens`` tokens -> a per-step plan.

Packing is best-fit decreasing: samples are taken longest first and each goes
into the fullest pack it still fits in; a sample is never split. Example with
``max_tokens=10`` and lengths ``[6, 5, 4, 3, 2]``::

    sample 0 (6) -> new pack A            A=[0]      free 4
    sample 1 (5) -> new pack B            B=[1]      free 5
    sample 2 (4) -> A (free 4, tightest)  A=[0,2]    free 0
    sample 3 (3) -> B                     B=[1,3]    free 2
    sample 4 (2) -> B                     B=[1,3,4]  free 0

The plan orders packs by a seeded shuffle per epoch and deals each optimizer
step's ``packs_per_step`` (= ranks x accumulation) packs to ranks so their
token counts balance;
a short last step is filled with empty slots (``None``), which cost one
token and carry no loss, so every rank runs the same number of micro-steps.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Sequence


def pack(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Best-fit-decreasing packs of sample indices; deterministic for given lengths."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, pack index), kept sorted
    for i in order:
        n = lengths[i]
        if n > max_tokens:
            raise ValueError(f"sample {i} has {n} tokens, more than max_tokens={max_tokens}")
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, p = free.pop(at)
            packs[p].append(i)
            bisect.insort(free, (room - n, p))
        else:
            packs.append([i])
            bisect.insort(free, (max_tokens - n, len(packs) - 1))
    return packs


@dataclass(frozen=True)
class Step:
    """One optimizer step: ``slots[rank][micro]`` is a pack index, or None (empty)."""
    slots: tuple[tuple[int | None, ...], ...]


def plan_epoch(pack_tokens: Sequence[int], packs_per_step: int, world: int, seed: int,
               epoch: int) -> list[Step]:
    """The epoch's steps; the same on every rank for the same arguments.

    Which packs form step ``i`` depends only on the seed, the epoch and
    ``packs_per_step``, never on ``world``: a run resumed on another number
    of ranks (same ``packs_per_step``) takes exactly the same packs in the
    same steps, only dealt differently.
    """
    if packs_per_step % world:
        raise ValueError(f"{packs_per_step} packs per step cannot be shared by {world} ranks")
    order = list(range(len(pack_tokens)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [_deal(order[start:start + packs_per_step], pack_tokens, world, packs_per_step // world)
            for start in range(0, len(order), packs_per_step)]


def _deal(chunk: list[int], pack_tokens: Sequence[int], world: int, grad_accum: int) -> Step:
    """Longest-processing-time dealing: the biggest pack goes to the least-loaded rank."""
    ranks: list[list[int | None]] = [[] for _ in range(world)]
    load = [0] * world
    for p in sorted(chunk, key=lambda p: (-pack_tokens[p], p)):
        r = min((r for r in range(world) if len(ranks[r]) < grad_accum), key=lambda r: (load[r], r))
        ranks[r].append(p)
        load[r] += pack_tokens[p]
    for r in ranks:
        r.extend([None] * (grad_accum - len(r)))
    return Step(tuple(tuple(r) for r in ranks))
