"""The package's shape, read from its source with `ast`: no import cycles, the engine never
imports the command line, and no function too long or too deeply nested to read."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "medtune"
MAX_LINES = 80  # from `def` to the function's last line
MAX_DEPTH = 4  # if/for/while/with/try/match blocks inside one function


def _modules() -> dict[str, Path]:
    """Every module of medtune by dotted name (a package by its own name, not ``.__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement names, relative imports resolved against `module`."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # `from a import b` names module a.b when b is a module, else a name defined in a
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the medtune modules it imports anywhere in its source, function bodies included.

    Importing ``medtune.x.y`` counts as depending on ``medtune.x.y`` alone, not on
    its parent packages' ``__init__`` (which Python runs first).
    """
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, name, path.name == "__init__.py"):
                    if target in mods and target != name:
                        deps.add(target)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_imports_resolve():
    tree = ast.parse("from . import tokenizer\nfrom ..errors import UserError\n")
    first, second = tree.body
    assert _imported(first, "medtune.data.prepare", False) == ["medtune.data", "medtune.data.tokenizer"]
    assert _imported(second, "medtune.data.prepare", False) == ["medtune.errors", "medtune.errors.UserError"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


ALLOWED = {
    # part: the parts it may import (the README's Layout table; `medtune/__init__.py` imports the
    # parts' registered checks and is no part)
    "base": set(),
    "config": {"base"},
    "models": {"base", "config"},
    "data": {"base", "config", "models"},
    "kernels": {"base", "config", "models"},
    "launcher": {"base", "config", "models"},
    "engine": {"base", "config", "models", "data", "kernels", "evaluation"},
    "planning": {"base", "config", "models", "kernels", "engine"},
    "evaluation": {"base", "config", "models", "data"},
    "cli": {"base", "config", "models", "data", "kernels", "launcher", "engine", "planning", "evaluation"},
}


def part_of(module: str) -> str:
    """``medtune.engine.trainer`` -> ``engine``; ``medtune.cli`` -> ``cli``; the package itself -> ``medtune``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medtune"


def test_every_module_belongs_to_a_part():
    """No loose module at the top of the package but the command line, config and the package itself."""
    loose = sorted(m for m in import_graph() if part_of(m) not in ALLOWED and m != "medtune")
    assert loose == []


def test_parts_import_only_what_the_layout_allows():
    graph = import_graph()
    found = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                   if m != "medtune" and part_of(d) != part_of(m) and part_of(d) != "medtune"
                   and part_of(d) not in ALLOWED.get(part_of(m), set()))
    assert found == []


def test_no_cycle_between_parts():
    graph = import_graph()
    parts: dict[str, set[str]] = {}
    for m, deps in graph.items():
        if m != "medtune":
            parts.setdefault(part_of(m), set()).update(part_of(d) for d in deps
                                                       if part_of(d) not in (part_of(m), "medtune"))
    cycle = find_cycle(parts)
    assert cycle is None, "cycle between parts: " + " -> ".join(cycle)


def test_the_base_imports_nothing_of_medtune():
    """Every part may import the base (errors, exit codes, file helpers, rank discovery): it imports no part."""
    graph = import_graph()
    outside = {m: sorted(d for d in graph[m] if part_of(d) != "base") for m in graph if part_of(m) == "base"}
    assert {m: deps for m, deps in outside.items() if deps} == {}


def test_config_imports_only_the_base():
    """Checks that need readers, pools or families are registered by their part (`config.register_check`)."""
    graph = import_graph()
    assert sorted(d for d in graph["medtune.config"] if part_of(d) != "base") == []


def test_the_data_checks_are_registered_whatever_is_imported_first():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import medtune.config as c; "
                           "print([f.__module__ + '.' + f.__name__ for f in c.CHECKS])"],
                          cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == ("['medtune.data.checks.source_problems', "
                                   "'medtune.models.checks.family_problems', "
                                   "'medtune.engine.trackers.check_clients']"), done.stderr


def test_data_and_evaluation_take_their_errors_from_the_base():
    """`medtune.base.errors` holds the user-error bases; data and evaluation never import config for one."""
    offenders = []
    for path in [*(PACKAGE / "data").rglob("*.py"), *(PACKAGE / "evaluation").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "medtune.config":
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.endswith("Error")]
    assert offenders == []


def test_the_engine_never_imports_the_command_line():
    graph = import_graph()
    offenders = sorted(m for m, deps in graph.items()
                       if m.startswith("medtune.engine") and "medtune.cli" in deps)
    assert offenders == []


def _depth(node: ast.AST) -> int:
    """The deepest nesting of blocks below `node`, not counting nested functions' own bodies."""
    blocks = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match)
    if hasattr(ast, "TryStar"):
        blocks += (ast.TryStar,)
    deepest = 0
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue  # measured on its own
        inner = _depth(child)
        if isinstance(child, blocks) and not (isinstance(child, ast.If) and _is_elif(node, child)):
            inner += 1
        deepest = max(deepest, inner)
    return deepest


def _is_elif(parent: ast.AST, child: ast.If) -> bool:
    """``elif`` is parsed as an `If` alone in its parent's ``orelse``: the same level, not deeper."""
    return isinstance(parent, ast.If) and parent.orelse == [child]


def oversized_functions() -> list[str]:
    """``path:line name: N lines, D deep`` for every function in medtune/ over the limits."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                depth = _depth(node)
                if lines > MAX_LINES or depth > MAX_DEPTH:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: "
                                 f"{lines} lines, {depth} deep")
    return found


def test_depth_counts_blocks_and_elif_as_one_level():
    src = ("def f(x):\n"
           "    for a in x:\n"
           "        if a:\n"
           "            pass\n"
           "        elif not a:\n"
           "            with open(a) as h:\n"
           "                pass\n"
           "    def g():\n"
           "        if x:\n"
           "            if x:\n"
           "                if x:\n"
           "                    if x:\n"
           "                        pass\n")
    f = ast.parse(src).body[0]
    assert _depth(f) == 3
    assert _depth(f.body[1]) == 4


def test_no_function_too_long_or_too_deep():
    found = oversized_functions()
    assert found == [], (f"over {MAX_LINES} lines or {MAX_DEPTH} blocks deep:\n  " + "\n  ".join(found))


def test_the_ranks_main_fits_on_a_screen():
    """The design asks the rank's `main()` to build, train and clean up in at most 60 lines."""
    path = PACKAGE / "engine" / "main.py"
    main = next(n for n in ast.parse(path.read_text()).body
                if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.end_lineno - main.lineno + 1 <= 60


def test_every_integration_test_is_slow_and_the_inner_loop_has_none():
    """``pytest -m "not slow"`` (the fast inner loop) collects no test that starts real ranks."""
    import subprocess
    import sys

    root = PACKAGE.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "not slow", "tests/integration", "tests/unit/config/test_bad_inputs_config.py"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deselected" in done.stdout and collected and not [c for c in collected if c.startswith("tests/integration")], done.stdout[-2000:]
    assert not [c for c in collected if "within_seconds" in c], collected


def test_the_rank_entry_runs_without_the_command_line():
    """``python -m medtune.engine.main`` imported medtune.cli, which imported engine.main again
    (the shape of lm-evaluation-harness#2562's partially initialised ``__main__``)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "medtune.engine.main", "--help"],
                          cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--run-dir" in done.stdout, done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "medtune.engine.entry" in imported and "medtune.cli" not in imported


@pytest.mark.slow  # a fresh interpreter per module (torch for a dozen): about a minute
def test_every_module_imports_first_in_a_fresh_interpreter():
    """A cycle resolved in one import order only fails in the other (token-savior#78's shape)."""
    import subprocess
    import sys

    failed = {}
    for name in _modules():
        done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=PACKAGE.parent,
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            failed[name] = done.stderr.strip().splitlines()[-1]
    assert failed == {}


def test_unit_tests_mirror_the_parts():
    """tests/unit/<part>/ for every part of `ALLOWED`; at the top only the repository-wide tests."""
    unit = PACKAGE.parent / "tests" / "unit"
    folders = {p.name for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(ALLOWED), folders
    top = {p.name for p in unit.glob("test_*.py")}
    assert top == {"test_structure.py", "test_check_wheels.py", "test_locked_versions.py"}, top
    for folder in folders:
        assert (unit / folder / "__init__.py").is_file() and list((unit / folder).glob("test_*.py")), folder
