"""Peak memory of the loss head, forward + backward: chunked_ce_sum vs the standard head.

Not a test: run it by hand and read the table.

    python benchmarks/loss_memory.py                  # V 32,000, 4,096 tokens, h 2,048 and 4,096, fp32, CPU
    python benchmarks/loss_memory.py --hidden 4096 --chunk-tokens 256 --threads 1
    python benchmarks/loss_memory.py --device cuda --dtype bf16

standard = ``ce_sum(hidden @ W.T, targets)``, chunked = ``chunked_ce_sum(hidden,
W, targets)`` on the same inputs. Each (hidden size, head) runs once in a fresh
subprocess, so no allocator cache or earlier peak leaks between them: it
allocates the inputs, resets the peak RSS (Linux ``/proc/self/clear_refs``),
reads its RSS, runs forward + backward, and reads its peak RSS
(``ru_maxrss``); the difference is the head's peak above its inputs.
On CUDA, ``max_memory_allocated`` above ``memory_allocated`` instead.

Both heads leave the same ``W.grad`` (``[V, h]``) behind, which no loss head
can avoid, so the table also shows the peak minus it, and the peak of a run
with ``W`` frozen (no weight gradient at any moment). The two differ for the
standard head: its peak (three ``[n, V]`` fp32 buffers, in log_softmax's
backward) comes before ``W.grad`` exists, so subtracting ``W.grad`` from it
understates it; the frozen column is the fair one. The issue's target:
chunked ≤ 0.25× standard.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def measure(head: str, tokens: int, hidden: int, vocab: int, dtype: str, device: str,
            chunk_tokens: int, threads: int, frozen: bool) -> dict:
    """One forward + backward of one head, in this (fresh) process; `frozen`: W needs no grad."""
    import torch

    from medtune.kernels.loss import auto_chunk_tokens, ce_sum, chunked_ce_sum

    torch.set_num_threads(threads)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    h = (torch.randn(tokens, hidden, generator=gen, device=device) / hidden ** 0.5).to(dt).requires_grad_()
    w = torch.nn.Parameter((torch.randn(vocab, hidden, generator=gen, device=device) * 0.02).to(dt),
                           requires_grad=not frozen)
    t = torch.randint(0, vocab, (tokens,), generator=gen, device=device)
    before = _current(device)
    began = time.perf_counter()
    if head == "standard":
        loss = ce_sum(h @ w.T, t)
    else:
        loss = chunked_ce_sum(h, w, t, chunk_tokens)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return {"peak": _peak(device) - before, "seconds": seconds, "loss": loss.item(),
            "weight_grad": 0 if frozen else w.grad.numel() * w.grad.element_size(),
            "chunk": chunk_tokens or auto_chunk_tokens(tokens, hidden, vocab)}


def _current(device: str) -> int:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    import psutil

    # ru_maxrss is a lifetime high-water mark: making the inputs (imports, random
    # temporaries) may already have raised it above what the head will need, which
    # would hide the head's own peak. Linux resets it on writing 5 to clear_refs.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("warning: cannot reset the peak RSS (/proc/self/clear_refs); small peaks may be "
              "hidden by the inputs' own", file=sys.stderr)
    return psutil.Process().memory_info().rss


def _peak(device: str) -> int:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_fresh(head: str, args: argparse.Namespace, hidden: int, frozen: bool = False) -> dict:
    """`measure` in a subprocess of its own."""
    cmd = [sys.executable, __file__, "--one", head + ("-frozen" if frozen else ""),
           "--hidden", str(hidden), "--tokens", str(args.tokens), "--vocab", str(args.vocab),
           "--dtype", args.dtype, "--device", args.device,
           "--chunk-tokens", str(args.chunk_tokens), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{head} h={hidden} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--chunk-tokens", type=int, default=0, help="0: auto_chunk_tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", choices=["standard", "chunked", "standard-frozen", "chunked-frozen"],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        sys.path.insert(0, str(REPO))
        head, _, frozen = args.one.partition("-")
        print(json.dumps(measure(head, args.tokens, args.hidden[0], args.vocab, args.dtype,
                                 args.device, args.chunk_tokens, args.threads, frozen == "frozen")))
        return

    print(f"loss head, forward + backward: {args.tokens} tokens, vocab {args.vocab}, {args.dtype}, "
          f"{args.device}, {args.threads} threads; MiB above the inputs")
    print(f"{'hidden':>6} {'head':>8} {'chunk':>5} | {'peak':>6} {'ratio':>5} | {'-W.grad':>7} {'ratio':>5} | "
          f"{'frozen W':>8} {'ratio':>5} | {'wall s':>6} {'loss':>12}")
    for hidden in args.hidden:
        runs = {head: (run_fresh(head, args, hidden), run_fresh(head, args, hidden, frozen=True))
                for head in ("standard", "chunked")}
        base, base_frozen = runs["standard"]
        for head, (r, f) in runs.items():
            chunk = "-" if head == "standard" else str(r["chunk"])
            without = r["peak"] - r["weight_grad"]
            print(f"{hidden:>6} {head:>8} {chunk:>5} | "
                  f"{r['peak'] / MiB:>6.0f} {r['peak'] / base['peak']:>5.2f} | "
                  f"{without / MiB:>7.0f} {without / (base['peak'] - base['weight_grad']):>5.2f} | "
                  f"{f['peak'] / MiB:>8.0f} {f['peak'] / base_frozen['peak']:>5.2f} | "
                  f"{r['seconds']:>6.1f} {r['loss']:>12.2f}")
    print("MiB above the inputs. peak: RSS (CUDA: allocated) peak of forward + backward.\n"
          "-W.grad: peak minus the [V, h] weight gradient both heads leave behind.\n"
          "frozen W: peak of the same head with W not requiring grad (no weight gradient at any moment).\n"
          "ratio: against standard. wall s: the trainable run.")


if __name__ == "__main__":
    main()
