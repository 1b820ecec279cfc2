"""DeepSpeed hostfiles: ``HOST slots=N`` per line, read exactly as DeepSpeed's runner reads them.

::

    # comment lines and blank lines are ignored
    node01 slots=8
    alice@node02 slots=8   # text after slots=N is ignored, as DeepSpeed ignores it

`read` is the grammar of ``deepspeed.launcher.runner._parse_hostfile``
(DeepSpeed 0.19): the file is read like ``open(path).readlines()`` (``\\n``,
``\\r\\n`` and ``\\r`` end lines), each line is stripped, lines that are empty
or start with ``#`` are skipped, and every other line must match
``^(\\S+)\\s+slots=(\\d+)`` (no spaces around ``=``; whatever follows the
digits is ignored); a host given twice and a file without hosts are refused.
So a hostfile passes medtune's check exactly when DeepSpeed's runner will
parse it, to the same hosts and slots (tests/unit/launcher/test_hostfile.py feeds
both parsers the same files). `parse` then refuses, in the same one-line
form, what DeepSpeed parses but cannot launch: a host with 0 slots and a
host name that starts with a byte-order mark (a file saved as "UTF-8 with
BOM": DeepSpeed would ssh to ``\\ufeffnode01``).

Every problem names the file, the line number and the line, and says what
was expected. A named hostfile that does not exist is an error, never a
silent fall-back to localhost (DeepSpeed issue #5221).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medtune.base.errors import UserError

# deepspeed/launcher/runner.py, _parse_hostfile: matched with re.search on the stripped line
_LINE = re.compile(r"^(\S+)\s+slots=(\d+)")
_LOOSE = re.compile(r"^(\S+)\s+slots\s*=\s*(\S+)")
_BOM = ("the file starts with a byte-order mark (saved as \"UTF-8 with BOM\"), which DeepSpeed "
        "reads as part of the first line; save it as plain UTF-8")
EXPECTED = "expected `HOST slots=N` (N ranks on that host), e.g. `node01 slots=8`"


class HostfileError(UserError):
    """A hostfile that cannot be used as written."""


@dataclass(frozen=True)
class Host:
    name: str
    """The host as written, given to DeepSpeed's runner (``user@host`` allowed)."""
    slots: int
    line: int

    @property
    def address(self) -> str:
        """The network address: the name without a ``user@`` (the no-ssh rendezvous master)."""
        return self.name.rpartition("@")[2]


def read(path: str | Path) -> list[Host]:
    """The hosts of a hostfile as DeepSpeed's runner parses it; `HostfileError` where it would refuse."""
    return [h for h, _ in _read(path)]


def _read(path: str | Path) -> list[tuple[Host, str]]:
    p = Path(path)
    if not p.is_file():
        raise HostfileError(f"{p}: hostfile does not exist")
    try:
        with open(p) as fh:  # DeepSpeed's own open(): the locale's encoding, universal newlines
            lines = fh.readlines()
    except UnicodeDecodeError as err:
        raise HostfileError(f"{p}: not text in this locale's encoding ({err.reason} at byte "
                            f"{err.start}); save it as plain UTF-8") from None
    hosts: list[tuple[Host, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{p}:{number}: {text!r}"
        m = _LINE.search(text)
        if not m:
            loose = _LOOSE.search(text)
            if loose and re.fullmatch(r"\d+", loose.group(2)):
                raise HostfileError(f"{where}: write `slots={loose.group(2)}` without spaces "
                                    "(DeepSpeed's runner reads nothing else)")
            if loose and re.fullmatch(r"[-+]\d+", loose.group(2)):
                raise HostfileError(f"{where}: slots must be a whole number of at least 1")
            if text.startswith("\ufeff"):
                raise HostfileError(f"{where}: {_BOM}")
            raise HostfileError(f"{where}: {EXPECTED}")
        name, slots = m.group(1), int(m.group(2))
        if name in seen:
            raise HostfileError(f"{where}: host {name} is already listed on line {seen[name]}")
        seen[name] = number
        hosts.append((Host(name, slots, number), text))
    if not hosts:
        raise HostfileError(f"{p}: no hosts; {EXPECTED}")
    return hosts


def parse(path: str | Path) -> list[Host]:
    """The hosts of a hostfile DeepSpeed can launch on, in order; `HostfileError` on the first problem.

    What `read` (DeepSpeed's grammar) accepts, less a host with 0 slots and a
    name that starts with a byte-order mark.
    """
    hosts = _read(path)
    for h, text in hosts:
        where = f"{path}:{h.line}: {text!r}"
        if h.name.startswith("\ufeff"):
            raise HostfileError(f"{where}: {_BOM}")
        if h.slots == 0:
            raise HostfileError(f"{where}: slots must be at least 1")
    return [h for h, _ in hosts]


def check_against(hosts: list[Host], path: str | Path, nodes: int, procs: int) -> None:
    """The hostfile must give exactly the recipe's nodes, each with its ranks per node."""
    if len(hosts) != nodes:
        raise HostfileError(f"{path}: {len(hosts)} hosts, but the recipe runs launch.nodes={nodes}; "
                            "list one line per node or change launch.nodes")
    for h in hosts:
        if h.slots != procs:
            raise HostfileError(f"{path}:{h.line}: {h.name} slots={h.slots}, but the recipe runs "
                                f"launch.procs={procs} ranks per node")
