"""Benchmark 2: CPU training tokens/s of a tiny Llama, packed varlen rows vs padded batches.

Not a test: run it by hand and read the table (a few minutes on 2 cores).

    python benchmarks/cpu_throughput.py                     # 480 samples, rows of 2,048 tokens
    python benchmarks/cpu_throughput.py --samples 1200 --repeats 2

The samples are a seeded draw from the real corpora in ../shared/data in the
paper's prompt format (recipes/data/shared-corpora.yaml: NCBI-disease and
BC5CDR-chem NER, PubMedQA), tokenized with a 16k BPE that medtune trains on
them. The model is a Llama with 4 layers of width 256 (4 heads of 64) and a
16k vocabulary, trained in fp32 in one process with AdamW, as each variant
would train it: forward, backward and optimizer step for every batch.

Both sides see the same samples with the same number of real tokens per
optimizer step: packed rows of ``--max-tokens`` tokens (medtune's packing),
or random batches padded to their longest sample with as many samples as a
packed row holds on average (what a Trainer without packing does). Each
variant trains a fresh copy of the same initial model over all the samples;
the variants run interleaved, ``--repeats`` times, and the table reports the
mean real tokens/s (the first batch of each pass, warm-up, is not timed),
and real tokens per CPU-second of this process (steadier when other work
shares the machine; read the wall-clock column from a quiet machine).

The token-linear bound of the speed-up is packed fill / padded fill: work
proportional to tokens falls by that much. Attention and the loss head can
do better than that bound (padding's attention is quadratic in the longest
sample; a packed row's per-sample attention is not quadratic in the row).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baselines import pad_to_longest  # noqa: E402
from medtune.data.collator import collate  # noqa: E402
from medtune.data.packing import pack  # noqa: E402
from medtune.data.tokenize import IGNORE  # noqa: E402
from medtune.engine.trainer import Kernels, forward, micro_loss  # noqa: E402
from medtune.kernels.attention import Choice  # noqa: E402
from medtune.kernels.loss import ce_sum, token_ce_sum  # noqa: E402

MODEL = dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
             tie_word_embeddings=False)
VOCAB = 16000


@dataclass(frozen=True)
class Variant:
    name: str
    layout: str                     # "packed" or "padded"
    attention: str                  # attn_implementation backend
    step: Callable                  # (model, batch) -> summed loss over response tokens


def samples(n: int, max_tokens: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """A seeded draw of `n` tokenized samples of the shared corpora in the paper format."""
    import yaml

    from medtune import config
    from medtune.data.prepare import prepare

    shared = REPO.parent / "shared" / "data"
    if not shared.is_dir():
        raise SystemExit(f"{shared} is absent: this benchmark reads the shared corpora")
    tree = {"base": str(REPO / "recipes" / "data" / "shared-corpora.yaml"),
            "model": {"config": {**MODEL, "vocab_size": VOCAB}, "train_tokenizer": {"vocab_size": VOCAB}},
            "data": {"max_tokens": max_tokens}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        yaml.safe_dump(tree, fh)
        fh.flush()
        ds = prepare(config.load(fh.name), log=lambda _: None).dataset
    pick = random.Random(seed).sample(range(len(ds)), n)
    rows = ds[pick]
    return list(zip(rows["input_ids"], rows["labels"]))


def packed_batches(data, max_tokens: int):
    packs = pack([len(x) for x, _ in data], max_tokens)
    random.Random(0).shuffle(packs)
    return [collate([data[i] for i in p], pad_id=0) for p in packs]


def padded_batches(data, per_batch: int) -> list[dict]:
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    return [pad_to_longest([data[i] for i in order[start:start + per_batch]])
            for start in range(0, len(order), per_batch)]


def _padded_full(model, b):
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
    return token_ce_sum(logits, b["labels"])


def _padded_response_only(model, b):
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False,
                   logits_to_keep=b["keep"]).logits
    return ce_sum(logits, b["targets"])


def _packed_full(backend: str):
    def step(model, b):
        return token_ce_sum(forward(model, b, "cpu", Choice(backend, "bench")), b.labels)
    return step


def _packed(kernels: Kernels):
    return lambda model, b: micro_loss(model, b, "cpu", kernels)


VARIANTS = [
    Variant("padded, sdpa + mask, logits everywhere (a Trainer)", "padded", "sdpa", _padded_full),
    Variant("padded, sdpa + mask, response logits only", "padded", "sdpa", _padded_response_only),
    Variant("packed, transformers sdpa (dense row mask), all logits", "packed", "sdpa", _packed_full("sdpa")),
    Variant("packed, sdpa_varlen, all logits", "packed", "sdpa_varlen", _packed_full("sdpa_varlen")),
    Variant("packed, sdpa_varlen, response logits (medtune)", "packed", "sdpa_varlen",
            _packed(Kernels(Choice("sdpa_varlen", "bench")))),
    Variant("packed, sdpa_varlen, chunked loss", "packed", "sdpa_varlen",
            _packed(Kernels(Choice("sdpa_varlen", "bench"), loss="chunked"))),
]


def train_pass(variant: Variant, batches, init_state: dict) -> tuple[float, float, int, float]:
    """Train a fresh copy over every batch; (wall s, CPU s, timed real tokens, mean loss)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(MODEL, vocab_size=VOCAB)
    net = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                           attn_implementation=Choice(variant.attention, "b").implementation)
    net.load_state_dict(init_state)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    seconds, cpu, tokens, losses = 0.0, 0.0, 0, []
    for i, b in enumerate(batches):
        began, began_cpu = time.perf_counter(), time.process_time()
        loss = variant.step(net, b)
        n = b.n_label_tokens if variant.layout == "packed" else int((b["labels"] != IGNORE).sum())
        (loss / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first batch warms up allocators and kernels
            seconds += time.perf_counter() - began
            cpu += time.process_time() - began_cpu
            tokens += b.n_tokens if variant.layout == "packed" else b["n_tokens"]
        losses.append(loss.item() / max(n, 1))
    return seconds, cpu, tokens, sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=480)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = samples(args.samples, args.max_tokens, args.seed)
    packed = packed_batches(data, args.max_tokens)
    real = sum(len(x) for x, _ in data)
    per_row = real / len(packed) / (sum(len(x) for x, _ in data) / len(data))
    padded = padded_batches(data, max(1, round(per_row)))
    fill_packed = real / (len(packed) * args.max_tokens)
    fill_padded = real / sum(b["n_slots"] for b in padded)
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(MODEL, vocab_size=VOCAB)
    torch.manual_seed(0)
    init = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).state_dict()
    print(f"{len(data)} samples, {real} tokens ({sum(len(x) for x, _ in data) / len(data):.0f} per sample); "
          f"packed: {len(packed)} rows of {args.max_tokens}, fill {fill_packed:.1%}; padded: "
          f"{len(padded)} batches of {round(per_row)}, fill {fill_padded:.1%}; "
          f"token-linear bound {fill_packed / fill_padded:.2f}x; {args.threads} threads", flush=True)

    results: dict[str, list[tuple[float, float, int, float]]] = {v.name: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v in VARIANTS:
            results[v.name].append(train_pass(v, packed if v.layout == "packed" else padded, init))
            s, c, t, _loss = results[v.name][-1]
            print(f"  {v.name}: {t / s:,.0f} tokens/s, {t / c:,.0f} tokens/CPU-s", file=sys.stderr, flush=True)

    base = base_cpu = None
    print(f"\n{'variant':<58}{'tokens/s':>10}{'vs padded':>11}{'tokens/CPU-s':>14}{'vs padded':>11}"
          f"{'mean loss':>11}")
    print("-" * 115)
    for v in VARIANTS:
        runs = results[v.name]
        tokens = sum(t for _, _, t, _ in runs)
        speed, per_cpu = tokens / sum(r[0] for r in runs), tokens / sum(r[1] for r in runs)
        base, base_cpu = base or speed, base_cpu or per_cpu
        print(f"{v.name:<58}{speed:>10,.0f}{speed / base:>10.2f}x{per_cpu:>14,.0f}{per_cpu / base_cpu:>10.2f}x"
              f"{runs[0][3]:>11.4f}")
    print(f"\ntoken-linear bound (packed fill / padded fill): {fill_packed / fill_padded:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
