"""Which rank failed first, read from DeepSpeed's launcher log."""
from __future__ import annotations

import re
import signal
from pathlib import Path

# deepspeed/launcher/launch.py (0.19) logs "process PID spawned with command: [...]" for each
# rank it starts, with "--local_rank=K" in the argv, and on the first failure
# "[...] exits with return code = N". The argv in that last line is the closure's `cmd`: the
# command of the LAST rank it spawned, whichever rank failed. So it names the failed rank only
# when the node runs one rank.
_SPAWNED = re.compile(r"spawned with command: \[.*?'--local_rank=(\d+)'")
_FAILED = re.compile(r"--local_rank=(\d+)'.*?exits with return code = (-?\d+)")
_START = "WORLD INFO DICT"  # launch.py's first line on every start
TAIL_BYTES = 200_000


def failed_rank(log: Path | None, first_rank: int = 0) -> str | None:
    """What ended the ranks, from the last `TAIL_BYTES` of DeepSpeed's launcher log `log`, or None
    (no log, or no failure logged).

    ``rank R was killed by SIGKILL`` / ``rank R exited with code C`` when the
    node ran one rank (R = `first_rank`, the node's first global rank, plus
    its local rank); with several ranks on the node DeepSpeed's line does
    not say which one failed, so the answer names the node's range:
    ``one of ranks A-B was killed by SIGKILL``. A negative return code is
    the number of the signal that ended the process.
    """
    if log is None or not log.exists():
        return None
    text = log.read_bytes()[-TAIL_BYTES:].decode(errors="replace")
    failures = list(_FAILED.finditer(text))
    if not failures:
        return None
    m = failures[-1]  # the log is appended to by every start of the run: the newest
    began = text.rfind(_START, 0, m.start())  # this start's own spawned ranks
    local = {int(k) for k in _SPAWNED.findall(text, max(began, 0), m.start())} | {int(m.group(1))}
    code = int(m.group(2))
    if len(local) == 1:
        who = f"rank {first_rank + int(m.group(1))}"
    else:
        who = f"one of ranks {first_rank + min(local)}-{first_rank + max(local)}"
    if code >= 0:
        return f"{who} exited with code {code}"
    try:
        return f"{who} was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"{who} was killed by signal {-code}"
