"""``--comm-log``: DeepSpeed's comms logger, written per optimizer step and rank.

``RUN_DIR/comm/rank-00000.jsonl`` holds one line per optimizer step::

    {"step": 2, "ops": {"all_gather_into_tensor": {"calls": 33, "bytes": 660800, "ms": 41.2},
                        "reduce_scatter_tensor": {"calls": 38, "bytes": 1763840, "ms": 93.5}, ...}}

``bytes`` sums each call's message size as the comms logger measures it,
the call's input tensor: an all-gather's shard, a reduce-scatter's whole
tensor (`medtune.planning.comm` predicts the same quantity). A step counts what ran
since the previous optimizer step ended: its forwards, backwards and the
optimizer step itself; the loss all-reduce and any checkpoint written
after a step land in the next one.
"""
from __future__ import annotations

import json
from pathlib import Path


def record_steps(engine, run_dir: Path, rank: int, start_step: int) -> Path:
    """Write this rank's collectives after every optimizer step of `engine` (``engine.step`` wrapped).

    The DeepSpeed config must enable the comms logger (`medtune.engine.zero`
    does for ``logging.comm_log``). What ran before (model construction,
    ``deepspeed.initialize``, loading a checkpoint) is dropped.
    """
    from medtune.engine import ds_compat

    logger = ds_compat.comm_logger()
    if not logger.enabled:
        raise RuntimeError("the comms logger is off: build the DeepSpeed config with logging.comm_log")
    out = run_dir / "comm" / f"rank-{rank:05d}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    logger.reset_data()
    step_once = engine.step
    counter = {"step": start_step}

    def step(*args, **kwargs):
        boundary = engine.is_gradient_accumulation_boundary()
        result = step_once(*args, **kwargs)
        if boundary:
            counter["step"] += 1
            ops = totals(logger.comms_dict)
            with open(out, "a") as fh:
                fh.write(json.dumps({"step": counter["step"], "ops": ops}) + "\n")
            # bounded memory and time on long runs: the logger keeps every call, and
            # each call's timer sums every earlier call of its op
            logger.reset_data()
            for op in ops:
                ds_compat.reset_comm_timer(op)
        return result
    engine.step = step
    return out


def totals(comms_dict: dict) -> dict[str, dict[str, float]]:
    """``{op: {message size: [calls, latencies, ...]}}`` (DeepSpeed's layout) summed per op.

    DeepSpeed 0.19.8 records as each call's latency its op timer's
    ``elapsed(reset=False)`` (deepspeed/comm/comm.py:142): the time of every
    call of that op since the timer was last reset, not of this call. So an
    op's time is its largest record, with the timers reset after each step.
    """
    out = {}
    for op, sizes in comms_dict.items():
        out[op] = {"calls": sum(v[0] for v in sizes.values()),
                   "bytes": sum(size * v[0] for size, v in sizes.items()),
                   "ms": round(max((max(v[1]) for v in sizes.values() if v[1]), default=0.0), 3)}
    return out


def read(run_dir: Path, rank: int = 0) -> list[dict]:
    """The per-step records of one rank."""
    path = run_dir / "comm" / f"rank-{rank:05d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_bytes(record: dict, ops: tuple[str, ...]) -> int:
    """Bytes of one step's record over the named ops (e.g. `medtune.planning.comm.ALL_GATHER_OPS`)."""
    return int(sum(record["ops"].get(op, {}).get("bytes", 0) for op in ops))
