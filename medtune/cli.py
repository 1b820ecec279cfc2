"""The ``medtune`` command: prepare | train | export.

Verbs import what they need inside, so ``medtune --help`` and recipe
validation never wait for torch, deepspeed or transformers.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from medtune import config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medtune", description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", required=True)

    prep = verbs.add_parser("prepare", help="read, tokenize and cache a recipe's data")
    prep.add_argument("recipe")
    prep.add_argument("overrides", nargs="*", metavar="key=value")

    train = verbs.add_parser("train", help="train a recipe on this machine's ranks")
    train.add_argument("recipe")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted recipe overrides, e.g. train.lr=2e-5")
    train.add_argument("--run-dir", help="run directory (default runs/<recipe>-<time>)")

    exp = verbs.add_parser("export", help="write a Hugging Face export from a run or checkpoint")
    exp.add_argument("source", help="a run directory (its newest checkpoint) or a checkpoint directory")
    exp.add_argument("--out", required=True, help="export directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"prepare": _prepare, "train": _train, "export": _export}[args.verb](args)
    except config.RecipeError as err:
        for line in err.problems:
            print(f"medtune: error: {line}", file=sys.stderr)
        return 2


def _load(args) -> config.Recipe:
    return config.load(args.recipe, args.overrides)


def _prepare(args) -> int:
    from medtune.data.prepare import prepare

    recipe = _load(args)
    began = time.perf_counter()
    prepared = prepare(recipe, args.recipe)
    took = time.perf_counter() - began
    print(f"{'cache hit' if prepared.cache_hit else 'built'}: {prepared.path} ({took:.2f}s)")
    s = prepared.stats
    print(f"{'source':<24}{'records':>9}{'tokens':>11}{'truncated':>11}{'dropped':>9}{'malformed':>11}")
    for name, st in s["sources"].items():
        print(f"{name:<24}{st['records']:>9}{st['tokens']:>11}{st['truncated']:>11}"
              f"{st['dropped']:>9}{st['malformed']:>11}")
    print(f"{s['samples']} samples, {s['tokens']} tokens, {s['packs']} packs of "
          f"{recipe.data.max_tokens}, fill {s['packing_fill']:.1%}")
    return 0


def _train(args) -> int:
    from medtune.data.prepare import prepare
    from medtune.launcher.deepspeed import execute, free_port, local_plan

    recipe = _load(args)
    run_dir = Path(args.run_dir or f"runs/{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    # Tokenizer training and tokenization happen here, once, before any rank
    # starts: a bad recipe or bad data fails now, and no collective timeout
    # can expire while ranks wait on preprocessing.
    prepare(recipe, args.recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = run_dir / "recipe.yaml"
    config.dump(recipe, resolved)
    plan = local_plan(recipe.launch.procs, resolved, run_dir, recipe.launch.master_port or free_port())
    print(f"[medtune] run directory: {run_dir}", file=sys.stderr)
    print(f"[medtune] {plan.shell()}", file=sys.stderr, flush=True)
    code = execute(plan)
    if code != 0:
        print(f"medtune: error: training exited with code {code}; see {plan.log}", file=sys.stderr)
    return code


def _export(args) -> int:
    from medtune.engine import checkpoint
    from medtune.engine.export import export_checkpoint

    src = Path(args.source).resolve()
    if (src / checkpoint.MARKER).is_file():
        ckpt, run_dir = src, src.parent.parent
    else:
        ckpt, run_dir = checkpoint.latest(src), src
        if ckpt is None:
            print(f"medtune: error: {src}: no complete checkpoint (a run directory with "
                  "checkpoints/step-*/COMPLETE, or such a checkpoint directory)", file=sys.stderr)
            return 2
    export_checkpoint(ckpt, run_dir, Path(args.out).resolve())
    print(f"exported {ckpt} -> {args.out} (verified)")
    return 0


def rank_entry(argv: list[str]) -> int:
    """Arguments of ``python -m medtune.engine.main`` (what every rank runs)."""
    p = argparse.ArgumentParser(prog="medtune.engine.main")
    p.add_argument("--recipe", required=True)
    p.add_argument("--run-dir", required=True)
    # The DeepSpeed launcher appends --local_rank=N; LOCAL_RANK carries the same.
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from medtune.engine.main import main as rank_main

    return rank_main(args.recipe, args.run_dir)


if __name__ == "__main__":
    sys.exit(main())
