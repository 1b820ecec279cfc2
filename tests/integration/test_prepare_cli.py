"""``medtune prepare recipes/data/shared-corpora.yaml --out DIR``, twice, as a user runs it.

A fresh cache (as on a fresh clone): the first run reads the real corpora,
trains the tiny tokenizer, tokenizes and caches; the second is a cache hit
whose data stage is at least 10x faster. Both timings are taken in this
test, from the ``data stage`` the command prints, so only their ratio counts.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO, needs_shared_data

pytestmark = needs_shared_data()


def _prepare(out, cache) -> tuple[str, float]:
    env = {**os.environ, "MEDTUNE_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "medtune.cli", "prepare",
                           "recipes/data/shared-corpora.yaml", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    took = re.search(r"\(data stage ([\d.]+)s\)", proc.stdout)
    assert took, proc.stdout
    return proc.stdout, float(took.group(1))


def test_prepare_shared_corpora_twice(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    first, cold = _prepare(out, cache)
    assert first.startswith("built: ")
    for name, records in (("ncbi-disease", 5424), ("bc5cdr-chem", 4560), ("pubmedqa", 500)):
        row = next(line for line in first.splitlines() if line.startswith(name))
        assert row.split()[1] == str(records), row
    assert "packing fill" in first and "pubmedqa" in first.split("task")[-1]
    stats = json.loads((out / "stats.json").read_text())
    for st in stats["sources"].values():
        assert {"records", "tokens", "truncated", "dropped", "duplicates", "malformed"} <= set(st)
    assert stats["sources"]["ncbi-disease"]["records"] == 5424
    assert stats["sources"]["ncbi-disease"]["duplicates"] > 0   # the corpus repeats some sentences
    assert set(stats["tasks"]) == {"ner", "pubmedqa"} and 0.9 < stats["packing_fill"] <= 1
    assert stats["samples"] == sum(st["samples"] for st in stats["sources"].values())
    assert (out / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "stats.json").unlink()
    (out / "lengths.png").unlink()

    second, cached = _prepare(out, cache)
    assert second.startswith("cache hit: ")
    assert json.loads((out / "stats.json").read_text()) == stats and (out / "lengths.png").is_file()
    assert second.split("\n", 1)[1] == first.split("\n", 1)[1]   # the same table
    assert cold >= 10 * max(cached, 0.01), f"cold {cold:.2f}s vs cached {cached:.2f}s"
