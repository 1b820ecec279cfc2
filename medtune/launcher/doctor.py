"""``medtune doctor``: what this node has, as a table, and whether a launch would stop on it."""
from __future__ import annotations

import importlib
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    problem: bool = False
    """True when a launch from this node would fail because of it."""


def checks(hostfile: Path | None = None) -> list[Check]:
    out = [Check("python", platform.python_version())]
    torch = _module("torch")
    if torch is None:
        return out + [Check("torch", "not importable", True)]
    out.append(Check("torch", torch.__version__))
    cuda = torch.cuda.is_available()
    out.append(Check("cuda", f"{torch.version.cuda} ({torch.cuda.device_count()} GPUs)" if cuda
                     else "not available: ranks train on CPU (gloo, fp32)"))
    for i in range(torch.cuda.device_count() if cuda else 0):
        bf16 = torch.cuda.get_device_capability(i) >= (8, 0)
        out.append(Check(f"gpu {i}", f"{torch.cuda.get_device_name(i)}, bf16 {'yes' if bf16 else 'no'}"))
    flash = _module("flash_attn")
    out.append(Check("flash-attn", flash.__version__ if flash else "not installed (pip install -e '.[flash]')"))
    varlen = _module("torch.nn.attention.varlen")
    out.append(Check("torch varlen_attn", ("available" if cuda else "present, CUDA only")
                     if varlen and hasattr(varlen, "varlen_attn") else "not in this torch"))
    ds = _module("deepspeed")
    if ds is None:
        out.append(Check("deepspeed", "not importable", True))
    else:
        from deepspeed.accelerator import get_accelerator

        out.append(Check("deepspeed", f"{ds.__version__}, accelerator {get_accelerator().device_name()}, "
                                      f"backend {get_accelerator().communication_backend_name()}"))
    for name in ("transformers", "datasets"):
        mod = _module(name)
        out.append(Check(name, mod.__version__ if mod else "not importable", mod is None))
    nccl = sorted(k for k in os.environ if k.startswith(("NCCL_", "FI_")))
    out.append(Check("NCCL/FI env", ", ".join(f"{k}={os.environ[k]}" for k in nccl) or "(none set)"))
    if hostfile is not None:
        out += _hostfile_checks(hostfile)
    return out


def _hostfile_checks(path: Path) -> list[Check]:
    from medtune.launcher.hostfile import HostfileError, parse

    try:
        hosts = parse(path)
    except HostfileError as err:
        return [Check("hostfile", str(err), True)]
    out = [Check("hostfile", f"{len(hosts)} hosts, {sum(h.slots for h in hosts)} slots")]
    for h in hosts:
        if h.name in ("localhost", "127.0.0.1"):
            out.append(Check(f"ssh {h.name}", "this node"))
            continue
        done = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", h.name, "true"],
                              capture_output=True, text=True)
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        out.append(Check(f"ssh {h.name}", "reachable" if done.returncode == 0 else f"unreachable: {reason}",
                         done.returncode != 0))
    return out


def _module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install is a finding, not a crash
        return None


def table(found: list[Check]) -> str:
    width = max(len(c.name) for c in found)
    return "\n".join(f"{'PROBLEM' if c.problem else 'ok':<8}{c.name:<{width + 2}}{c.value}" for c in found)
