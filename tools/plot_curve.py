"""Plot a run's learning curve from RUN/metrics.jsonl: training loss per step, eval/loss at each evaluation.

    python tools/plot_curve.py runs/demo [--out runs/demo/learning_curve.png]

The best checkpoint (``RUN/checkpoints/best``, ``train.best_metric``) is marked when the run has one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train/loss) and (step, eval/loss) pairs of `run`'s metrics.jsonl, in step order."""
    train, evals = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train/loss" in row:
            train.append((row["step"], row["train/loss"]))
        if "eval/loss" in row:
            evals.append((row["step"], row["eval/loss"]))
    return train, evals


def plot(run: Path, out: Path, title: str | None = None) -> Path:
    """Write the learning curve of `run` to `out` (PNG); returns `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train, evals = read(run)
    if not train:
        raise SystemExit(f"{run / 'metrics.jsonl'}: no train/loss rows to plot")
    fig = Figure(figsize=(6, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(*zip(*train), color="tab:blue", linewidth=1, label="train/loss (per step)")
    if evals:
        ax.plot(*zip(*evals), color="tab:orange", marker="o", markersize=4, label="eval/loss (validation)")
    best = run / "checkpoints" / "best"
    if best.exists():
        step = int(best.resolve().name.removeprefix("step-"))
        ax.axvline(step, color="tab:green", linestyle="--", linewidth=1, label=f"best checkpoint (step {step})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per response token")
    ax.set_title(title or run.name, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run directory holding metrics.jsonl")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN/learning_curve.png)")
    p.add_argument("--title", help="figure title (default: the run directory's name)")
    args = p.parse_args(argv)
    out = plot(args.run, args.out or args.run / "learning_curve.png", args.title)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
