"""Packing on the shared corpora: medtune vs padding vs TRL vs the lower bound, and FLOP balance.

Not a test: run it by hand and read the numbers.

    .venv/bin/python benchmarks/packing.py                # tiny-llama.yaml's 1000-piece tokenizer
    .venv/bin/python benchmarks/packing.py --vocab 32000  # a 32,000-piece one: shorter samples

The corpora of recipes/data/shared-corpora.yaml (../shared/data, the paper's
prompt format) are prepared as ``medtune prepare`` does, then, at 2,048 and
4,096 tokens per row:

* fill = real tokens / tokens paid for. Padding: random batches of 8 samples
  (seeded) padded to their longest sample. TRL: ``pack_dataset(strategy="bfd")``
  with its defaults (it packs each ``map`` batch of 1,000 samples apart), if
  ``trl`` is importable. medtune: ``pack`` with a pack's cost in tokens and in
  the FLOPs of Llama-2-7B and of the tiny CPU Llama. Lower bound:
  ``ceil(total / budget)`` rows;
* per-step rank FLOP imbalance, max rank FLOPs / mean rank FLOPs - 1 over
  every full step of one epoch (worst and mean), at 2 and 8 ranks with
  accumulation 1 and 4, for token-balanced packs (TRL's, or medtune's
  best-fit decreasing without TRL) and for medtune's FLOP-balanced packs;
* packing time (one process; the machine's load average is printed beside it),
  also for ``--scale`` samples (default 200,000: the corpora's lengths
  repeated, each moved by up to 20 tokens, seeded).

The key figures are ratios from the same run: medtune fill / padded fill,
and medtune fill / TRL fill.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
BUDGETS = (2048, 4096)
SHAPES = ((2, 1), (8, 1), (2, 4), (8, 4))  # (ranks, accumulation)


def shared_lengths(vocab: int) -> list[int]:
    from medtune import config
    from medtune.data.prepare import prepare

    overrides = [] if vocab == 1000 else [f"model.train_tokenizer.vocab_size={vocab}",
                                          f"model.config.vocab_size={vocab}"]
    recipe = config.load(config.RECIPES_ROOT / "data" / "shared-corpora.yaml", overrides,
                         defaults=[config.RECIPES_ROOT / "models" / "tiny-llama.yaml"])
    return list(prepare(recipe, log=lambda _: None, model_context=False).dataset["length"])


def padded_fill(lengths: Sequence[int], batch: int = 8, seed: int = 0) -> float:
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    paid = sum(len(order[i:i + batch]) * max(lengths[j] for j in order[i:i + batch])
               for i in range(0, len(order), batch))
    return sum(lengths) / paid


def trl_packs(lengths: Sequence[int], budget: int) -> tuple[list[list[int]], float] | None:
    """TRL's rows as lists of sample lengths, and the seconds it took; None without trl."""
    try:
        from datasets import Dataset, disable_progress_bars
        from trl.data_utils import pack_dataset
    except ImportError:
        return None
    disable_progress_bars()
    data = Dataset.from_dict({"input_ids": [[1] * n for n in lengths]})
    began = time.perf_counter()
    packed = pack_dataset(data, budget, strategy="bfd")
    seconds = time.perf_counter() - began
    return [list(row) for row in packed["seq_lengths"]], seconds


def imbalance(rows: list[list[int]], flops: Callable[[int], int], world: int, accum: int,
              seed: int = 0) -> tuple[float, float]:
    """(worst, mean) of max rank / mean rank - 1 over the full steps of one epoch."""
    from medtune.data.packing import plan_epoch

    row_flops = [sum(flops(n) for n in row) for row in rows]
    out = []
    for step in plan_epoch(row_flops, world * accum, world, seed, epoch=0):
        if any(p is None for r in step.slots for p in r):
            continue
        loads = [sum(row_flops[p] for p in r) for r in step.slots]
        out.append(max(loads) / (sum(loads) / world) - 1)
    return max(out), sum(out) / len(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=1000, help="tokenizer vocabulary (1000: the "
                   "recipe's own tiny tokenizer; others train one of that size first)")
    p.add_argument("--scale", type=int, default=200_000, help="also time packing this many "
                   "samples made from the corpora's lengths (0: skip)")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: the benchmark packs the shared corpora", file=sys.stderr)
        return 2
    from medtune.data.packing import _best_fit_decreasing, pack
    from medtune.models.families import FAMILIES, PUBLISHED
    from medtune.models.flops import FlopModel

    models = {"Llama-2-7B": FlopModel.from_config(PUBLISHED["meta-llama/Llama-2-7b-hf"]),
              "tiny Llama": FlopModel.from_config(FAMILIES["llama"].tiny)}
    lengths = shared_lengths(args.vocab)
    total = sum(lengths)
    print(f"shared corpora: {len(lengths):,} samples, {total:,} tokens, longest {max(lengths)}, "
          f"median {sorted(lengths)[len(lengths) // 2]} (tokenizer of {args.vocab} pieces); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")

    padded = padded_fill(lengths)
    fills: dict[tuple[str, int], float] = {}
    table: list[tuple[str, list[str]]] = [("pad to longest, random batches of 8",
                                           [f"{'-':>7} {padded:7.2%} {'-':>7}"] * len(BUDGETS))]
    rows_by: dict[tuple[str, int], list[list[int]]] = {}
    trl_line: list[str] = []
    for budget in BUDGETS:
        got = trl_packs(lengths, budget)
        if got is None:
            trl_line.append(f"{'not installed':>23}")
            rows_by[("BFD", budget)] = [[lengths[i] for i in q]
                                        for q in _best_fit_decreasing(lengths, budget)]
            continue
        rows, seconds = got
        rows_by[("TRL", budget)] = rows
        fills[("TRL", budget)] = total / (len(rows) * budget)
        trl_line.append(f"{len(rows):7d} {fills[('TRL', budget)]:7.2%} {seconds:6.2f}s")
    table.append(('TRL pack_dataset(strategy="bfd")', trl_line))
    for label, cost in [("tokens", None)] + [(f"{k} FLOPs", m.sample) for k, m in models.items()]:
        line = []
        for budget in BUDGETS:
            began = time.perf_counter()
            packs = pack(lengths, budget, cost)
            seconds = time.perf_counter() - began
            rows_by[(label, budget)] = [[lengths[i] for i in q] for q in packs]
            fills[(label, budget)] = total / (len(packs) * budget)
            line.append(f"{len(packs):7d} {fills[(label, budget)]:7.2%} {seconds:6.2f}s")
        table.append((f"medtune pack, cost = {label}", line))
    table.append(("lower bound ceil(total / budget)",
                  [f"{math.ceil(total / b):7d} {total / (math.ceil(total / b) * b):7.2%} {'-':>7}"
                   for b in BUDGETS]))

    print(f"{'':40}" + "   ".join(f"{f'{b:,} tokens per row':^23}" for b in BUDGETS))
    print(f"{'packing':40}" + "   ".join([f"{'rows':>7} {'fill':>7} {'time':>7}"] * len(BUDGETS)))
    for name, cells in table:
        print(f"{name:40}" + "   ".join(cells))
    print()
    for budget in BUDGETS:
        ours = fills[("tokens", budget)]
        versus = f"medtune fill / padded fill = {ours / padded:.2f}x"
        if ("TRL", budget) in fills:
            versus += f", medtune fill / TRL fill = {ours / fills[('TRL', budget)]:.4f}x"
        print(f"{budget:,} tokens: {versus}")

    baseline = "TRL" if ("TRL", BUDGETS[0]) in rows_by else "BFD"
    print("\nper-step rank FLOP imbalance, max rank / mean rank - 1 over the epoch's full steps "
          "(worst / mean)")
    print(f"{'FLOPs of':12}{'budget':>7}  {'packs':24}" +
          "".join(f"{f'{w} ranks x{a}':>17}" for w, a in SHAPES))
    for model_name, model in models.items():
        for budget in BUDGETS:
            for label, key in [(f"{baseline} (by tokens)", baseline),
                               ("medtune (by FLOPs)", f"{model_name} FLOPs")]:
                rows = rows_by[(key, budget)]
                cells = [imbalance(rows, model.sample, w, a) for w, a in SHAPES]
                print(f"{model_name:12}{budget:7d}  {label:24}" +
                      "".join(f"{worst:8.2%} /{mean:6.2%}" for worst, mean in cells))
    if args.scale:
        rng = random.Random(0)
        many = [min(max(n + rng.randint(-20, 20), 1), BUDGETS[0])
                for n in (lengths * -(-args.scale // len(lengths)))[:args.scale]]
        print(f"\npacking {len(many):,} samples ({sum(many):,} tokens), seconds; fill in brackets")
        costs = [("tokens", None)] + [(f"{k} FLOPs", m.sample) for k, m in models.items()]
        for label, cost in costs:
            cells = []
            for budget in BUDGETS:
                began = time.perf_counter()
                packs = pack(many, budget, cost)
                cells.append(f"{budget:,}: {time.perf_counter() - began:5.2f} s "
                             f"({sum(many) / (len(packs) * budget):.2%})")
            print(f"  cost = {label:18}" + "   ".join(cells))
        print(f"  load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
