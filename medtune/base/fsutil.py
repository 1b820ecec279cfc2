"""File-system helpers shared by the data cache and checkpoints: locks and atomic writes."""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def locked(lock_path: Path):
    """Hold an exclusive lock on `lock_path` (created if needed) for the duration of the block.

    Processes (ranks, nodes on a shared file system) serialize on it: the
    first builds, the others wait and then find the result.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one.

    The temporary file is unique to this writer: the launchers of several
    nodes write the same run directory's files at once (on a shared file
    system, or as simulated nodes on one machine), and a shared temporary
    name let one writer rename away the other's file mid-write.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the file it replaces was not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
