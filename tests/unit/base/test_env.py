"""Rank discovery from deepspeed/torchrun, OpenMPI and Slurm variables."""
from __future__ import annotations

import pytest

from medtune.base.ranks import DiscoveryError, discover, first_host


def test_torch_variables():
    e = discover({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                  "MASTER_ADDR": "n1", "MASTER_PORT": "1234"})
    assert (e.rank, e.world, e.local_rank, e.local_world, e.master_addr, e.master_port) == \
        (3, 4, 1, 2, "n1", 1234)
    assert e.source == "torch"


def test_deepspeed_launcher_gives_ranks_per_node_as_local_size():
    e = discover({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_SIZE": "2",
                  "MASTER_ADDR": "n1", "MASTER_PORT": "1234"})
    assert (e.local_rank, e.local_world) == (0, 2)


def test_openmpi_single_node_defaults_to_loopback():
    e = discover({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
                  "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    assert (e.rank, e.world, e.master_addr, e.source) == (1, 2, "127.0.0.1", "openmpi")


def test_slurm_step_master_from_nodelist():
    e = discover({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                  "SLURM_STEP_ID": "0", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
                  "SLURM_STEP_NODELIST": "gpu[07-08]"})
    assert (e.rank, e.world, e.local_rank, e.local_world, e.master_addr) == (5, 8, 1, 4, "gpu07")


def test_slurm_batch_script_is_not_a_rank():
    with pytest.raises(DiscoveryError, match="no launcher told this rank"):
        discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})


def test_disagreeing_sources_are_an_error():
    with pytest.raises(DiscoveryError, match="says rank 1 but"):
        discover({"RANK": "1", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0",
                  "OMPI_COMM_WORLD_SIZE": "2"})


def test_multi_node_without_master_is_an_error():
    with pytest.raises(DiscoveryError, match="MASTER_ADDR is not set"):
        discover({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4",
                  "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})


@pytest.mark.parametrize("nodes,first", [("gpu[03-05,09],cpu1", "gpu03"), ("a1", "a1"),
                                         ("node[1,4]", "node1")])
def test_first_host(nodes, first):
    assert first_host(nodes) == first


def test_mvapich_and_pmi_variables():
    e = discover({"MV2_COMM_WORLD_RANK": "2", "MV2_COMM_WORLD_SIZE": "4",
                  "MV2_COMM_WORLD_LOCAL_RANK": "0", "MV2_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "h"})
    assert (e.rank, e.world, e.local_world, e.source) == (2, 4, 2, "mvapich")
    e = discover({"PMI_RANK": "1", "PMI_SIZE": "2"})
    assert (e.rank, e.world, e.master_addr, e.source) == (1, 2, "127.0.0.1", "pmi")
