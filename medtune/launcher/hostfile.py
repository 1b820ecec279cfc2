"""DeepSpeed hostfiles: ``host slots=N`` per line, read strictly.

::

    # comment lines and blank lines are ignored
    node01 slots=8
    node02 slots=8   # a trailing comment is fine

Every problem names the file, the line number and the line, and says what
was expected. A named hostfile that does not exist is an error, never a
silent fall-back to localhost (DeepSpeed issue #5221).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medtune.errors import UserError

_LINE = re.compile(r"^(?P<host>[A-Za-z0-9_.\-\[\]:]+)\s+slots\s*=\s*(?P<slots>-?\d+)$")
EXPECTED = "expected `HOST slots=N` (N ranks on that host), e.g. `node01 slots=8`"


class HostfileError(UserError):
    """A hostfile that cannot be used as written."""


@dataclass(frozen=True)
class Host:
    name: str
    slots: int
    line: int


def parse(path: str | Path) -> list[Host]:
    """The hosts of a hostfile, in order; `HostfileError` on the first bad line."""
    p = Path(path)
    if not p.is_file():
        raise HostfileError(f"{p}: hostfile does not exist")
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(p.read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        m = _LINE.match(text)
        where = f"{p}:{number}: {raw.strip()!r}"
        if not m:
            raise HostfileError(f"{where}: {EXPECTED}")
        name, slots = m.group("host"), int(m.group("slots"))
        if slots <= 0:
            raise HostfileError(f"{where}: slots must be at least 1")
        if name in seen:
            raise HostfileError(f"{where}: host {name} is already listed on line {seen[name]}")
        seen[name] = number
        hosts.append(Host(name, slots, number))
    if not hosts:
        raise HostfileError(f"{p}: no hosts; {EXPECTED}")
    return hosts


def check_against(hosts: list[Host], path: str | Path, nodes: int, procs: int) -> None:
    """The hostfile must give exactly the recipe's nodes, each with its ranks per node."""
    if len(hosts) != nodes:
        raise HostfileError(f"{path}: {len(hosts)} hosts, but the recipe runs launch.nodes={nodes}; "
                            "list one line per node or change launch.nodes")
    for h in hosts:
        if h.slots != procs:
            raise HostfileError(f"{path}:{h.line}: {h.name} slots={h.slots}, but the recipe runs "
                                f"launch.procs={procs} ranks per node")
