"""The launcher's copy of the ranks' output survives a full disk (issue 14, fault 8)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medtune.launcher.plan import LaunchPlan, execute

FULL = Path("/dev/full")  # every write to it fails with ENOSPC


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full")
def test_a_full_disk_stops_the_log_copy_not_the_run(capfd):
    lines = 2000
    ranks = (sys.executable, "-c", f"for i in range({lines}): print('rank output', i)\nraise SystemExit(3)")
    code = execute(LaunchPlan(ranks, log=FULL))
    out, err = capfd.readouterr()
    assert code == 3  # the command ran to its end and its exit code came back
    assert out.splitlines() == [f"rank output {i}" for i in range(lines)]  # all of it on the terminal
    said = [line for line in err.splitlines() if "log copy" in line]
    assert said == ["[medtune] the log copy /dev/full stopped ([Errno 28] No space left on device); "
                    "the output continues here only"]
