"""The recipe's ZeRO-3 choices resolved for a world of ranks: hpZ group size, qwZ, qgZ.

`resolve` turns ``zero.hierarchy`` / ``zero.quantized_*`` into the `ZeroPlan`
every rank builds its DeepSpeed config from (`medtune.engine.zero.build_config`
turns it into DeepSpeed keys); `problems` lists what cannot work, one line
each, for the launching process's preflight. Torch-free.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from medtune.base.errors import UserError


@dataclass(frozen=True)
class ZeroPlan:
    """What a run asks DeepSpeed for, and why."""
    hierarchy: str
    """The recipe's ``zero.hierarchy`` as written (``auto``, ``off`` or a number)."""
    hpz: int
    """``zero_hpz_partition_size``: 1 is off."""
    quantized_weights: bool
    quantized_gradients: bool
    world: int
    ranks_per_node: int
    why: str

    def describe(self) -> str:
        hpz = (f"hpZ on, secondary weight shards within groups of {self.hpz} ranks" if self.hpz > 1
               else "hpZ off")
        return (f"ZeRO-3 on {self.world} ranks ({self.ranks_per_node} per node): {hpz} "
                f"(zero.hierarchy={self.hierarchy}: {self.why}); "
                f"qwZ {'on' if self.quantized_weights else 'off'}, "
                f"qgZ {'on' if self.quantized_gradients else 'off'}")


def hierarchy_size(setting: str | int, world: int, ranks_per_node: int) -> tuple[int, str]:
    """The hpZ group size of ``zero.hierarchy`` and why; ValueError for a size that cannot work.

    >>> hierarchy_size("auto", 16, 8), hierarchy_size("auto", 8, 8)[0], hierarchy_size(4, 16, 8)[0]
    ((8, '2 nodes: weights gathered within each node of 8 after the first forward'), 1, 4)
    """
    setting = normal_hierarchy(setting)
    if setting == "off" or setting == 1:
        return 1, "off"
    nodes = world // ranks_per_node if world % ranks_per_node == 0 else None
    if setting == "auto":
        if nodes is None:
            return 1, f"{world} ranks are not whole nodes of {ranks_per_node} (launch.procs)"
        if nodes == 1 or ranks_per_node == 1:
            return 1, "one node" if nodes == 1 else "one rank per node"
        return ranks_per_node, (f"{nodes} nodes: weights gathered within each node of "
                                f"{ranks_per_node} after the first forward")
    h = int(setting)
    if h < 1:
        raise ValueError("must be auto, off or a group size of at least 1")
    if ranks_per_node % h or world % h:
        raise ValueError(f"must divide the GPUs per node (launch.procs = {ranks_per_node}) and the "
                         f"world size ({world}), so that each group sits within one node; use a "
                         "divisor, auto or off")
    return h, f"groups of {h} within nodes of {ranks_per_node}"


def normal_hierarchy(setting: str | int | bool) -> str | int:
    """YAML reads ``off`` and ``on`` as booleans: false is off, true is auto."""
    if isinstance(setting, bool):
        return "auto" if setting else "off"
    return setting


def problems(recipe, where: str | Callable[[str], str], world: int, has_gpu: bool | None,
             ranks_per_node: int | None = None) -> list[str]:
    """Every problem of the recipe's ``zero`` choices on `world` ranks, one line each.

    `where` names the file (or the command line) that set a key, or maps a
    dotted key to it. `has_gpu` None means "not known here" (a launching
    host whose nodes may differ): the quantized options are then not
    checked. `ranks_per_node` defaults to ``launch.procs``.
    """
    at = where if callable(where) else (lambda _key: where)
    z = recipe.zero
    out = []
    try:
        hierarchy_size(z.hierarchy, world, ranks_per_node or recipe.launch.procs)
    except ValueError as err:
        out.append(f"{at('zero.hierarchy')}: zero.hierarchy = {normal_hierarchy(z.hierarchy)}: {err}")
    if has_gpu is False:
        for key, on, what in (("quantized_weights", z.quantized_weights, "qwZ (int8 weight all-gathers)"),
                              ("quantized_gradients", z.quantized_gradients,
                               "qgZ (int4 gradient all-to-alls)")):
            if on:
                out.append(f"{at('zero.' + key)}: zero.{key} = true: DeepSpeed's {what} runs only on "
                           f"CUDA GPUs and this machine has none; set zero.{key}=false")
    return out


def resolve(recipe, world: int, has_gpu: bool, where: str = "recipe") -> ZeroPlan:
    """The plan one rank builds its DeepSpeed config from; UserError when it cannot run here."""
    found = problems(recipe, where, world, has_gpu)
    if found:
        raise UserError("; ".join(found))
    z = recipe.zero
    hpz, why = hierarchy_size(z.hierarchy, world, recipe.launch.procs)
    return ZeroPlan(str(normal_hierarchy(z.hierarchy)), hpz, z.quantized_weights, z.quantized_gradients,
                    world, recipe.launch.procs, why)


def write_plan(run_dir: Path, zplan: ZeroPlan) -> Path:
    from medtune.base.fsutil import write_atomic

    out = run_dir / "zero_plan.json"
    write_atomic(out, json.dumps(asdict(zplan), indent=2))
    return out
