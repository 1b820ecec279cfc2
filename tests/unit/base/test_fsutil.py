"""Atomic writes when several writers (the launchers of several nodes) write one file at once."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

from medtune.base.fsutil import write_atomic


def _writer(path: str, tag: int) -> None:
    for i in range(200):
        write_atomic(Path(path), f"{tag}:{i}\n" * 50)


def test_concurrent_writers_never_fail_and_leave_one_whole_file(tmp_path):
    target = tmp_path / "recipe.yaml"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(target), tag)) for tag in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    lines = target.read_text().splitlines()
    assert len(lines) == 50 and len(set(lines)) == 1 and lines[0].endswith(":199")
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.yaml"]  # no temporary file left behind
    assert target.stat().st_mode & 0o777 == 0o644
