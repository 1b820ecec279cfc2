"""Benchmark 5: tokens/s and MFU of a ~1B Llama on one GPU, per attention backend, packed vs padded,
and the same training step without and with a 1-rank DeepSpeed ZeRO-3 engine.

Run by hand on a GPU machine (CUDA, bf16; ``pip install -e '.[flash]'`` for flash-attn):

    python benchmarks/gpu_throughput.py                      # 16 layers, rows of 8,192 tokens
    python benchmarks/gpu_throughput.py --tokens 4096 --steps 20 --json bench.json
    python benchmarks/gpu_throughput.py --device cpu --layers 1 --hidden 64 --vocab 1000 --tokens 512

The model has Llama-3.2-1B's shape (hidden 2,048, 16 layers, 32 heads of 64,
8 KV heads, MLP 8,192) with a 32k vocabulary: 1.1B parameters (``--hidden``
scales it down: heads of 64, a quarter as many KV heads, MLP 4 x hidden). It
trains in bf16 on a GPU (fp32 on the CPU) with AdamW (fused on the GPU) and
activation checkpointing off. Sample lengths follow an instruction-tuning
profile (a seeded log-normal, median ~250 tokens, up to 4,096), token ids are
random: throughput does not depend on them.

Every variant sees the same real tokens per step: packed rows of ``--tokens``
tokens through each varlen backend and through transformers' sdpa (dense row
mask), or padded batches of as many samples (sdpa with a padding mask). The
table gives real tokens/s, model TFLOP/s (`medtune.models.flops`: 6 x weights per
token plus causal attention per sample, recomputation not counted) and MFU
against the device's dense bf16 peak (`--peak-tflops` to override), and
the ratio to padded batches measured in the same run.

The last row is the fastest packed backend's step through a DeepSpeed ZeRO-3
engine on one rank, built as ``medtune train`` builds it (`medtune.engine.zero`
config, `medtune.engine.model.build` under ``zero.Init``, `trainer.micro_loss`,
``engine.backward``/``engine.step``), printed beside the plain PyTorch step of
the same backend: their ratio is the engine's own overhead (parameter gather
and release hooks, gradient partitioning, bf16 with fp32 master weights and
AdamW states where the plain step keeps all in bf16). ``--no-engine`` leaves it out.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baselines import pad_to_longest  # noqa: E402
from medtune.data.collator import collate  # noqa: E402
from medtune.data.packing import pack  # noqa: E402
from medtune.data.tokenize import IGNORE  # noqa: E402
from medtune.engine.trainer import Kernels, micro_loss  # noqa: E402
from medtune.models.flops import FlopModel, peak_tflops  # noqa: E402
from medtune.kernels.attention import VARLEN, Choice, unavailable  # noqa: E402
from medtune.kernels.loss import ce_sum  # noqa: E402

SHAPE = dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=32000, max_position_embeddings=8192,
             tie_word_embeddings=False)


def shape(layers: int, hidden: int = 2048, vocab: int = 32000) -> dict:
    """Llama-3.2-1B's shape (``SHAPE``) with `layers` layers, scaled to `hidden` (heads of 64)."""
    if hidden == SHAPE["hidden_size"]:
        cfg = dict(SHAPE)
    else:
        heads = max(1, hidden // 64)
        cfg = dict(SHAPE, hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=heads,
                   num_key_value_heads=max(1, heads // 4), head_dim=hidden // heads)
    return dict(cfg, num_hidden_layers=layers, vocab_size=vocab)


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


def model(cfg: dict, backend: str, device: torch.device, dtype: torch.dtype):
    """The model of `cfg`, built (and randomly initialised) directly on `device`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(cfg)
    torch.manual_seed(0)
    with device:
        net = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                               attn_implementation=Choice(backend, "b").implementation,
                                               dtype=dtype)
    net.config.use_cache = False
    return net


def padded_batches(data, per_batch: int, device) -> list[dict]:
    out = []
    for start in range(0, len(data), per_batch):
        b = pad_to_longest(data[start:start + per_batch])
        out.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()})
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(net, batches, step_fn, warmup: int, steps: int, device: torch.device) -> tuple[float, list]:
    """Seconds of `steps` plain PyTorch optimizer steps, and the batches they used.

    The warm-up (`warmup` steps, at least one pass over `batches`) sees every
    batch the timed steps see: per-shape set-up (kernel choice, primitive
    caches) stays out of the numbers, and no variant profits from one run before it.
    """
    warmup = max(warmup, len(batches))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5, fused=device.type == "cuda" or None)
    used = []
    for i in range(warmup + steps):
        b = batches[i % len(batches)]
        if i == warmup:
            _sync(device)
            began = time.perf_counter()
        loss = step_fn(net, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            used.append(b)
    _sync(device)
    return time.perf_counter() - began, used


def run_engine(cfg: dict, backend: str, batches, warmup: int, steps: int, device: torch.device,
               dtype: torch.dtype) -> tuple[float, list]:
    """As `run`, through a 1-rank DeepSpeed ZeRO-3 engine built the way ``medtune train`` builds it."""
    warmup = max(warmup, len(batches))
    import deepspeed

    from medtune import config
    from medtune.engine import model as mt_model
    from medtune.engine import zero

    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("LOCAL_RANK", "0"),
                       ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        from medtune.launcher.run import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    if device.type == "cpu":  # as medtune.engine.main does on CPU ranks
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    recipe = config.load(config.RECIPES_ROOT / "demo.yaml", ["train.grad_accum=1", "launch.procs=1"])
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                               auto_mpi_discovery=False)
    model_cfg = config.ModelConfig(config=dict(cfg), dtype="bf16" if dtype == torch.bfloat16 else "fp32")
    ds_cfg = zero.build_config(recipe, 1, cfg["hidden_size"], dtype == torch.bfloat16, grad_accum=1)
    net = mt_model.build(model_cfg, ds_cfg, dtype, Choice(backend, "b").implementation)
    opt = torch.optim.AdamW(mt_model.param_groups(net, 0.0), lr=1e-5, fused=device.type == "cuda" or None)
    kernels = Kernels(Choice(backend, "bench"))
    used, engine = [], None
    try:
        engine, *_ = deepspeed.initialize(model=net, optimizer=opt, config=ds_cfg)
        for i in range(warmup + steps):
            b = batches[i % len(batches)]
            if i == warmup:
                _sync(device)
                began = time.perf_counter()
            engine.backward(micro_loss(engine, b, engine.device, kernels) / max(b.n_label_tokens, 1))
            engine.step()
            if i >= warmup:
                used.append(b)
        _sync(device)
        return time.perf_counter() - began, used
    finally:
        if engine is not None:
            engine.destroy()
        del engine, net, opt
        import deepspeed.comm as dist

        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default; bf16) or cpu (fp32: a rehearsal of the benchmark, no speed claim)")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048, help="hidden size (heads of 64; default 2048)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tokens", type=int, default=8192, help="tokens per packed row")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--no-engine", action="store_true", help="leave out the DeepSpeed ZeRO-3 engine row")
    p.add_argument("--json", metavar="PATH", help="also write every number to PATH as JSON")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.distributed's renamed collectives
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: benchmark 5 needs one (or --device cpu for a rehearsal)")
        return 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    cfg = shape(args.layers, args.hidden, args.vocab)
    lens = lengths(4000, min(4096, args.tokens))
    data = samples(lens, cfg["vocab_size"])
    packs = pack(lens, args.tokens)[: args.steps]
    rows = [collate([data[i] for i in p_], pad_id=0) for p_ in packs]
    per_row = sum(r.n_samples for r in rows) / len(rows)
    padded_data = [data[i] for p_ in packs for i in p_]
    padded = padded_batches(padded_data, max(1, round(per_row)), device)
    from transformers import AutoConfig

    flops = FlopModel.from_config(AutoConfig.for_model("llama", **{k: v for k, v in cfg.items()
                                                                   if k != "model_type"}))
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    n_params = flops.linear_per_token // 6 + cfg["vocab_size"] * cfg["hidden_size"]
    print(f"{name}: Llama {args.layers} layers x {cfg['hidden_size']}, vocab {cfg['vocab_size']}, "
          f"{str(dtype).removeprefix('torch.')}, {n_params / 1e9:.2f}B weights; rows of {args.tokens} "
          f"tokens ({per_row:.1f} samples each), padded batches of {round(per_row)}; peak "
          f"{peak or 'unknown'} TFLOP/s; {args.steps} timed steps after a warm-up of at least "
          f"{args.warmup} steps and one pass over the same rows")
    print(f"\n{'variant':<44}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'vs padded':>11}")
    print("-" * 82)

    def packed_step(backend):
        kernels = Kernels(Choice(backend, "bench"))
        return lambda net, b: micro_loss(net, b, device, kernels) / max(b.n_label_tokens, 1)

    def padded_step(net, b):
        # lm_head on the positions that predict a label only, as the packed rows do (a boolean
        # 2-D logits_to_keep would do the same, but transformers 5.17 does not read one)
        hidden = net.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           use_cache=False).last_hidden_state
        return ce_sum(net.lm_head(hidden[b["keep"]]), b["targets"]) / max(len(b["targets"]), 1)

    variants = [("padded, sdpa + padding mask", "sdpa", padded, padded_step)]
    skipped = {}
    for backend in (*VARLEN, "sdpa"):
        reason = unavailable(backend, device, dtype, head_dim)
        label = f"packed, {backend}" + (" (dense row mask)" if backend == "sdpa" else "")
        if reason:
            print(f"{label:<44}  skipped: {reason}")
            skipped[backend] = reason
            continue
        variants.append((label, backend, rows, packed_step(backend)))
    fastest = next(b for b in VARLEN if b not in skipped)  # VARLEN lists the fastest first
    if not args.no_engine:
        variants.append((f"packed, {fastest}, DeepSpeed ZeRO-3 engine", fastest, rows, None))
    base, results = None, []

    def measure(used, seconds):
        if isinstance(used[0], dict):
            return (sum(sum(b["lengths"]) for b in used), sum(flops.pack(b["lengths"]) for b in used))
        return (sum(b.n_tokens for b in used),
                sum(flops.pack([int(x) for x in torch.diff(b.cu_seqlens).tolist()]) for b in used))

    for label, backend, batches, step_fn in variants:
        try:
            if step_fn is None:
                seconds, used = run_engine(cfg, backend, batches, args.warmup, args.steps, device, dtype)
            else:
                net = model(cfg, backend, device, dtype)
                seconds, used = run(net, batches, step_fn, args.warmup, args.steps, device)
        except Exception as err:  # noqa: BLE001 (one variant failing, out of memory say, is its row)
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            print(f"{label:<44}  failed: {type(err).__name__}: {first}", flush=True)
            results.append({"variant": label, "backend": backend, "engine": step_fn is None,
                            "packed": batches is rows, "error": f"{type(err).__name__}: {err}"[:1000]})
            continue
        finally:
            net = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        tokens, work = measure(used, seconds)
        speed, tflops = tokens / seconds, work / seconds / 1e12
        if batches is padded:
            base = speed
        mfu = f"{tflops / peak:6.1%}" if peak else "     -"
        ratio_text = f"{speed / base:>10.2f}x" if base else "         -"
        print(f"{label:<44}{speed:>11,.0f}{tflops:>9.1f} {mfu}{ratio_text}", flush=True)
        results.append({"variant": label, "backend": backend, "engine": step_fn is None,
                        "packed": batches is rows, "tokens": tokens, "seconds": seconds,
                        "tokens_per_s": speed, "tflops": tflops, "mfu": tflops / peak if peak else None,
                        "vs_padded": speed / base if base else None})
    plain = next((r for r in results if r["backend"] == fastest and r["packed"] and not r["engine"]
                  and "error" not in r), None)
    engine = next((r for r in results if r["engine"] and "error" not in r), None)
    ratio = engine["tokens_per_s"] / plain["tokens_per_s"] if engine and plain else None
    if device.type == "cpu":
        print("\n(on a CPU this rehearses the benchmark: tiny steps timed on shared cores are no measurement)")
    if ratio is not None:
        print(f"\nDeepSpeed ZeRO-3 engine vs the plain PyTorch step ({fastest}, same rows, same run): "
              f"{engine['tokens_per_s']:,.0f} / {plain['tokens_per_s']:,.0f} tokens/s = {ratio:.3f} "
              f"(engine overhead {1 / ratio - 1:+.1%} time per step)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "dtype": str(dtype).removeprefix("torch."), "peak_tflops": peak,
            "model": cfg, "weights": n_params, "tokens_per_row": args.tokens, "samples_per_row": per_row,
            "warmup": args.warmup, "steps": args.steps, "skipped": skipped, "variants": results,
            "engine_vs_plain": ratio, "engine_backend": fastest}, indent=2) + "\n")
    failed = [r["variant"] for r in results if "error" in r]
    if failed:
        print(f"\nfailed: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
