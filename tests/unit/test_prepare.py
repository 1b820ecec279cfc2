"""Preparing data: counts of truncated and dropped samples, cache hits, malformed lines."""
from __future__ import annotations

import json

from medtune import config
from medtune.data.prepare import prepare
from tests.conftest import RECIPES


def _recipe(*overrides):
    return config.load(RECIPES / "demo.yaml", list(overrides))


def test_truncate_and_drop_are_counted():
    base = prepare(_recipe(), log=lambda _: None).stats
    longest = max(json.loads(line)["output"].count("\n") for line in
                  (RECIPES / "data" / "demo.jsonl").read_text().splitlines())
    assert longest > 0
    cut = prepare(_recipe("data.max_tokens=190"), log=lambda _: None)
    dropped = prepare(_recipe("data.max_tokens=190", "data.overlong=drop"), log=lambda _: None)
    t, d = cut.stats["sources"]["demo"], dropped.stats["sources"]["demo"]
    assert t["truncated"] > 0 and t["dropped"] == 0 and cut.stats["samples"] == base["samples"]
    assert d["dropped"] == t["truncated"] and dropped.stats["samples"] == base["samples"] - d["dropped"]
    assert max(cut.dataset["length"]) == 190 and max(dropped.dataset["length"]) <= 190


def test_second_prepare_is_a_cache_hit():
    first = prepare(_recipe("data.max_tokens=700"), log=lambda _: None)
    again = prepare(_recipe("data.max_tokens=700"), log=lambda _: None)
    assert again.cache_hit and again.fingerprint == first.fingerprint
    assert again.dataset["input_ids"] == first.dataset["input_ids"]


def test_malformed_lines_are_skipped_counted_and_located(tmp_path):
    good = (RECIPES / "data" / "demo.jsonl").read_text().splitlines()[:5]
    bad = ['{"instruction": "x", "output": ""}', "{not json", '{"output": "y"}']
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(good[:2] + bad + good[2:]) + "\n")
    seen = []
    p = prepare(_recipe(f"data.sources=[{{path: {f}, format: jsonl}}]"), log=seen.append)
    st = p.stats["sources"]["mixed"]
    assert st["records"] == 5 and st["malformed"] == 3 and p.stats["samples"] == 5
    assert [s.split(": ")[0] for s in seen] == ["skipped malformed record"] * 3
    assert f"{f}:3: empty output" in seen[0] and f"{f}:4: bad JSON" in seen[1]
    assert f"{f}:5: missing string field 'instruction'" in seen[2]
