"""Shared test set-up: a private data cache, the repository and the shared corpora."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def medtune_cache(tmp_path_factory) -> Path:
    """Every test (and every rank it starts) caches data and tokenizers in one temp dir."""
    cache = tmp_path_factory.mktemp("medtune-cache")
    os.environ["MEDTUNE_CACHE"] = str(cache)
    return cache


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration starts real ranks (or Slurm, MPI, ssh): marked ``slow``."""
    integration = REPO / "tests" / "integration"
    for item in items:
        if integration in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


def needs_shared_data():
    return pytest.mark.skipif(not SHARED_DATA.is_dir(),
                              reason=f"{SHARED_DATA} is absent (it sits beside the repo in CI)")
