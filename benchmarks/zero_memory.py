"""Benchmark 4: per-rank memory of model states under ZeRO-3, 1 rank vs 2 ranks.

Run by hand (about a minute on 2 cores):

    python benchmarks/zero_memory.py
    python benchmarks/zero_memory.py --hidden 1024 --layers 8

Trains one optimizer step of a Llama (default: 8 layers of width 512, 16k
vocabulary, 42M parameters, fp32, AdamW) with ``medtune train`` on the demo
data, once on 1 CPU rank and once on 2, and reads the model states rank 0
holds after that step, as the engine reports them
(`medtune.engine.metrics.model_state_bytes`: parameter shards plus the small
parameters every rank keeps whole, fp32 master shards, AdamW states, the
gradient-partition buffer). ZeRO-3 divides all of them by the number of
ranks except the persistent small parameters and padding, so the 2-rank
figure should be just over half the 1-rank one.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(work: Path, procs: int, hidden: int, layers: int) -> tuple[float, str]:
    tree = {
        "base": str(REPO / "recipes" / "demo.yaml"),
        "model": {"config": {"hidden_size": hidden, "intermediate_size": hidden * 11 // 4,
                             "num_hidden_layers": layers, "num_attention_heads": hidden // 64,
                             "num_key_value_heads": hidden // 64, "vocab_size": 16000}},
        "train": {"max_steps": 1, "export": False},
        "launch": {"procs": procs},
        "logging": {"progress": False, "tensorboard": False},
    }
    recipe = work / f"zero-memory-{procs}.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    run_dir = work / f"run-{procs}"
    proc = subprocess.run([sys.executable, "-m", "medtune.cli", "train", str(recipe), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"medtune train on {procs} ranks failed:\n{proc.stderr[-4000:]}")
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    log = (run_dir / "logs" / "launcher.log").read_text()
    detail = re.search(r"model states on rank 0: [^(]*\((.*)\)", log)
    return first["memory/model_states_mib"], detail.group(1) if detail else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        one, one_detail = run(Path(tmp), 1, args.hidden, args.layers)
        two, two_detail = run(Path(tmp), 2, args.hidden, args.layers)
    print(f"Llama {args.layers} x {args.hidden}, vocab 16k, fp32, AdamW, ZeRO-3 on CPU ranks\n")
    print(f"{'ranks':<7}{'model states per rank, MiB':>28}   breakdown (MiB)")
    print("-" * 100)
    print(f"{1:<7}{one:>28,.1f}   {one_detail}")
    print(f"{2:<7}{two:>28,.1f}   {two_detail}")
    print(f"\n2 ranks / 1 rank = {two / one:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
