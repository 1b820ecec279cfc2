"""Who am I? Rank, world size and rendezvous from whatever started this process.

Sources, in order of precedence: torch/DeepSpeed variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``), OpenMPI (``OMPI_COMM_WORLD_*``), MVAPICH
(``MV2_COMM_WORLD_*``), MPICH/Intel MPI (``PMI_RANK``, ``PMI_SIZE``), Slurm
(``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` inside an ``srun``
step) and, when none is set and mpi4py is installed, MPI itself. Sources
that describe the same world size must agree on the rank.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from medtune.base.errors import UserError


class DiscoveryError(UserError):
    """No launcher told this process its rank, or two told it different ones."""


@dataclass(frozen=True)
class RankEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int
    master_addr: str
    master_port: int
    source: str

    def export(self) -> dict[str, str]:
        """The torch.distributed ``env://`` variables for this rank."""
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world),
                "LOCAL_RANK": str(self.local_rank), "LOCAL_WORLD_SIZE": str(self.local_world),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}


_SOURCES = {
    "torch": ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    "openmpi": ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE"),
    "mvapich": ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK",
                "MV2_COMM_WORLD_LOCAL_SIZE"),
    "pmi": ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH, Intel MPI
    "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None),
}


def discover(environ: Mapping[str, str] | None = None) -> RankEnv:
    env = os.environ if environ is None else environ
    found: list[tuple[str, int, int, int, int | None]] = []
    for name, (rk, ws, lr, lw) in _SOURCES.items():
        if rk not in env or ws not in env:
            continue
        if name == "slurm" and "SLURM_STEP_ID" not in env:
            continue  # a batch script, not one task of an srun step
        try:
            local_world = int(env[lw]) if lw and lw in env else None
            if name == "torch" and local_world is None and "LOCAL_SIZE" in env:
                local_world = int(env["LOCAL_SIZE"])  # DeepSpeed's launcher sets LOCAL_SIZE only
            if name == "slurm":
                local_world = _slurm_tasks_on_node(env)
            found.append((name, int(env[rk]), int(env[ws]), int(env.get(lr, "0")), local_world))
        except ValueError as err:
            raise DiscoveryError(f"{name} rank variables are not integers: {err}") from None
    if not found and environ is None:
        found = _from_mpi4py()
    if not found:
        raise DiscoveryError(
            "no launcher told this rank who it is: expected RANK/WORLD_SIZE (deepspeed, torchrun), "
            "OMPI_COMM_WORLD_RANK/SIZE (mpirun) or SLURM_PROCID/NTASKS (srun); "
            "start ranks with `medtune train`, `medtune launch` or `medtune slurm`")
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            if a[2] == b[2] and a[1] != b[1]:
                raise DiscoveryError(f"{a[0]} says rank {a[1]} but {b[0]} says rank {b[1]} "
                                     f"for the same world size {a[2]}")
    name, rank, world, local_rank, local_world = found[0]
    if not 0 <= rank < world:
        raise DiscoveryError(f"{name}: rank {rank} is outside world size {world}")
    local_world = local_world or world
    return RankEnv(rank, world, local_rank, local_world, _master_addr(env, name, local_world == world),
                   int(env.get("MASTER_PORT", "29500")), name)


def _from_mpi4py() -> list[tuple[str, int, int, int, int | None]]:
    """Ask MPI itself, for launchers that set none of the variables above (needs mpi4py)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return []
    world = MPI.COMM_WORLD
    if world.Get_size() == 1:
        return []  # a singleton: not started by an MPI launcher
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    return [("mpi4py", world.Get_rank(), world.Get_size(), node.Get_rank(), node.Get_size())]


def _slurm_tasks_on_node(env: Mapping[str, str]) -> int | None:
    # SLURM_STEP_TASKS_PER_NODE looks like "2(x3),1": this node's count is not
    # in it by index, but all nodes of a homogeneous step share the first one.
    text = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    m = re.match(r"(\d+)", text or "")
    return int(m.group(1)) if m else None


def _master_addr(env: Mapping[str, str], source: str, single_node: bool) -> str:
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    if source == "slurm":
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if nodes:
            return first_host(nodes)
    if single_node:
        return "127.0.0.1"
    raise DiscoveryError(f"{source}: MASTER_ADDR is not set and this job spans several nodes; "
                         "export MASTER_ADDR (the launchers of `medtune` do)")


def first_host(nodelist: str) -> str:
    """The first host of a Slurm nodelist: ``gpu[03-05,09],cpu1`` -> ``gpu03``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise DiscoveryError(f"cannot read Slurm nodelist {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first
