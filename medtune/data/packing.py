"""Samples -> packs of at most ``max_tokens`` tokens, balanced in cost -> a per-step plan.

A sample is never split, no pack exceeds ``max_tokens``, and the result
depends only on the arguments. A pack's cost is the sum of its samples'
``cost(length)``: FLOPs from ``medtune.models.flops.FlopModel.sample`` (linear in
tokens plus the quadratic attention term), or tokens when no cost is given.
The pack count starts at the lower bound ``ceil(total / max_tokens)``; with
a FLOP cost it may add the free room that packs of long, attention-heavy
samples need, up to ``MAX_FREE`` of the tokens. Then three passes:

1. spread: the longest samples, holding ``LONG_SHARE`` of the tokens, go one
   by one to the pack with the smallest sum of squared lengths, so long
   samples are shared out before anything else;
2. fill: packs, from the smallest sum of squares up, are filled to exactly
   ``max_tokens`` (or, in a second try with a FLOP cost, only up to the mean
   pack cost). While the room is too large to close, the next sample is the
   one whose length is nearest ``(mean sum of squares - the pack's) / room``
   (what brings the pack to the mean if the rest of its room were made of
   such samples), never shorter than the median one, so short samples remain
   for the end; then one sample, or a pair of samples, closes the room
   exactly. Samples no gap could take go where they fit best, else to new
   packs;
3. balance: the pack furthest from the mean cost trades samples with the
   packs at the other extreme (one for none, one or two, or two for none or
   one, within ``max_tokens``), taking the trade that brings the pair
   closest to the mean, until every pack is within ``TOLERANCE`` or no trade
   helps. This spreads the free room over the packs and evens out the
   attention term, which token counts alone do not see.

Of the fill tries (and plain best-fit decreasing when it makes fewer packs
than both, as on some small or odd length mixes), the one with the fewest
packs wins, then the one with the smallest cost spread.

Example, ``max_tokens=10``, lengths ``[6, 4, 3, 2, 1]`` (16 tokens: 2 packs,
A and B; mean sum of squares 66 / 2 = 33)::

    spread   30% of 16 tokens: sample 0 (6) -> A
    fill     B first (sum of squares 0 < 36); room 10: nearest 33/10 = 3.3,
             at least the median of the rest (2): sample 2 (3); room 7, no
             pair makes 7: nearest (33-9)/7 = 3.4: sample 1 (4); room 3 =
             2 + 1: samples 3 and 4
                                            A = [0] 6 tokens, B = [1, 2, 3, 4] 10
    balance  cost = tokens: B gives sample 3 (2) to A
                                            -> [[0, 3], [1, 2, 4]]: 8 and 8 tokens
             cost = n + n*n (attention-like): A costs 42, B 40, and no trade
             brings them closer             -> [[0], [1, 2, 3, 4]]
             (the token-balanced packs would cost 48 and 34)

A sample whose own cost exceeds the mean pack cost keeps its pack above the
mean whatever the packing: a larger ``max_tokens`` is the cure.

The plan orders packs by a seeded shuffle per epoch; each run of
``packs_per_step`` (= ranks x accumulation) packs is one optimizer step,
whatever the number of ranks, and its packs are dealt to ranks costliest
first, each to the least-loaded rank with a free micro-step, then swapped
between the most and the least loaded rank while that narrows them. A short
last step is filled with empty slots (``None``), which cost one token and
carry no loss, so every rank runs the same number of micro-steps.
"""
from __future__ import annotations

import bisect
import heapq
import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

LONG_SHARE = 0.3
"""Share of the tokens, in the longest samples, spread before filling: long samples
first in every pack, while leaving the fill pass the samples it needs to close
packs exactly (measured on the shared corpora: 0.15 to 0.5 pack as well)."""
TOLERANCE = 0.005
"""Balance target: each pack's cost within 0.5% of the mean, so that a step of 8
one-pack ranks is within about 1%."""
VERSION = 2
"""Bumped whenever the same lengths and costs would give other packs: a checkpoint
records it with the data, and a resume under another packing is refused (its data
position would point at other samples)."""
MAX_FREE = 0.003
"""Most of the packs' tokens that may be left empty (beyond the lower bound) to give
the packs of attention-heavy samples room to stay near the mean cost."""
_PARTNERS = 8  # packs at the other extreme tried for each trade...
_THOROUGH = 3  # ...of which the closest are searched for two-for-one trades
_PAIR_TRIES = 300  # candidate lengths tried when closing a pack with a pair
_GIVE_UP = 256  # packs in a row without a trade that end the balance pass


def pack(lengths: Sequence[int], max_tokens: int, cost: Callable[[int], float] | None = None,
         max_free: float = MAX_FREE) -> list[list[int]]:
    """Packs of sample indices, each sorted, listed by their first sample; deterministic.

    ``cost(length)`` is one sample's cost (FLOPs: ``FlopModel.sample``);
    without it a pack costs its tokens. Every process computes the same
    packs from the same arguments (the arithmetic is exact for integer costs).
    """
    lengths = list(lengths)  # a datasets Column reads one row per index: 100x slower
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= max_free < 1:
        raise ValueError(f"max_free is a share of the tokens in [0, 1), got {max_free}")
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"sample {i} has {n} tokens, more than max_tokens={max_tokens}")
        if n < 1:
            raise ValueError(f"sample {i} has {n} tokens: every sample needs at least one")
    if not lengths:
        return []
    by_length = {n: (cost(n) if cost else n) for n in sorted(set(lengths))}
    sizes = list(by_length)
    for shorter, longer in zip(sizes, sizes[1:]):
        if by_length[longer] < by_length[shorter]:
            raise ValueError(f"cost must not fall as samples grow: cost({shorter})="
                             f"{by_length[shorter]} > cost({longer})={by_length[longer]}")
    median = sorted(lengths)[len(lengths) // 2]
    per_token = by_length[median] / median if cost else None
    count = _pack_count(lengths, by_length, max_tokens, per_token, max_free)
    # Filling to the brim, and (with a FLOP cost) to the mean cost, each win on some
    # data; best-fit decreasing on small or odd length mixes. All are cheap.
    tries = [_fill(lengths, by_length, max_tokens, count, None)]
    if per_token:
        tries.append(_fill(lengths, by_length, max_tokens, count, per_token))
    fewest = min(len(t) for t in tries)
    if fewest > count:
        fallback = _best_fit_decreasing(lengths, max_tokens)
        if len(fallback) < fewest:
            tries.append(fallback)
    spreads = [_balance(t, lengths, by_length, max_tokens) for t in tries]
    scored = [(sum(1 for p in t if p), spread, t) for t, spread in zip(tries, spreads)]
    packs = min(scored, key=lambda s: s[:2])[2]  # fewest packs, then the smallest spread
    return sorted(sorted(p) for p in packs if p)


def _best_fit_decreasing(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Longest first, each sample into the fullest pack it fits in."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, pack index), kept sorted
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, p = free.pop(at)
            packs[p].append(i)
            bisect.insort(free, (room - n, p))
        else:
            packs.append([i])
            bisect.insort(free, (max_tokens - n, len(packs) - 1))
    return packs


def _pack_count(lengths: Sequence[int], by_length: dict[int, float], max_tokens: int,
                per_token: float | None, max_free: float) -> int:
    """The lower bound, plus the free room attention-heavy samples need, within `max_free`.

    A pack holding a sample of length ``L`` and filled up with typical
    samples costs ``cost(L) + (max_tokens - L) * per_token``; what exceeds
    the mean pack cost (plus the tolerance) is room to leave empty.
    """
    total = sum(lengths)
    low = -(-total // max_tokens)
    if not per_token or per_token <= 0:
        return low
    counts: dict[int, int] = {}
    for n in lengths:
        counts[n] = counts.get(n, 0) + 1
    limit = sum(by_length[n] * k for n, k in counts.items()) / low * (1 + TOLERANCE)
    need = sum(k * min(max(0.0, (by_length[n] + (max_tokens - n) * per_token - limit) / per_token),
                       max_tokens - n) for n, k in counts.items())
    most = math.floor(total / (max_tokens * (1 - max_free)))
    return max(low, min(-(-(total + math.ceil(need)) // max_tokens), most))


class _Pool:
    """Unplaced samples bucketed by length: the longest one up to a length in O(log lengths)."""

    def __init__(self, samples: Sequence[int], lengths: Sequence[int]):
        self.buckets: dict[int, list[int]] = {}
        for i in samples:
            self.buckets.setdefault(lengths[i], []).append(i)
        self.keys = sorted(self.buckets)
        self.size = len(samples)

    def longest_up_to(self, n: int) -> int | None:
        at = bisect.bisect_right(self.keys, n)
        return self.keys[at - 1] if at else None

    def nearest_up_to(self, target: float, most: int) -> int | None:
        """The length nearest `target` among those up to `most`."""
        at = bisect.bisect_right(self.keys, most)
        if not at:
            return None
        j = bisect.bisect_left(self.keys, target, 0, at)
        if j == at or (j > 0 and target - self.keys[j - 1] <= self.keys[j] - target):
            j -= 1
        return self.keys[max(j, 0)]

    def pair_summing_to(self, n: int) -> tuple[int, int] | None:
        """Two lengths adding up to `n`, as even as possible (keeps short samples for later)."""
        keys, buckets = self.keys, self.buckets
        start = bisect.bisect_left(keys, (n + 1) // 2)
        for a in keys[start:start + _PAIR_TRIES]:
            b = n - a
            if b < keys[0]:
                break
            if b in buckets and (b != a or len(buckets[b]) > 1):
                return a, b
        return None

    def take(self, n: int) -> int:
        bucket = self.buckets[n]
        i = bucket.pop()
        if not bucket:
            del self.buckets[n]
            self.keys.pop(bisect.bisect_left(self.keys, n))
        self.size -= 1
        return i


def _fill(lengths: Sequence[int], by_length: dict[int, float], max_tokens: int, count: int,
          per_token: float | None) -> list[list[int]]:
    """Passes 1 and 2 of the module docstring into `count` packs (or a few more).

    With `per_token` (the cost of a typical token), a pack stops taking
    samples once the typical ones would take it past the mean pack cost.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = [[] for _ in range(count)]
    tokens, squares, cost = [0] * count, [0] * count, [0.0] * count
    heap = [(0, p) for p in range(count)]  # (sum of squared lengths, pack)
    spread, k = LONG_SHARE * sum(lengths), 0
    while k < len(order) and spread > 0:
        i, (_, p) = order[k], heap[0]
        n = lengths[i]
        if tokens[p] + n > max_tokens:
            break
        packs[p].append(i)
        tokens[p] += n
        squares[p] += n * n
        cost[p] += by_length[n]
        heapq.heapreplace(heap, (squares[p], p))
        spread -= n
        k += 1
    pool = _Pool(order[k:], lengths)
    typical = lengths[order[k + (len(order) - k) // 2]] if k < len(order) else 0
    mean_squares = sum(n * n for n in lengths) / count
    cap = sum(by_length[n] for n in lengths) / count * (1 + TOLERANCE / 2)

    def put(p: int, n: int) -> None:
        packs[p].append(pool.take(n))
        tokens[p] += n
        squares[p] += n * n

    for p in sorted(range(count), key=lambda p: (squares[p], p)):
        target = max_tokens
        if per_token:
            target = min(max_tokens, tokens[p] + max(0, int((cap - cost[p]) / per_token)))
        while pool.size and tokens[p] < target:
            room = target - tokens[p]
            if room in pool.buckets:
                put(p, room)
                break
            pair = pool.pair_summing_to(room) if room <= 2 * pool.keys[-1] else None
            if pair:
                put(p, pair[0])
                put(p, pair[1])
                break
            # the length that would bring the pack to the mean sum of squares, but never
            # below the median: the short samples are what closes packs exactly
            even = max((mean_squares - squares[p]) / room, typical)
            n = pool.nearest_up_to(even, room - pool.keys[0]) or pool.longest_up_to(room)
            if n is None:
                break
            put(p, n)
    # Gaps no sample could close add up to a few packs' worth at most: the samples
    # left over go where they fit best, or open new packs, which pass 3 then fills.
    free = sorted((max_tokens - tokens[p], p) for p in range(count))
    for n in reversed(list(pool.keys)):
        while n in pool.buckets:
            at = bisect.bisect_left(free, (n, -1))
            if at < len(free):
                room, p = free.pop(at)
            else:
                room, p = max_tokens, len(packs)
                packs.append([])
                tokens.append(0)
                squares.append(0)
            put(p, n)
            bisect.insort(free, (room - n, p))
    return packs


def _balance(packs: list[list[int]], lengths: Sequence[int], by_length: dict[int, float],
             max_tokens: int) -> float:
    """Pass 3 of the module docstring, in place; returns the largest |cost / mean - 1|.

    Every trade strictly lowers the sum of squared deviations from the mean,
    so it cannot cycle; a pack no trade improves is left out until a trade
    with another pack changes it, and the pass ends once ``_GIVE_UP`` packs
    in a row had no trade (the worst come first, so the rest are closer to
    the mean). Heaps with version stamps find the worst pack and its
    partners without scanning all packs.
    """
    count = len(packs)
    tokens = [sum(lengths[i] for i in p) for p in packs]
    cost = [sum(by_length[lengths[i]] for i in p) for p in packs]
    mean = sum(cost) / count
    version = [0] * count
    worst = [(-abs(cost[p] - mean), p, 0) for p in range(count)]
    light = [(cost[p], p, 0) for p in range(count)]
    heavy = [(-cost[p], p, 0) for p in range(count)]
    for h in (worst, light, heavy):
        heapq.heapify(h)

    def extremes(heap: list, skip: int) -> list[int]:
        """The `_PARTNERS` current packs at the top of `heap`, other than `skip`."""
        found, kept = [], []
        while heap and len(found) < _PARTNERS:
            entry = heapq.heappop(heap)
            if entry[2] == version[entry[1]]:
                kept.append(entry)
                if entry[1] != skip:
                    found.append(entry[1])
        for entry in kept:
            heapq.heappush(heap, entry)
        return found

    def by_size(p: int) -> dict[int, int]:
        counts: dict[int, int] = {}
        for i in packs[p]:
            counts[lengths[i]] = counts.get(lengths[i], 0) + 1
        return counts

    in_row = 0
    while in_row < _GIVE_UP:
        while worst and worst[0][2] != version[worst[0][1]]:
            heapq.heappop(worst)
        if not worst or -worst[0][0] <= TOLERANCE * mean:
            break
        p = heapq.heappop(worst)[1]
        is_heavy = cost[p] > mean
        pairs = [(p, q) if is_heavy else (q, p) for q in extremes(light if is_heavy else heavy, p)]
        sizes = {q: by_size(q) for pair in pairs for q in pair}
        best = None
        for thorough in (False, True):  # one-for-one trades first: far fewer to search
            for h, l in (pairs[:_THOROUGH] if thorough else pairs):
                want = (cost[h] - cost[l]) / 2
                trade = _best_trade(sizes[h], sizes[l], by_length, max_tokens - tokens[h],
                                    max_tokens - tokens[l], want, thorough)
                if trade and (best is None or trade[0] > best[0]):
                    best = (trade[0], want, h, l, trade[1], trade[2])
            if best and best[0] >= 0.75 * best[1] ** 2:
                break
        if best is None:
            in_row += 1
            continue  # p stays out of `worst` until a trade with another pack changes it
        in_row = 0
        _, _, h, l, out_h, out_l = best
        _trade(packs, lengths, by_length, tokens, cost, h, l, out_h, out_l)
        for q in (h, l):
            version[q] += 1
            heapq.heappush(worst, (-abs(cost[q] - mean), q, version[q]))
            heapq.heappush(light, (cost[q], q, version[q]))
            heapq.heappush(heavy, (-cost[q], q, version[q]))
    return max(abs(c - mean) for c in cost) / mean if mean else 0.0


def _trade(packs: list[list[int]], lengths: Sequence[int], by_length: dict[int, float], tokens: list[int],
           cost: list[float], h: int, l: int, out_h: Sequence[int], out_l: Sequence[int]) -> None:
    """Move samples of lengths `out_h` from pack `h` to `l` and of `out_l` from `l` to `h`, in place.

    Each pack gives its last samples of each length; `tokens` and `cost` follow.
    """
    picked: list[tuple[int, int, int]] = []  # all picked before any move
    for src, dst, n in [(h, l, n) for n in out_h] + [(l, h, n) for n in out_l]:
        taken = {i for _, _, i in picked}
        picked.append((src, dst, next(i for i in reversed(packs[src])
                                      if lengths[i] == n and i not in taken)))
    for src, dst, i in picked:
        packs[src].remove(i)
        packs[dst].append(i)
        tokens[src] -= lengths[i]
        tokens[dst] += lengths[i]
        cost[src] -= by_length[lengths[i]]
        cost[dst] += by_length[lengths[i]]


def _best_trade(heavy: dict[int, int], light: dict[int, int], by_length: dict[int, float],
                room_h: int, room_l: int, want: float, thorough: bool
                ) -> tuple[float, tuple[int, ...], tuple[int, ...]] | None:
    """The trade moving cost closest to `want` from `heavy` to `light`, within both rooms.

    Packs are given as sample counts by length (a sample's cost depends only
    on its length, so trades are searched among distinct lengths). `heavy`
    gives one sample for none or one back; `thorough` adds one for two back
    and two for none or one. Moving cost ``d`` lowers the pair's squared
    deviation from the mean by ``2 d (2 want - d)``: the gain is positive for
    ``0 < d < 2 want``, largest at ``want``. Returns (gain, lengths out of
    heavy, lengths out of light).
    """
    if want <= 0:
        return None
    back = sorted(light)  # cheapest first: cost does not fall as length grows
    costs = [by_length[n] for n in back]
    best: tuple[float, tuple[int, ...], tuple[int, ...]] | None = None

    def consider(out_h: tuple[int, ...], out_l: tuple[int, ...], d: float, flow: int) -> None:
        nonlocal best  # flow: tokens leaving heavy for light, net
        if 0 < d < 2 * want and flow <= room_l and -flow <= room_h:
            gain = d * (2 * want - d)
            if best is None or gain > best[0]:
                best = (gain, out_h, out_l)

    def nearest(target: float, tokens: int, start: int = 0) -> range:
        """Indices in `back` costing about `target`, among those the rooms allow
        when `tokens` leave heavy for them (from `start` on)."""
        lo = bisect.bisect_left(back, tokens - room_l, start)
        hi = bisect.bisect_right(back, tokens + room_h, lo)
        at = bisect.bisect_left(costs, target, lo, hi)
        return range(max(at - 1, lo), min(at + 1, hi))

    sizes = sorted(heavy)
    given = [((a,), by_length[a], a) for a in sizes]
    if thorough:
        given += [((a, b), by_length[a] + by_length[b], a + b) for k, a in enumerate(sizes)
                  for b in sizes[k:] if a != b or heavy[a] > 1]
    for out_h, d_out, n_out in given:
        consider(out_h, (), d_out, n_out)
        for j in nearest(d_out - want, n_out):
            consider(out_h, (back[j],), d_out - costs[j], n_out - back[j])
        if not thorough or len(out_h) > 1:
            continue
        for k, y in enumerate(back):  # two back for one: y, then z no shorter than y
            for j in nearest(d_out - want - costs[k], n_out - y, k if light[y] > 1 else k + 1):
                consider(out_h, (y, back[j]), d_out - costs[k] - costs[j], n_out - y - back[j])
    return best


@dataclass(frozen=True)
class Step:
    """One optimizer step: ``slots[rank][micro]`` is a pack index, or None (empty)."""
    slots: tuple[tuple[int | None, ...], ...]


def plan_epoch(pack_costs: Sequence[float], packs_per_step: int, world: int, seed: int,
               epoch: int) -> list[Step]:
    """The epoch's steps; the same on every rank for the same arguments.

    ``pack_costs`` is each pack's cost (FLOPs, or tokens). Which packs form
    step ``i`` depends only on the seed, the epoch and ``packs_per_step``,
    never on ``world``: a run resumed on another number of ranks (same
    ``packs_per_step``) takes exactly the same packs in the same steps, only
    dealt differently.
    """
    if packs_per_step % world:
        raise ValueError(f"{packs_per_step} packs per step cannot be shared by {world} ranks")
    order = list(range(len(pack_costs)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [_deal(order[start:start + packs_per_step], pack_costs, world, packs_per_step // world)
            for start in range(0, len(order), packs_per_step)]


def _deal(chunk: list[int], pack_costs: Sequence[float], world: int, grad_accum: int) -> Step:
    """Longest-processing-time dealing, the costliest pack to the least-loaded rank, then
    swaps between the most and the least loaded rank while a swap narrows their gap."""
    ranks: list[list[int | None]] = [[] for _ in range(world)]
    load = [0.0] * world
    for p in sorted(chunk, key=lambda p: (-pack_costs[p], p)):
        r = min((r for r in range(world) if len(ranks[r]) < grad_accum), key=lambda r: (load[r], r))
        ranks[r].append(p)
        load[r] += pack_costs[p]
    for r in ranks:
        r.extend([None] * (grad_accum - len(r)))
    def cost(p: int | None) -> float:
        return 0.0 if p is None else pack_costs[p]

    for _ in range(len(chunk)):  # each swap narrows the widest gap: a few suffice
        hi = max(range(world), key=lambda r: (load[r], -r))
        lo = min(range(world), key=lambda r: (load[r], r))
        gap, best = load[hi] - load[lo], None
        for i, a in enumerate(ranks[hi]):
            for j, b in enumerate(ranks[lo]):
                d = cost(a) - cost(b)  # moves from hi to lo; best at half the gap
                if 0 < d < gap and (best is None or abs(gap - 2 * d) < abs(gap - 2 * best[0])):
                    best = (d, i, j)
        if best is None:
            break
        d, i, j = best
        ranks[hi][i], ranks[lo][j] = ranks[lo][j], ranks[hi][i]
        load[hi] -= d
        load[lo] += d
    return Step(tuple(tuple(r) for r in ranks))
