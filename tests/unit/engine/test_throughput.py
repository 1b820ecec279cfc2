"""Throughput accounting: per-rank tokens/s, TFLOP/s and MFU from the plan's FLOPs."""
from __future__ import annotations

import pytest

from medtune.engine.metrics import Throughput


def test_step_scalars_are_per_rank_and_mfu_uses_the_peak():
    perf = Throughput(world=8, peak_tflops=989.0)
    s = perf.step(tokens=8 * 4096, flops=8 * 500e12, seconds=1.0)
    assert s["perf/tokens_per_s"] == 8 * 4096
    assert s["perf/tokens_per_s_per_rank"] == 4096
    assert s["perf/tflops_per_rank"] == pytest.approx(500.0)
    assert s["perf/mfu"] == pytest.approx(500 / 989)


def test_no_mfu_without_a_peak():
    perf = Throughput(world=2, peak_tflops=None)
    assert "perf/mfu" not in perf.step(100, 1e9, 0.5)


def test_summary_leaves_out_the_first_step_and_averages_by_time():
    perf = Throughput(world=2, peak_tflops=100.0)
    assert "too few steps" in perf.summary()
    perf.step(1000, 1e15, 50.0)           # warm-up: compile, allocator; not in the summary
    perf.step(1000, 100e12, 1.0)
    perf.step(3000, 300e12, 2.0)
    line = perf.summary()
    assert "over 2 steps" in line and "1,333 tokens/s" in line and "667 per rank" in line
    assert "66.7 TFLOP/s per rank" in line and "MFU 66.7%" in line
