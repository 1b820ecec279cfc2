"""The GPU check in one call: install the carried wheels, run tests/gpu, a resumed ZeRO-3 run, the benchmark.

Started by ``tools/gpu_check.sh OUT [--cpu-rehearsal]`` (or ``make gpu-check OUT=DIR``); imports
nothing but the standard library, so it runs before any wheel is installed. Every step has its own
time budget (its process group is killed at the end of it) and the whole check a deadline
(``--budget``, 480 s: a lent GPU's call is at most 10 minutes and the lease 15); a failing step is
recorded and the next one runs. Exit code 1 when a step failed.

Steps, each a real subprocess with ``PYTHONPATH=REPO:SITE``:

0. ``install``: ``pip install --no-index --no-deps --target SITE`` of the wheels in ``.whl/``
   (``tools/build_gpu_wheels.sh`` made them), then ``tools/check_wheels.py --installed SITE``:
   every requirement met by the versions there, medtune's modules import, versions into
   ``versions.txt``.
1. ``tests/gpu``: pytest over the whole folder (``pytest.txt``, ``pytest.xml``).
2. ``train``: ``tools/gpu_resume_check.py``: a 1-rank ZeRO-3 ``medtune train`` in bf16 with
   ``torch_varlen``, SIGKILLed inside a checkpoint save, resumed, bit-exact against an
   uninterrupted run, export reloaded (``train.txt``).
3. ``bench``: ``benchmarks/gpu_throughput.py`` on the Llama-3.2-1B shape: packed (each backend)
   vs padded, tokens/s, TFLOP/s, MFU, and the DeepSpeed engine vs the plain PyTorch step
   (``bench.txt``).
4. ``summary.json`` and ``summary.md`` (a markdown table, printed last).

OUT receives at most 7 files, directly in it (what a lent machine sends back is at most 8 files).

``--cpu-rehearsal`` runs the same orchestration here: the interpreter running this script and CPU
stand-ins for the GPU parts (tests/gpu skip themselves; the resume check in fp32 with
``sdpa_varlen`` on the tiny Llama; the benchmark with ``--device cpu`` on a 1-layer model of hidden
64). The install step differs most, since the carried wheels are for Python 3.12 and this
interpreter may not be: it checks the wheel folder (``tools/check_wheels.py``), installs every
wheel with a Python 3.12 when one is found (and imports the compiled ones with it), and installs
into SITE, for this interpreter, the wheels whose tags fit it, which the later steps then import
exactly as on the GPU. Without ``.whl/`` (as in CI) it builds medtune's own wheel as the stand-in
and proves that install by importing medtune from SITE alone.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Check:
    """The steps run so far, their logs in OUT, and the deadline."""

    def __init__(self, out: Path, work: Path, rehearsal: bool, budget: float, python: str):
        self.out, self.work, self.rehearsal, self.python = out, work, rehearsal, python
        self.began = time.monotonic()
        self.deadline = self.began + budget
        self.steps: list[dict] = []
        self.site = work / "site"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "MEDTUNE_CACHE": str(work / "cache"), "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONPATH": os.pathsep.join([str(REPO), str(self.site)])}
        self.env.pop("MEDTUNE_TEST_HOOKS", None)  # tests.hooks: no injected faults here

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, argv: list[str], log: Path, budget: float, env: dict | None = None,
            append: bool = False, cwd: Path = REPO) -> tuple[int, float]:
        """Run `argv` in its own process group, output to `log`; kill the group after `budget` s.

        Returns (exit code, seconds); the exit code is 124 on a timeout, as `timeout` gives.
        """
        budget = max(5.0, min(budget, self.left() - 15))
        began = time.monotonic()
        with open(log, "a" if append else "w") as fh:
            fh.write(f"$ {' '.join(argv)}    (budget {budget:.0f} s)\n")
            fh.flush()
            proc = subprocess.Popen(argv, cwd=cwd, env=env or self.env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = 124
                fh.write(f"\n[gpu-check] killed after its budget of {budget:.0f} s\n")
        return rc, time.monotonic() - began

    def record(self, name: str, result: str, seconds: float, numbers: str, log: str, **extra) -> None:
        step = {"step": name, "result": result, "seconds": round(seconds, 1), "numbers": numbers,
                "log": log, **extra}
        self.steps.append(step)
        print(f"[gpu-check] {name}: {result} ({seconds:.0f} s) {numbers}", flush=True)


# ----------------------------------------------------------------------------------------------
# 0. the carried wheels into a private folder
# ----------------------------------------------------------------------------------------------

def _pip_install(check: Check, python: str, wheels: list[str], site: Path, log: Path) -> int:
    site.mkdir(parents=True, exist_ok=True)
    rc, _ = check.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                       "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target",
                       str(site), *wheels], log, 120, append=True)
    return rc


def _python312() -> str | None:
    """A Python 3.12 on this machine (the GPU machine's version), for installing its wheels here."""
    found = [shutil.which("python3.12"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3")))]
    for candidate in filter(None, found):
        try:
            if subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                              capture_output=True, timeout=30).returncode == 0:
                return candidate
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def _fits_here(python: str, wheels: list[str]) -> list[str]:
    """The wheels whose tags fit `python` (asked of it, through `packaging`)."""
    code = ("import sys; from packaging.tags import sys_tags; from packaging.utils import "
            "parse_wheel_filename as p; ok = set(sys_tags()); "
            "print('\\n'.join(w for w in sys.argv[1:] if p(w.rsplit('/', 1)[-1])[3] & ok))")
    out = subprocess.run([python, "-c", code, *wheels], capture_output=True, text=True, check=True)
    return out.stdout.split()


def install(check: Check, wheel_dir: Path) -> None:
    log = check.out / "versions.txt"
    log.write_text("")
    began = time.monotonic()
    wheels = sorted(str(w) for w in wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    notes, ok = [], True
    if not check.rehearsal:
        if not wheels:
            check.record("install", "failed", 0, f"no wheels in {wheel_dir}: run "
                         "tools/build_gpu_wheels.sh here and carry .whl", "versions.txt")
            return
        ok = _pip_install(check, check.python, wheels, check.site, log) == 0
        notes.append(f"{len(wheels)} wheels into a private folder")
    elif wheels:
        rc, _ = check.run([check.python, str(REPO / "tools" / "check_wheels.py"), str(wheel_dir)], log, 60,
                          append=True)
        ok = rc == 0
        notes.append(f"{len(wheels)} wheels checked for cp312")
        py312 = _python312()
        if py312:
            site312 = check.work / "site312"
            rc = _pip_install(check, py312, wheels, site312, log)
            imports = "import pydantic, pydantic_core, multiprocess, dill, hjson, annotated_types, typing_inspection"
            rc = rc or check.run([py312, "-c", imports], log, 60, append=True,
                                 env={**check.env, "PYTHONPATH": str(site312)})[0]
            ok = ok and rc == 0
            notes.append(f"all installed and the compiled ones imported by Python 3.12 ({py312})")
        else:
            notes.append("no Python 3.12 here: cp312 wheels not installed")
        fitting = _fits_here(check.python, wheels)
        if fitting:
            ok = ok and _pip_install(check, check.python, fitting, check.site, log) == 0
        left_out = sorted(Path(w).name.split("-")[0] for w in set(wheels) - set(fitting))
        notes.append(f"{len(fitting)} fit this Python and are used by the steps below"
                     + (f"; not: {', '.join(left_out)} (this environment's own copies)" if left_out else ""))
    else:
        stand_in, src = check.work / "stand-in-wheels", check.work / "src"
        shutil.copytree(REPO / "medtune", src / "medtune", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("setup.py", "README.md"):
            shutil.copy(REPO / name, src / name)
        rc, _ = check.run([check.python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "--disable-pip-version-check", "-w", str(stand_in),
                           str(src)], log, 120, append=True)
        built = sorted(str(w) for w in stand_in.glob("*.whl"))
        ok = rc == 0 and bool(built) and _pip_install(check, check.python, built, check.site, log) == 0
        code = ("import medtune, sys; from pathlib import Path; "
                "assert Path(medtune.__file__).is_relative_to(Path(sys.argv[1])), medtune.__file__; "
                "print('medtune imported from', medtune.__file__)")
        ok = ok and check.run([check.python, "-c", code, str(check.site)], log, 60, append=True,
                              env={**check.env, "PYTHONPATH": str(check.site)}, cwd=check.work)[0] == 0
        for done in [check.site / "medtune", *check.site.glob("medtune-*.dist-info")]:
            shutil.rmtree(done, ignore_errors=True)  # the steps below use the repository, as on the GPU
        notes.append(f"no {wheel_dir.name}/ here: medtune's own wheel installed and imported as the stand-in")
    rc, _ = check.run([check.python, str(REPO / "tools" / "check_wheels.py"), "--installed", str(check.site)],
                      log, 90, append=True)
    ok = ok and rc == 0
    text = log.read_text()
    versions = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S+)\s+(\S+)\s+(?:carried|installed)$",
                                                               text, re.M)}
    gpu = re.search(r"^GPU: (.*)$", text, re.M)
    numbers = (f"torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}, "
               f"deepspeed {versions.get('deepspeed', '?')}; GPU {gpu.group(1) if gpu else '?'}; "
               + "; ".join(notes))
    check.record("install", "passed" if ok else "failed", time.monotonic() - began, numbers,
                 "versions.txt", versions=versions)


# ----------------------------------------------------------------------------------------------
# 1-3
# ----------------------------------------------------------------------------------------------

def pytest_gpu(check: Check, budget: float) -> None:
    log = check.out / "pytest.txt"
    rc, seconds = check.run([check.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                             f"--junitxml={check.out / 'pytest.xml'}", "tests/gpu"], log, budget)
    text = log.read_text()
    counts = {k: int(v) for v, k in re.findall(
        r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", text.splitlines()[-1]
        if text.strip() else "")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or f"exit {rc}"
    if rc == 124:
        summary += f"; stopped at its budget of {budget:.0f} s"
    ok = rc == 0
    if counts.get("skipped") and not counts.get("passed"):
        if check.rehearsal:
            summary += " (no CUDA GPU here: every GPU test skips itself)"
        else:
            summary += " (every test skipped: torch sees no CUDA GPU)"
            ok = False
    check.record("tests/gpu", "passed" if ok else "failed", seconds, summary, "pytest.txt",
                 counts=counts, exit_code=rc)


def _last_lines(log: Path, n: int = 1, pattern: str = "") -> str:
    """The last `n` non-empty lines of `log` (those holding `pattern`, if given), joined by ' / '."""
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip() and pattern in x]
    return " / ".join(lines[-n:])[:300]


def train(check: Check, budget: float) -> None:
    log, numbers = check.out / "train.txt", check.work / "train.json"
    device = "cpu" if check.rehearsal else "cuda"
    rc, seconds = check.run([check.python, "tools/gpu_resume_check.py", "--device", device, "--work",
                             str(check.work / "train"), "--json", str(numbers)], log, budget)
    data = json.loads(numbers.read_text()) if numbers.exists() else {}
    if data:
        kernel = data["recipe"]["kernels"]["attention"]
        dtype = data["recipe"]["model"]["dtype"]
        text = (f"1 rank ZeRO-3, {dtype}, {kernel}; killed in the save of step {data['killed_in_save_of_step']}, "
                f"resumed from {data.get('checkpoint_after_kill')}; bit-exact {data.get('bit_exact')} "
                f"(max loss diff {data.get('max_loss_diff', float('nan')):.3g}, "
                f"{data.get('tensors_differing', '?')}/{data.get('tensors', '?')} tensors differ)")
        if "repeat" in data:
            text += (f"; two uninterrupted runs: losses equal {data['repeat']['losses_equal']}, weights "
                     f"equal {data['repeat']['weights_equal']}")
        if "reload_rel_diff" in data:
            text += f"; export reloaded, logits rel. diff {data['reload_rel_diff']:.1e}"
        if "error" in data:
            first = data["error"].splitlines()[0][:200]
            said = [x for x in data["error"].splitlines() if "error" in x.lower() and x != data["error"].splitlines()[0]]
            text += f"; {first}" + (f" {said[-1].strip()[:200]}" if said else "")
    else:
        text = (f"exit {rc}" + (f"; stopped at its budget of {budget:.0f} s" if rc == 124 else "")
                + f": {_last_lines(log, 2)}")
    check.record("train", "passed" if rc == 0 and data.get("passed") else "failed", seconds, text,
                 "train.txt", details=data)


def bench(check: Check, budget: float) -> None:
    log, numbers = check.out / "bench.txt", check.work / "bench.json"
    argv = [check.python, "benchmarks/gpu_throughput.py", "--json", str(numbers)]
    argv += (["--device", "cpu", "--layers", "1", "--hidden", "64", "--vocab", "1000", "--tokens", "512",
              "--warmup", "1", "--steps", "2"] if check.rehearsal else ["--warmup", "2", "--steps", "5"])
    rc, seconds = check.run(argv, log, budget)
    data = json.loads(numbers.read_text()) if numbers.exists() else {}
    if data:
        parts = []
        for v in data["variants"]:
            if "error" in v:
                parts.append(f"{v['variant']}: FAILED {v['error'].splitlines()[0][:160]}")
                continue
            mfu = f", MFU {v['mfu']:.1%}" if v.get("mfu") is not None else ""
            parts.append(f"{v['variant']}: {v['tokens_per_s']:,.0f} tok/s, {v['tflops']:.1f} TFLOP/s{mfu}")
        if data.get("engine_vs_plain") is not None:
            parts.append(f"engine/plain {data['engine_vs_plain']:.3f}")
        text = "; ".join(parts)
    else:
        text = (f"exit {rc}" + (f"; stopped at its budget of {budget:.0f} s" if rc == 124 else "")
                + f": {_last_lines(log, 2)}")
    check.record("bench", "passed" if rc == 0 and data else "failed", seconds, text, "bench.txt",
                 details=data)


# ----------------------------------------------------------------------------------------------
# 4. summary
# ----------------------------------------------------------------------------------------------

def summary(check: Check, mode: str) -> str:
    total = time.monotonic() - check.began
    failed = [s["step"] for s in check.steps if s["result"] != "passed"]
    doc = {"mode": mode, "passed": not failed, "failed": failed, "seconds": round(total, 1),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "steps": check.steps}
    (check.out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"GPU check ({mode}), {doc['finished']}, {total:.0f} s: "
             + ("all passed" if not failed else f"FAILED: {', '.join(failed)}"), "",
             "| check | result | s | numbers |", "| --- | --- | ---: | --- |"]
    for s in check.steps:
        numbers = s["numbers"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {s['step']} | {s['result']} | {s['seconds']:.0f} | {numbers} |")
    bench_rows = next((s.get("details", {}).get("variants") for s in check.steps if s["step"] == "bench"), None)
    if bench_rows:
        lines += ["", "| variant | tokens/s | TFLOP/s | MFU | vs padded |", "| --- | ---: | ---: | ---: | ---: |"]
        for v in bench_rows:
            if "error" in v:
                lines.append(f"| {v['variant']} | failed | | | {v['error'].splitlines()[0][:100]} |")
                continue
            mfu = f"{v['mfu']:.1%}" if v.get("mfu") is not None else "-"
            vs = f"{v['vs_padded']:.2f}x" if v.get("vs_padded") is not None else "-"
            lines.append(f"| {v['variant']} | {v['tokens_per_s']:,.0f} | {v['tflops']:.1f} | {mfu} | {vs} |")
    text = "\n".join(lines) + "\n"
    (check.out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output folder (at most 7 files are written, directly in it)")
    p.add_argument("--cpu-rehearsal", action="store_true",
                   help="run here, without a GPU, with CPU stand-ins for the GPU parts")
    p.add_argument("--wheels", type=Path, default=Path(os.environ.get("MEDTUNE_WHEELS", REPO / ".whl")),
                   help="folder of carried wheels (default .whl, or $MEDTUNE_WHEELS)")
    p.add_argument("--budget", type=float, help="seconds for the whole check (default 480; 1200 for the "
                   "rehearsal)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for every step (default: the one running this)")
    p.add_argument("--only", metavar="STEPS", default="tests,train,bench",
                   help="comma-separated steps after the install, to rerun some on a short lease "
                        "(default tests,train,bench)")
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    args.budget = args.budget or (1200 if args.cpu_rehearsal else 480)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="medtune-gpu-check-"))
    check = Check(args.out.resolve(), work, args.cpu_rehearsal, args.budget, args.python)
    mode = "CPU rehearsal" if args.cpu_rehearsal else "GPU"
    print(f"[gpu-check] {mode}: output in {check.out}, work in {work}, {args.budget:.0f} s budget", flush=True)
    try:
        install(check, args.wheels)
        # On the GPU: tests/gpu ~2 min, the three runs of train ~2 min, the benchmark ~2 min. The
        # rehearsal has no lease to fit and may share a few CPU cores: it gets more time.
        slow = 3 if args.cpu_rehearsal else 1
        for name, step, budget in (("tests", pytest_gpu, 140), ("train", train, 170), ("bench", bench, 150)):
            if name in only:
                step(check, budget * slow)
    finally:
        text = summary(check, mode)
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + text, flush=True)
    return 0 if all(s["result"] == "passed" for s in check.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
