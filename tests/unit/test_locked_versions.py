"""The environment the suite runs in is the one constraints.txt records."""
from __future__ import annotations


def test_the_installed_packages_are_the_locked_ones():
    """`make test` installs constraints.txt; a version that floated away must be proven, then locked."""
    from importlib.metadata import PackageNotFoundError, version

    from tests.conftest import REPO

    drift = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, pinned = line.split("==")
        try:
            installed = version(name).split("+")[0]
        except PackageNotFoundError:
            continue
        if installed != pinned:
            drift.append(f"{name} {installed} (locked {pinned})")
    assert not drift, "installed versions differ from constraints.txt: " + ", ".join(drift) + \
        "; run `make test` green with them, then `make lock`"
