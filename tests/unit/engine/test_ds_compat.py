"""DeepSpeed's internals are reached only through medtune.engine.ds_compat, which checks the version."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from medtune.engine import ds_compat

PACKAGE = Path(__file__).resolve().parents[3] / "medtune"
COMPAT = PACKAGE / "engine" / "ds_compat.py"

PUBLIC_MODULES = {"deepspeed", "deepspeed.comm", "deepspeed.zero", "deepspeed.accelerator",
                  "deepspeed.utils.zero_to_fp32", "deepspeed.launcher.runner"}
"""DeepSpeed's documented API: the package, its comm/zero/accelerator namespaces, the ZeRO
checkpoint to fp32 helper and the ``deepspeed`` launcher command."""
INTERNAL_NAMES = {"__compatible_ops__", "checkpoint_engine", "fp32_partitioned_groups_flat",
                  "grad_partitions_flat_buffer", "ds_tensor", "ds_persist", "comms_logger", "timers"}
"""Attributes of DeepSpeed objects that are not documented API (besides any ``_name`` on an engine
or optimizer)."""


def internals_used(source: str) -> list[str]:
    """``line: what`` for every DeepSpeed internal `source` touches: imports of modules outside
    `PUBLIC_MODULES`, such modules named in strings (``python -m ...``), `INTERNAL_NAMES`, and
    ``_``-prefixed attributes of something called ``engine`` or ``optimizer``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "deepspeed" and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "deepspeed":
            names = [f"{node.module}.{a.name}" for a in node.names]
            if node.module not in PUBLIC_MODULES or any(n.rsplit(".", 1)[1] == "comm" for n in names):
                found.append(f"{where}: from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute):
            base = ast.unparse(node.value)
            private = node.attr.startswith("_") and not node.attr.endswith("__")
            if node.attr in INTERNAL_NAMES or (private and re.search(r"(engine|optimizer)$", base)):
                found.append(f"{where}: {base}.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"deepspeed(\.\w+)+", node.value) and node.value not in PUBLIC_MODULES:
                found.append(f"{where}: {node.value!r}")
    return sorted(found, key=lambda f: int(f.split(":")[0]))


def test_the_walk_finds_each_kind_of_internal():
    src = ("import deepspeed.ops\n"
           "from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs\n"
           "from deepspeed.comm import comm as dscomm\n"
           "deepspeed.ops.__compatible_ops__['x'] = False\n"
           "s = engine._zero3_consolidated_16bit_state_dict()\n"
           "self.engine._copy_recovery_script = 1\n"
           "flat = opt.fp32_partitioned_groups_flat\n"
           "cmd = ['python', '-m', 'deepspeed.checkpoint.ds_to_universal']\n")
    assert [f.split(":")[0] for f in internals_used(src)] == ["1", "2", "3", "4", "5", "6", "7", "8"]


def test_the_walk_leaves_the_public_api_alone():
    src = ("import deepspeed\nimport deepspeed.comm as dist\n"
           "from deepspeed.accelerator import get_accelerator\n"
           "from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint\n"
           "engine, *_ = deepspeed.initialize(model=m, config=c)\n"
           "with deepspeed.zero.Init(config_dict_or_path=c): pass\n"
           "argv = ['python', '-m', 'deepspeed.launcher.runner']\n"
           "x = engine.optimizer; engine.save_checkpoint('d'); self._private = 1\n")
    assert internals_used(src) == []


def test_no_module_but_ds_compat_touches_deepspeed_internals():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != COMPAT and (found := internals_used(path.read_text())):
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert offenders == {}


def test_ds_compat_holds_the_internals_it_says():
    """The rule has teeth: the compatibility module is where they are."""
    assert len(internals_used(COMPAT.read_text())) >= 8


def test_the_supported_range_is_setup_pys_and_holds_the_pinned_version():
    root = PACKAGE.parent
    setup = (root / "setup.py").read_text()
    assert re.search(r'"deepspeed>=0\.17,<0\.20"', setup) and ds_compat.SUPPORTED == ">=0.17,<0.20"
    assert f"deepspeed=={ds_compat.PROVEN}" in (root / "constraints.txt").read_text().splitlines()
    assert ds_compat.check_version(ds_compat.PROVEN) == "0.19.8"


@pytest.mark.parametrize("version", ["0.17.0", "0.19.8", "0.19.8+cu124", "0.18.3"])
def test_versions_in_range_pass(version):
    assert ds_compat.check_version(version) == version


@pytest.mark.parametrize("version", ["0.16.9", "0.20.0", "0.20.0rc1", "1.0.0", "not-a-version"])
def test_versions_outside_the_range_are_one_line_naming_both(version):
    """A trainer meeting a DeepSpeed it was not written for fails deep inside a step
    (lmms-finetune#64, DeepSpeed#1218: ``'DeepSpeedZeroOptimizer_Stage3' object has no attribute ...``);
    medtune says so in one line before anything starts."""
    with pytest.raises(ds_compat.DeepSpeedVersionError) as err:
        ds_compat.check_version(version)
    msg = str(err.value)
    assert "\n" not in msg and f"DeepSpeed {version} is installed" in msg and "deepspeed>=0.17,<0.20" in msg


def test_the_installed_version_is_read_without_importing_deepspeed(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "deepspeed", raising=False)
    assert ds_compat.installed_version() == "0.19.8"
    assert "deepspeed" not in sys.modules


def test_the_launching_process_refuses_an_unsupported_deepspeed(monkeypatch, tmp_path, capsys):
    """`medtune train` stops with exit code 2 and one line, before reading the recipe."""
    from medtune import cli

    monkeypatch.setattr(ds_compat, "installed_version", lambda: "0.20.1")
    code = cli.main(["train", str(tmp_path / "absent.yaml"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["medtune: error: DeepSpeed 0.20.1 is installed but medtune supports "
                                 "deepspeed>=0.17,<0.20 (tested on 0.19.8); install one: "
                                 "pip install 'deepspeed==0.19.8'"]
    assert not (tmp_path / "run").exists()


def test_a_rank_refuses_an_unsupported_deepspeed(monkeypatch, capsys):
    from medtune.engine import entry

    monkeypatch.setattr(ds_compat, "installed_version", lambda: None)
    called = []
    code = entry.run(["--recipe", "r.yaml", "--run-dir", "d"], lambda *a: called.append(a) or 0)
    assert code == 2 and called == []
    assert capsys.readouterr().err.startswith("medtune: error: DeepSpeed is not installed; medtune needs "
                                              "deepspeed>=0.17,<0.20")


def test_deepspeed_zero_is_an_attribute_not_a_module():
    """DeepSpeed#837 ("module 'deepspeed' has no attribute 'zero'"), and what this move met: the public
    ``deepspeed.zero`` is ``deepspeed.runtime.zero`` bound as an attribute, so ``from deepspeed.zero
    import X`` fails while ``import deepspeed; deepspeed.zero.X`` (medtune.kernels.loss's form) works."""
    import subprocess
    import sys

    works = subprocess.run([sys.executable, "-c", "import deepspeed; z = deepspeed.zero; "
                            "print(z.ZeroParamStatus.NOT_AVAILABLE.name, z.GatheredParameters.__name__)"],
                           capture_output=True, text=True, timeout=300)
    assert works.stdout.splitlines()[-1].split() == ["NOT_AVAILABLE", "GatheredParameters"], works.stderr[-2000:]
    fails = subprocess.run([sys.executable, "-c", "from deepspeed.zero import ZeroParamStatus"],
                           capture_output=True, text=True, timeout=300)
    assert fails.returncode != 0 and "No module named 'deepspeed.zero'" in fails.stderr
    offenders = [str(p) for p in PACKAGE.rglob("*.py")
                 if re.search(r"^\s*(from|import) deepspeed\.zero\b", p.read_text(), re.M)]
    assert offenders == []
