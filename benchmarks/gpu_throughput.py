"""Benchmark 5: tokens/s and MFU of a ~1B Llama on one GPU, per attention backend, packed vs padded.

Run by hand on a GPU machine (CUDA, bf16; ``pip install -e '.[flash]'`` for flash-attn):

    python benchmarks/gpu_throughput.py                      # 16 layers, rows of 8,192 tokens
    python benchmarks/gpu_throughput.py --tokens 4096 --steps 20

The model has Llama-3.2-1B's shape (hidden 2,048, 16 layers, 32 heads of 64,
8 KV heads, MLP 8,192) with a 32k vocabulary: 1.1B parameters. It trains in
bf16 (weights, gradients and AdamW states; fused AdamW) with activation
checkpointing off. Sample lengths follow an instruction-tuning profile (a
seeded log-normal, median ~250 tokens, up to 4,096), token ids are random:
throughput does not depend on them.

Every variant sees the same real tokens per step: packed rows of ``--tokens``
tokens through each varlen backend and through transformers' sdpa (dense row
mask), or padded batches of as many samples (sdpa with a padding mask). The
table gives real tokens/s, model TFLOP/s (`medtune.flops`: 6 x weights per
token plus causal attention per sample, recomputation not counted) and MFU
against the device's dense bf16 peak (`--peak-tflops` to override), and
the ratio to padded batches measured in the same run.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baselines import pad_to_longest  # noqa: E402
from medtune.data.collator import collate  # noqa: E402
from medtune.data.packing import pack  # noqa: E402
from medtune.data.tokenize import IGNORE  # noqa: E402
from medtune.engine.trainer import Kernels, micro_loss  # noqa: E402
from medtune.flops import FlopModel, peak_tflops  # noqa: E402
from medtune.kernels.attention import VARLEN, Choice, unavailable  # noqa: E402
from medtune.kernels.loss import ce_sum  # noqa: E402

SHAPE = dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=32000, max_position_embeddings=8192,
             tie_word_embeddings=False)


def lengths(n: int, longest: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [max(16, min(longest, int(rng.lognormvariate(5.5, 0.8)))) for _ in range(n)]


def samples(lens: list[int], vocab: int) -> list[tuple[list[int], list[int]]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in lens:
        ids = torch.randint(3, vocab, (n,), generator=gen).tolist()
        prompt = n // 2  # loss on the second half, like a response
        out.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def model(layers: int, backend: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(SHAPE, num_hidden_layers=layers)
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                           attn_implementation=Choice(backend, "b").implementation,
                                           dtype=torch.bfloat16).cuda()
    net.config.use_cache = False
    return net, cfg


def padded_batches(data, per_batch: int) -> list[dict]:
    out = []
    for start in range(0, len(data), per_batch):
        b = pad_to_longest(data[start:start + per_batch])
        out.append({k: v.cuda() if torch.is_tensor(v) else v for k, v in b.items()})
    return out


def run(net, batches, step_fn, warmup: int, steps: int) -> tuple[float, list]:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5, fused=True)
    used = []
    for i in range(warmup + steps):
        b = batches[i % len(batches)]
        if i == warmup:
            torch.cuda.synchronize()
            began = time.perf_counter()
        loss = step_fn(net, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            used.append(b)
    torch.cuda.synchronize()
    return time.perf_counter() - began, used


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--tokens", type=int, default=8192, help="tokens per packed row")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: benchmark 5 needs one")
        return 0
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(name)
    lens = lengths(4000, min(4096, args.tokens))
    data = samples(lens, SHAPE["vocab_size"])
    packs = pack(lens, args.tokens)[: args.warmup + args.steps]
    rows = [collate([data[i] for i in p_], pad_id=0) for p_ in packs]
    per_row = sum(r.n_samples for r in rows) / len(rows)
    padded_data = [data[i] for p_ in packs for i in p_]
    padded = padded_batches(padded_data, max(1, round(per_row)))
    _, cfg = model(1, "sdpa")  # the config only
    from transformers import AutoConfig

    flops = FlopModel.from_config(AutoConfig.for_model("llama", **cfg))
    print(f"{name}: Llama {args.layers} layers x 2048, vocab 32k, bf16; rows of {args.tokens} tokens "
          f"({per_row:.1f} samples each), padded batches of {round(per_row)}; peak "
          f"{peak or 'unknown'} TFLOP/s")
    print(f"\n{'variant':<44}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'vs padded':>11}")
    print("-" * 82)

    def packed_step(backend):
        kernels = Kernels(Choice(backend, "bench"))
        return lambda net, b: micro_loss(net, b, "cuda", kernels) / max(b.n_label_tokens, 1)

    def padded_step(net, b):
        logits = net(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False,
                     logits_to_keep=b["keep"]).logits
        return ce_sum(logits, b["targets"]) / max(len(b["targets"]), 1)

    variants = [("padded, sdpa + padding mask", "sdpa", padded, padded_step)]
    for backend in (*VARLEN, "sdpa"):
        reason = unavailable(backend, torch.device("cuda"), torch.bfloat16, 64)
        label = f"packed, {backend}" + (" (dense row mask)" if backend == "sdpa" else "")
        if reason:
            print(f"{label:<44}  skipped: {reason}")
            continue
        variants.append((label, backend, rows, packed_step(backend)))
    base = None
    for label, backend, batches, step_fn in variants:
        net, _ = model(args.layers, backend)
        seconds, used = run(net, batches, step_fn, args.warmup, args.steps)
        if isinstance(used[0], dict):
            tokens = sum(sum(b["lengths"]) for b in used)
            work = sum(flops.pack(b["lengths"]) for b in used)
        else:
            tokens = sum(b.n_tokens for b in used)
            work = sum(flops.pack([int(x) for x in torch.diff(b.cu_seqlens).tolist()]) for b in used)
        speed, tflops = tokens / seconds, work / seconds / 1e12
        base = base or speed
        mfu = f"{tflops / peak:6.1%}" if peak else "     -"
        print(f"{label:<44}{speed:>11,.0f}{tflops:>9.1f} {mfu}{speed / base:>10.2f}x", flush=True)
        del net
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
