"""tools/check_wheels.py: the wheels for the lent GPU machine fit its Python 3.12, come once each, need nothing absent."""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import check_wheels  # noqa: E402


def wheel(folder: Path, filename: str, requires: list[str]) -> Path:
    name, version = filename.split("-")[:2]
    path = folder / filename
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_a_complete_set_passes(tmp_path):
    wheel(tmp_path, "hjson-3.1.0-py3-none-any.whl", [])
    wheel(tmp_path, "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_x86_64.whl", ["typing-extensions>=4.6"])
    wheel(tmp_path, "deepspeed-0.19.8-py3-none-any.whl",
          ["hjson", "torch>=2.0.0", "pytest<8.4; extra == 'dev'", "pywin32; sys_platform == 'win32'"])
    for name in ("datasets-5.2.0", "pydantic-2.14.4", "seqeval-1.2.2"):  # medtune's own needs (setup.py)
        wheel(tmp_path, f"{name}-py3-none-any.whl", [])
    assert check_wheels.check(tmp_path) == []


def test_wrong_python_twice_carried_missing_and_too_old_are_each_named(tmp_path):
    wheel(tmp_path, "xxcore-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", [])
    wheel(tmp_path, "hjson-3.1.0-py3-none-any.whl", [])
    wheel(tmp_path, "hjson-3.0.0-py3-none-any.whl", [])
    wheel(tmp_path, "datasets-5.2.0-py3-none-any.whl", ["nosuchpkg>=1", "transformers>=5.20"])
    problems = "\n".join(check_wheels.check(tmp_path))
    assert "xxcore-1.0-cp311-cp311-manylinux_2_17_x86_64.whl: its tags fit no cp312" in problems
    assert "hjson is carried twice" in problems
    assert "needs nosuchpkg>=1: neither carried nor on the GPU machine" in problems
    assert "needs transformers>=5.20: transformers 5.17.0 is on the GPU machine" in problems
