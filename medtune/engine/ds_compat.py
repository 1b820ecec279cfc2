"""Every use of DeepSpeed's internals, in one place, and the DeepSpeed versions medtune supports.

medtune uses DeepSpeed's public API (``deepspeed.initialize``,
``deepspeed.init_distributed``, ``deepspeed.comm``, ``deepspeed.zero``,
``deepspeed.accelerator``, ``deepspeed.utils.zero_to_fp32``, the
``deepspeed.launcher.runner`` command) directly. What it needs beyond that --
modules under ``deepspeed.runtime``/``deepspeed.checkpoint``, the engine's and
the ZeRO-3 optimizer's attributes, ``_``-prefixed methods -- is reached only
through the functions below, each written against DeepSpeed 0.19.8 and free
to change in any release. `check_version` refuses a DeepSpeed outside
`SUPPORTED` at the start of the launching process and of every rank
(tests/unit/engine/test_ds_compat.py holds the rule that no other module of medtune
touches these internals).

Not routed here: the ZeRO-3 parameter protocol (``param.ds_status``,
``.all_gather()``, ``.partition()``) that `medtune.kernels.loss` uses on a
partitioned ``lm_head`` through the public ``deepspeed.zero`` namespace; the
part ladder keeps the kernels from importing the engine.

There is no switch to run outside the range: DeepSpeed has none, nor do
transformers (``dep_version_check("deepspeed")`` raises) or accelerate; a
newer DeepSpeed is supported by widening `SUPPORTED` here and in setup.py
after the tests pass on it.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medtune.base.errors import UserError

SUPPORTED = ">=0.17,<0.20"
"""The DeepSpeed versions setup.py allows (a PEP 440 specifier)."""
PROVEN = "0.19.8"
"""The version constraints.txt pins and the test suite runs on."""


class DeepSpeedVersionError(UserError):
    """The installed DeepSpeed is outside `SUPPORTED` (or missing)."""


def installed_version() -> str | None:
    """The installed DeepSpeed's version from its package metadata (no import of deepspeed), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deepspeed")
    except PackageNotFoundError:
        return None


def check_version(installed: str | None = None) -> str:
    """Return the installed DeepSpeed version; raise `DeepSpeedVersionError` outside `SUPPORTED`.

    `installed` defaults to `installed_version()`. Local and pre-release
    suffixes count by PEP 440 (``0.19.8+cu124`` is in range, ``0.20.0rc1`` is
    not: ``<0.20`` excludes its pre-releases).
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    found = installed if installed is not None else installed_version()
    if found is None:
        raise DeepSpeedVersionError(f"DeepSpeed is not installed; medtune needs deepspeed{SUPPORTED} "
                                    f"(tested on {PROVEN}): pip install 'deepspeed{SUPPORTED}'")
    try:
        ok = SpecifierSet(SUPPORTED).contains(Version(found), prereleases=True)
    except InvalidVersion:
        ok = False
    if not ok:
        raise DeepSpeedVersionError(f"DeepSpeed {found} is installed but medtune supports deepspeed{SUPPORTED} "
                                    f"(tested on {PROVEN}); install one: pip install 'deepspeed=={PROVEN}'")
    return found


# ---------------------------------------------------------------- process group

def disable_shm_comm() -> None:
    """Keep DeepSpeed's CPU backend from JIT-compiling its shared-memory all-reduce.

    Only DeepSpeed's inference path uses it; building it takes minutes on a
    fresh machine and leaves a /dev/shm buffer per killed rank
    (``deepspeed.ops.__compatible_ops__``, read by the CPU accelerator).
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


# ---------------------------------------------------------------- optimizer and model states

def torch_optimizer(engine):
    """The torch optimizer inside the engine's ZeRO optimizer (its ``param_groups`` hold the hyperparameters)."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def unshare_adam_steps(engine) -> None:
    """Give every ZeRO-3 sub-group its own Adam step counter after a universal load.

    DeepSpeed 0.19's universal loader assigns one step tensor object to all
    sub-groups (decay and no-decay here); torch's Adam increments it in
    place once per sub-group, so the bias correction ran ahead by one step
    per extra group and the resumed run drifted (loss off by 1e-3 after 3
    steps, measured against an uninterrupted run).
    """
    import torch

    zero_optimizer = engine.optimizer
    for flat in getattr(zero_optimizer, "fp32_partitioned_groups_flat", []):
        state = zero_optimizer.optimizer.state.get(flat)
        if state and torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def zero3_state_tensors(engine) -> dict[str, list]:
    """This rank's ZeRO-3 model-state tensors by kind: ``params`` (shards and persistent
    parameters), ``master`` (fp32 partitions), ``optimizer`` (Adam moments, steps), ``grads``."""
    opt = engine.optimizer
    params = list(engine.module.parameters())
    return {
        "params": [getattr(p, "ds_tensor", None) for p in params]
                  + [p.data for p in params if getattr(p, "ds_persist", False)],
        "master": list(getattr(opt, "fp32_partitioned_groups_flat", [])),
        "optimizer": [v for state in opt.optimizer.state.values() for v in state.values()],
        "grads": [getattr(opt, "grad_partitions_flat_buffer", None)],
    }


def consolidated_16bit_state_dict(engine) -> dict:
    """The whole model's 16-bit state dict on rank 0 (a collective: every rank must call it)."""
    return engine._zero3_consolidated_16bit_state_dict()


# ---------------------------------------------------------------- checkpoints

@contextmanager
def checkpoint_writes_recorded(engine, failed: list[str], recorded) -> Iterator[None]:
    """Record, instead of raise, failures of the files DeepSpeed's ``save_checkpoint`` writes.

    DeepSpeed 0.19's ``save_checkpoint`` writes through
    ``engine.checkpoint_engine.save`` (``torch.save``) and ``.makedirs``, and
    rank 0 copies its recovery scripts (``_copy_recovery_script``) between
    barriers: a write that raised there would take its rank out of the
    remaining barriers while the others wait in them (until the collective
    timeout). Guarded, every rank runs the whole function; `recorded(failed)`
    is the context manager that turns an exception into a line of `failed`.
    """
    ce = engine.checkpoint_engine
    saved = {"save": ce.save, "makedirs": ce.makedirs}
    copy = engine.__dict__.get("_copy_recovery_script")

    def guard(fn):
        def guarded(*args, **kwargs):
            if failed:
                return None  # the checkpoint is lost already: write nothing more
            with recorded(failed):
                return fn(*args, **kwargs)
        return guarded
    ce.save, ce.makedirs = guard(ce.save), guard(ce.makedirs)
    engine._copy_recovery_script = guard(engine._copy_recovery_script)
    try:
        yield
    finally:
        ce.save, ce.makedirs = saved["save"], saved["makedirs"]
        if copy is None:
            del engine._copy_recovery_script
        else:
            engine._copy_recovery_script = copy


def universal_argv(python: str, ckpt: Path, out: Path) -> list[str]:
    """The command that converts checkpoint `ckpt` into DeepSpeed's universal form in `out`."""
    return [python, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ckpt),
            "--output_folder", str(out), "--inject_missing_state", "--num_extract_workers", "1",
            "--num_merge_workers", "1"]


# ---------------------------------------------------------------- communication log

def comm_logger():
    """DeepSpeed's process-wide communication logger (``deepspeed.comm.comm.comms_logger``)."""
    from deepspeed.comm import comm as dscomm

    return dscomm.comms_logger


def reset_comm_timer(op: str) -> None:
    """Reset the timer DeepSpeed keeps for collective `op` (each call's record sums every earlier one)."""
    from deepspeed.comm import comm as dscomm

    dscomm.timers(op).reset()


# ---------------------------------------------------------------- planning

def zero3_model_states_mem_needs(params: int, largest_layer: int, gpus_per_node: int, nodes: int,
                                 cpu_offload: bool, cpu_offload_params: bool) -> tuple[float, float]:
    """DeepSpeed's ZeRO-3 estimate of model-state bytes per node (CPU) and per GPU, with ``zero.Init``."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(params, largest_layer, gpus_per_node, nodes,
                                                        cpu_offload=cpu_offload,
                                                        cpu_offload_params=cpu_offload_params, zero_init=True)
    return cpu, gpu
