"""Rank start-up of the demo: from the moment the launcher starts the ranks to their first step.

    python benchmarks/rank_startup.py [--repeat 2] [--label NAME]

Runs ``medtune train recipes/demo.yaml train.max_steps=1 train.export=false``
in a fresh run directory (the data cache warm from a first, untimed run) and
timestamps its output as it arrives: t0 is the launcher's line that names the
rank command (``-m medtune.engine.main``; everything before it, the launcher's
own preflight, is the same work before and after issue 16), t1 is the first
line of ``metrics.jsonl`` (rank 0 logged optimizer step 1). Prints
``t1 - t0`` per repeat, the median, and the whole command's wall time. The
number depends on the machine's load: compare two checkouts side by side.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(run: Path) -> tuple[float, float]:
    """(rank start-up seconds, whole command seconds) of one demo run to step 1."""
    cmd = [sys.executable, "-m", "medtune.cli", "train", str(REPO / "recipes" / "demo.yaml"),
           "train.max_steps=1", "train.export=false", "--run-dir", str(run)]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    seen: dict[str, float] = {}
    lines: list[str] = []

    def watch_metrics():
        f = run / "metrics.jsonl"
        while proc.poll() is None and "step" not in seen:
            if f.is_file() and f.read_text().strip():
                seen["step"] = time.perf_counter()
            time.sleep(0.05)
    watcher = threading.Thread(target=watch_metrics, daemon=True)
    watcher.start()
    for line in proc.stdout:
        lines.append(line)
        if "ranks" not in seen and "medtune.engine.main" in line:
            seen["ranks"] = time.perf_counter()
    proc.wait()
    watcher.join()
    total = time.perf_counter() - began
    if proc.returncode != 0 or "ranks" not in seen or "step" not in seen:
        sys.exit("demo run failed:\n" + "".join(lines[-40:]))
    return seen["step"] - seen["ranks"], total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--label", default=str(REPO))
    p.add_argument("--no-warm-up", action="store_true", help="the data cache is warm already")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_warm_up:
            one(Path(tmp) / "warm")  # the data cache and tokenizer: built once, not timed
        got = [one(Path(tmp) / f"run{i}") for i in range(args.repeat)]
    for i, (start, total) in enumerate(got):
        print(f"{args.label}: run {i}: rank start-up to step 1 {start:.2f} s, whole command {total:.2f} s")
    print(f"{args.label}: median rank start-up {statistics.median(s for s, _ in got):.2f} s, "
          f"median whole command {statistics.median(t for _, t in got):.2f} s")


if __name__ == "__main__":
    main()
