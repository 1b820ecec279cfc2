"""Packing and the step plan: invariants, the documented example, determinism, and the
fill and FLOP balance reached on the shared corpora."""
from __future__ import annotations

import functools
import random

import pytest

from medtune.data.packing import _best_fit_decreasing, pack, plan_epoch
from medtune.models.families import FAMILIES, PUBLISHED
from medtune.models.flops import FlopModel
from tests.conftest import RECIPES, needs_shared_data

LLAMA2_7B = FlopModel.from_config(PUBLISHED["meta-llama/Llama-2-7b-hf"])
TINY = FlopModel.from_config(FAMILIES["llama"].tiny)


def attention_like(n: int) -> int:
    return n + n * n


def test_docstring_example():
    assert pack([6, 4, 3, 2, 1], 10) == [[0, 3], [1, 2, 4]]
    assert pack([6, 4, 3, 2, 1], 10, attention_like) == [[0], [1, 2, 3, 4]]
    assert pack([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]


def _random_lengths(seed: int) -> tuple[list[int], int]:
    rng = random.Random(seed)
    budget = rng.choice([10, 64, 512, 2048])
    top = rng.choice([budget // 4, budget // 2, budget])
    return [rng.randint(1, max(top, 1)) for _ in range(rng.randint(1, 400))], budget


@pytest.mark.parametrize("seed", range(40))
def test_every_sample_once_and_no_pack_over_budget(seed):
    lengths, budget = _random_lengths(seed)
    for cost in (None, attention_like, TINY.sample):
        packs = pack(lengths, budget, cost)
        assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
        assert all(p and sum(lengths[i] for i in p) <= budget for p in packs)
        assert packs == sorted(sorted(p) for p in packs)
    # never more packs than best-fit decreasing, within 11/9 of the lower bound
    tokens_only = pack(lengths, budget)
    assert len(tokens_only) <= len(_best_fit_decreasing(lengths, budget))
    assert len(tokens_only) <= 11 / 9 * -(-sum(lengths) // budget) + 1


@pytest.mark.parametrize("seed", range(5))
def test_packing_is_deterministic(seed):
    lengths, budget = _random_lengths(seed)
    assert pack(lengths, budget, TINY.sample) == pack(tuple(lengths), budget, TINY.sample)


def test_refusals_say_what_is_wrong():
    with pytest.raises(ValueError, match="sample 1 has 600 tokens, more than max_tokens=512"):
        pack([10, 600], 512)
    with pytest.raises(ValueError, match="sample 0 has 0 tokens"):
        pack([0, 3], 512)
    with pytest.raises(ValueError, match="cost must not fall as samples grow"):
        pack([3, 5], 512, lambda n: -n)
    assert pack([], 512) == []


@pytest.mark.parametrize("world,accum", [(1, 1), (2, 2), (3, 1), (8, 4)])
def test_plan_uses_every_pack_once_per_epoch(world, accum):
    costs = [random.Random(1).randint(100, 512) for _ in range(37)]
    steps = plan_epoch(costs, world * accum, world, seed=3, epoch=0)
    used = [p for s in steps for slots in s.slots for p in slots if p is not None]
    assert sorted(used) == list(range(37))
    assert all(len(s.slots) == world and all(len(r) == accum for r in s.slots) for s in steps)
    empty = sum(p is None for s in steps for r in s.slots for p in r)
    assert empty == len(steps) * world * accum - 37


def test_plan_is_seeded_and_reshuffled_per_epoch():
    costs = list(range(100, 140))
    a = plan_epoch(costs, 4, 2, seed=0, epoch=0)
    assert a == plan_epoch(costs, 4, 2, seed=0, epoch=0)
    assert a != plan_epoch(costs, 4, 2, seed=0, epoch=1)
    assert a != plan_epoch(costs, 4, 2, seed=1, epoch=0)


def test_ranks_get_balanced_costs_within_a_step():
    costs = [512, 500, 100, 90, 480, 60, 470, 50]
    (step,) = plan_epoch(costs, 8, 2, seed=0, epoch=0)
    loads = [sum(costs[p] for p in r) for r in step.slots]
    assert abs(loads[0] - loads[1]) <= 50


def test_steps_hold_the_same_packs_whatever_the_world_size():
    costs = [random.Random(i).randint(50, 512) * 1e9 for i in range(41)]
    by_world = {w: plan_epoch(costs, 8, w, seed=5, epoch=2) for w in (1, 2, 4, 8)}
    ref = [sorted(p for r in s.slots for p in r if p is not None) for s in by_world[1]]
    for w, steps in by_world.items():
        assert [sorted(p for r in s.slots for p in r if p is not None) for s in steps] == ref, w
        assert all(len(s.slots) == w and len(s.slots[0]) == 8 // w for s in steps)


def test_uneven_sharing_is_refused():
    with pytest.raises(ValueError, match="cannot be shared by 3 ranks"):
        plan_epoch([10] * 8, 4, 3, seed=0, epoch=0)


def test_a_quadratic_cost_gives_packs_of_long_samples_fewer_tokens():
    lengths = [6, 4, 3, 2, 1]
    costs = lambda packs: [sum(attention_like(lengths[i]) for i in p) for p in packs]
    tokens = lambda packs: [sum(lengths[i] for i in p) for p in packs]
    flat, weighted = pack(lengths, 10), pack(lengths, 10, attention_like)
    assert tokens(flat) == [8, 8] and costs(flat) == [48, 34]
    assert tokens(weighted) == [6, 10] and costs(weighted) == [42, 40]


# --- the shared corpora (the paper's prompt format, tokenizer of models/tiny-llama.yaml) ---

@functools.lru_cache(maxsize=None)
def shared_lengths() -> tuple[int, ...]:
    from medtune import config
    from medtune.data.prepare import prepare

    recipe = config.load(RECIPES / "data" / "shared-corpora.yaml",
                         defaults=[RECIPES / "models" / "tiny-llama.yaml"])
    return tuple(prepare(recipe, log=lambda _: None, model_context=False).dataset["length"])


@functools.lru_cache(maxsize=None)
def shared_packs(budget: int, model: str) -> list[list[int]]:
    cost = {"tokens": None, "llama2-7b": LLAMA2_7B.sample, "tiny": TINY.sample}[model]
    return pack(shared_lengths(), budget, cost)


def step_imbalance(packs: list[list[int]], flops: FlopModel, world: int, accum: int) -> float:
    """Worst max-rank / mean-rank FLOPs - 1 over the epoch's full steps."""
    lengths = shared_lengths()
    pack_flops = [flops.pack(lengths[i] for i in p) for p in packs]
    worst = 0.0
    for step in plan_epoch(pack_flops, world * accum, world, seed=0, epoch=0):
        if any(p is None for r in step.slots for p in r):
            continue
        loads = [sum(pack_flops[p] for p in r) for r in step.slots]
        worst = max(worst, max(loads) / (sum(loads) / world) - 1)
    return worst


@needs_shared_data()
@pytest.mark.parametrize("model", ["tokens", "llama2-7b", "tiny"])
@pytest.mark.parametrize("budget", [2048, 4096])
def test_shared_corpora_fill(budget, model):
    lengths = shared_lengths()
    packs = shared_packs(budget, model)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in p) <= budget for p in packs)
    assert sum(lengths) / (len(packs) * budget) >= 0.997


@needs_shared_data()
@pytest.mark.parametrize("world,accum", [(2, 1), (8, 1), (2, 4), (8, 4)])
@pytest.mark.parametrize("budget", [2048, 4096])
def test_shared_corpora_rank_flops_within_2_percent_llama2_7b(budget, world, accum):
    assert step_imbalance(shared_packs(budget, "llama2-7b"), LLAMA2_7B, world, accum) <= 0.02


@needs_shared_data()
@pytest.mark.parametrize("budget,world,accum", [
    (4096, 2, 1), (4096, 8, 1), (4096, 2, 4), (4096, 8, 4), (2048, 2, 4), (2048, 8, 4)])
def test_shared_corpora_rank_flops_within_2_percent_tiny_model(budget, world, accum):
    assert step_imbalance(shared_packs(budget, "tiny"), TINY, world, accum) <= 0.02


@needs_shared_data()
def test_tiny_model_at_2048_one_sample_outweighs_the_mean_pack():
    # Why accumulation 1 at 2,048 tokens is not held to 2% for the tiny model: its longest
    # sample alone costs more than the mean pack, so the step holding it is out of
    # balance however the samples are packed (and token-only packing is far worse).
    lengths = shared_lengths()
    packs = shared_packs(2048, "tiny")
    mean_pack = sum(TINY.sample(n) for n in lengths) / len(packs)
    assert TINY.sample(max(lengths)) > 1.05 * mean_pack
    by_tokens = shared_packs(2048, "tokens")
    assert step_imbalance(packs, TINY, 8, 1) < step_imbalance(by_tokens, TINY, 8, 1)
