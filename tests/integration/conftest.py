"""Fixtures for the integration tests: real Slurm, OpenMPI and pdsh over ssh (tests/integration/infra.py).

Registered here, once: a session fixture imported into several test modules would be
instantiated once per module (one Slurm each).
"""
from tests.integration.infra import loopback_sshd, openmpi, slurm_cluster  # noqa: F401
