"""Fixtures for the integration tests: the shared baseline run; real Slurm, OpenMPI and pdsh over
ssh (tests/integration/infra.py).

Registered here, once: a session fixture imported into several test modules would be
instantiated once per module (one Slurm each, one baseline run each).

`baseline_run` is ONE real 2-rank training run of `baseline_recipe` (helpers.baseline_recipe_tree),
trained the first time a test asks for it and shared by every test of the session that trains
the same recipe on the same world (tests/integration/test_resume.py, test_launching.py) as the
reference they compare with. It is read-only: after each test that used it, its files are
checked against their SHA-256 digests taken when it finished, and a test that changed
anything fails at teardown. A test that needs to change a run copies it first.

It also counts the training launches each test file starts (`medtune train|launch`,
`medtune slurm --submit`, a bare `medtune.engine.main` under mpirun) and prints the
counts at the end of the session, so a change to the tests' cost is a number.
"""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.helpers import baseline_recipe_tree, changed_paths, medtune, tree_digest, write_recipe
from tests.integration.infra import loopback_sshd, openmpi, slurm_cluster  # noqa: F401


@pytest.fixture(scope="session")
def baseline_recipe(tmp_path_factory) -> Path:
    """The shared baseline's recipe file (tiny.yaml: a run started without --run-dir goes to runs/tiny)."""
    return write_recipe(tmp_path_factory.mktemp("baseline") / "tiny.yaml", baseline_recipe_tree())


@pytest.fixture(scope="session")
def _baseline_trained(baseline_recipe) -> tuple[Path, dict[str, str]]:
    run = baseline_recipe.parent / "run"
    medtune("train", str(baseline_recipe), "--run-dir", str(run))
    return run, tree_digest(run)


_CHANGED_BY: dict[Path, str] = {}  # a shared run -> the test that changed it


@pytest.fixture
def baseline_run(_baseline_trained, request) -> Path:
    """The run directory of the shared baseline run (read-only: the test fails if it changes it,
    and every later test that asks for it fails at set-up: it is no longer the reference)."""
    run, digest = _baseline_trained
    if run in _CHANGED_BY:
        pytest.fail(f"the shared baseline run {run} was changed by {_CHANGED_BY[run]}")
    yield run
    changed = changed_paths(run, digest)
    if changed:
        _CHANGED_BY[run] = request.node.nodeid
        pytest.fail(f"the test changed the shared baseline run {run} ({', '.join(changed[:5])}); "
                    "copy a run before changing it")


_LAUNCHES: Counter[str] = Counter()
_current_file = ["(outside a test)"]


def training_launch(argv) -> bool:
    """Whether a child's argv starts training ranks: `medtune train|launch` (not --dry-run),
    `medtune slurm ... --submit`, `medtune.engine.main` itself, or a shell script running one."""
    if isinstance(argv, (str, bytes)):
        argv = [argv]
    words = [str(a) for a in argv]
    if "-c" in words[:-1]:  # `sh -c SCRIPT` (the full-disk test runs `medtune train` in a namespace)
        script = words[words.index("-c") + 1]
        return "medtune.cli train" in script or "medtune.cli launch" in script
    if "medtune.engine.main" in words:
        return True
    if "medtune.cli" not in words or "--dry-run" in words:
        return False
    verb = words[words.index("medtune.cli") + 1:words.index("medtune.cli") + 2]
    return verb in (["train"], ["launch"]) or (verb == ["slurm"] and "--submit" in words)


_popen_init = subprocess.Popen.__init__


def _counting_init(self, args, *rest, **kwargs):
    if training_launch(args):
        _LAUNCHES[_current_file[0]] += 1
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _counting_init


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current_file[0] = item.nodeid.split("::")[0]
    yield


def pytest_terminal_summary(terminalreporter):
    if _LAUNCHES:
        terminalreporter.section("training launches started (medtune train/launch/slurm --submit/engine.main)")
        for name, n in sorted(_LAUNCHES.items()):
            terminalreporter.write_line(f"{n:4d}  {name}")
        terminalreporter.write_line(f"{sum(_LAUNCHES.values()):4d}  in all")
