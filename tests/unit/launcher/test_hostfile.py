"""Hostfiles: the format DeepSpeed reads, and one line with a line number for every mistake."""
from __future__ import annotations

import pytest

from medtune.launcher.hostfile import Host, HostfileError, check_against, parse, read


def _hostfile(tmp_path, text):
    p = tmp_path / "hostfile"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_comments_blank_lines_and_trailing_comments(tmp_path):
    p = _hostfile(tmp_path, "# cluster\n\nnode01 slots=8\nnode02   slots=8  # spare\n")
    assert parse(p) == [Host("node01", 8, 3), Host("node02", 8, 4)]


# Issue 14, fault 2: medtune and DeepSpeed's runner must read a hostfile the same way.
# (id, file bytes, DeepSpeed's hosts {name: slots} or None where it refuses). The expected
# column is written out, and the test also asks DeepSpeed's own parser for its verdict.
SAME_AS_DEEPSPEED = [
    ("plain", b"node01 slots=8\nnode02 slots=8\n", {"node01": 8, "node02": 8}),
    ("spaces around =", b"localhost slots = 1\n", None),
    ("space after =", b"localhost slots= 1\n", None),
    ("tab separator", b"node01\tslots=4\n", {"node01": 4}),
    ("leading and trailing blanks", b"   node01 slots=2   \n\t\n", {"node01": 2}),
    ("comments", b"# head\n  # indented\nnode01 slots=2 # spare\n", {"node01": 2}),
    ("comment glued to the host", b"node01#x slots=2\n", {"node01#x": 2}),
    ("commented-out slots", b"node01 # slots=2\n", None),
    ("CRLF", b"node01 slots=2\r\nnode02 slots=2\r\n", {"node01": 2, "node02": 2}),
    ("lone CR", b"node01 slots=2\rnode02 slots=2\r", {"node01": 2, "node02": 2}),
    ("no final newline", b"node01 slots=2", {"node01": 2}),
    ("user@host", b"user@10.0.0.11 slots=1\n", {"user@10.0.0.11": 1}),
    ("IPv6", b"::1 slots=1\nfe80::1%eth0 slots=1\n", {"::1": 1, "fe80::1%eth0": 1}),
    ("IPv6 in brackets", b"[2001:db8::1] slots=2\n", {"[2001:db8::1]": 2}),
    ("same host twice", b"a slots=2\n# x\na slots=2\n", None),
    ("user@host beside the bare host", b"a slots=1\nu@a slots=1\n", {"a": 1, "u@a": 1}),
    ("slots=0", b"node01 slots=0\n", {"node01": 0}),
    ("negative slots", b"node01 slots=-2\n", None),
    ("slots in words", b"node01 slots=eight\n", None),
    ("slots empty", b"node01 slots=2\nnode02 slots=\n", None),
    ("digits then junk", b"node01 slots=8x\n", {"node01": 8}),
    ("trailing words", b"node01 slots=2 extra\n", {"node01": 2}),
    ("leading zeros", b"node01 slots=08\n", {"node01": 8}),
    ("host alone", b"node01\n", None),
    ("other key", b"node01 gpus=8\n", None),
    ("host with a space", b"node 01 slots=2\n", None),
    ("Slots capitalised", b"node01 Slots=2\n", None),
    ("empty file", b"", None),
    ("only comments", b"# only comments\n\n", None),
    ("BOM then host", b"\xef\xbb\xbfnode01 slots=2\n", {"\ufeffnode01": 2}),
    ("BOM then comment", b"\xef\xbb\xbf# cluster\nnode01 slots=2\n", None),
    ("not UTF-8", b"n\xf6de slots=2\n", None),
]


def _deepspeed_verdict(path):
    from deepspeed.launcher.runner import fetch_hostfile

    try:
        return dict(fetch_hostfile(str(path)))
    except (ValueError, UnicodeDecodeError):
        return None


def _medtune_verdict(path):
    try:
        return {h.name: h.slots for h in read(path)}
    except HostfileError as err:
        assert str(path) in str(err) and "\n" not in str(err), str(err)
        return None


@pytest.mark.parametrize("text,hosts", [c[1:] for c in SAME_AS_DEEPSPEED],
                         ids=[c[0] for c in SAME_AS_DEEPSPEED])
def test_medtune_reads_a_hostfile_exactly_as_deepspeeds_runner(tmp_path, text, hosts):
    p = _hostfile(tmp_path, text)
    assert _deepspeed_verdict(p) == hosts          # the written right value is DeepSpeed's own reading
    assert _medtune_verdict(p) == hosts            # and medtune's check agrees with it, hosts and slots


def test_what_deepspeed_parses_but_cannot_launch_is_refused_in_one_line(tmp_path):
    """0 slots and a BOM'd first host pass DeepSpeed's parser, then fail on the nodes."""
    for text, message in [(b"node01 slots=0\n", ":1: 'node01 slots=0': slots must be at least 1"),
                          (b"\xef\xbb\xbfnode01 slots=2\n", r":1: '\ufeffnode01 slots=2': the file starts "
                                                              "with a byte-order mark")]:
        p = _hostfile(tmp_path, text)
        with pytest.raises(HostfileError) as err:
            parse(p)
        assert str(err.value).startswith(str(p)) and message in str(err.value)
    ok = [c for c in SAME_AS_DEEPSPEED if c[2] and 0 not in c[2].values() and "BOM" not in c[0]]
    assert len(ok) >= 15
    for _, text, hosts in ok:
        assert {h.name: h.slots for h in parse(_hostfile(tmp_path, text))} == hosts


def test_user_at_host_is_the_no_ssh_master_without_the_user(tmp_path):
    hosts = parse(_hostfile(tmp_path, "alice@10.0.0.11 slots=1\n10.0.0.12 slots=1\n"))
    assert [h.address for h in hosts] == ["10.0.0.11", "10.0.0.12"]


BAD = [
    ("node01\n", ":1: 'node01': expected `HOST slots=N`"),
    ("node01 slots=eight\n", ":1: 'node01 slots=eight': expected"),
    ("node01 gpus=8\n", ":1: 'node01 gpus=8': expected"),
    ("node01 slots=0\n", ":1: 'node01 slots=0': slots must be at least 1"),
    ("node01 slots=-2\n", "slots must be a whole number of at least 1"),
    ("a slots=2\n# x\na slots=2\n", ":3: 'a slots=2': host a is already listed on line 1"),
    ("# only comments\n\n", "no hosts"),
    ("localhost slots = 1\n", ":1: 'localhost slots = 1': write `slots=1` without spaces"),
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


def test_launch_refuses_what_deepspeed_refuses_before_anything_and_takes_user_at_host(tmp_path, capsys):
    """`localhost slots = 1` passed the dry run and died in DeepSpeed's runner after the data was prepared."""
    from medtune import cli
    from tests.conftest import RECIPES

    argv = ["launch", str(RECIPES / "demo.yaml"), "launch.procs=1", "--run-dir", str(tmp_path / "run")]
    bad = _hostfile(tmp_path, "localhost slots = 1\n")
    for extra in (["--dry-run"], []):
        assert cli.main([*argv, "--hostfile", str(bad), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"medtune: error: {bad}:1: 'localhost slots = 1': write `slots=1` without spaces "
                       "(DeepSpeed's runner reads nothing else)"]
        assert not (tmp_path / "run").exists()
    good = _hostfile(tmp_path, "user@10.0.0.11 slots=1\n")
    assert cli.main([*argv, "--hostfile", str(good), "--dry-run", "--launcher", "no_ssh", "--node-rank", "0",
                     "--master-port", "29500"]) == 0
    out = capsys.readouterr().out
    assert "--master_addr 10.0.0.11 --no_ssh --node_rank 0" in out and not (tmp_path / "run").exists()
