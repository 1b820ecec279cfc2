"""Hostfiles: the format DeepSpeed reads, and one line with a line number for every mistake."""
from __future__ import annotations

import pytest

from medtune.launcher.hostfile import Host, HostfileError, check_against, parse


def _hostfile(tmp_path, text):
    p = tmp_path / "hostfile"
    p.write_text(text)
    return p


def test_comments_blank_lines_and_trailing_comments(tmp_path):
    p = _hostfile(tmp_path, "# cluster\n\nnode01 slots=8\nnode02   slots = 8  # spare\n")
    assert parse(p) == [Host("node01", 8, 3), Host("node02", 8, 4)]


BAD = [
    ("node01\n", ":1: 'node01': expected `HOST slots=N`"),
    ("node01 slots=eight\n", ":1: 'node01 slots=eight': expected"),
    ("node01 gpus=8\n", ":1: 'node01 gpus=8': expected"),
    ("node01 slots=0\n", ":1: 'node01 slots=0': slots must be at least 1"),
    ("node01 slots=-2\n", "slots must be at least 1"),
    ("a slots=2\n# x\na slots=2\n", ":3: 'a slots=2': host a is already listed on line 1"),
    ("# only comments\n\n", "no hosts"),
    ("node01 slots=2 extra\n", ":1: 'node01 slots=2 extra': expected"),
    ("node 01 slots=2\n", "expected `HOST slots=N`"),
    ("node01 slots=2\nnode02 slots=\n", ":2: 'node02 slots=': expected"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[b[0].strip() or "empty" for b in BAD])
def test_bad_hostfile_is_one_line_with_its_line_number(tmp_path, text, message):
    p = _hostfile(tmp_path, text)
    with pytest.raises(HostfileError) as err:
        parse(p)
    assert str(p) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_hostfile_never_falls_back_to_localhost(tmp_path):
    with pytest.raises(HostfileError, match="hostfile does not exist"):
        parse(tmp_path / "nope")


def test_hosts_and_slots_must_match_the_recipe(tmp_path):
    p = _hostfile(tmp_path, "a slots=8\nb slots=4\n")
    hosts = parse(p)
    with pytest.raises(HostfileError, match="2 hosts, but the recipe runs launch.nodes=3"):
        check_against(hosts, p, nodes=3, procs=8)
    with pytest.raises(HostfileError, match=r":2: b slots=4, but the recipe runs launch.procs=8"):
        check_against(hosts, p, nodes=2, procs=8)
    check_against(parse(_hostfile(tmp_path, "a slots=8\nb slots=8\n")), p, nodes=2, procs=8)
