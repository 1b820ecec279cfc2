"""Check a folder of wheels meant for the lent GPU machine: installable there, complete, one of each.

    python tools/check_wheels.py .whl                  # here, before they travel
    python tools/check_wheels.py --installed SITE      # there, after `pip install --target SITE`

For Python 3.12 on x86-64 Linux (the H200 machine's `python3`), it checks that

* every wheel's tags fit that interpreter and platform (cp312, abi3 or pure Python; manylinux);
* no distribution comes twice (two versions stop a ``pip install --no-deps`` of the folder);
* every requirement of every wheel (extras and other platforms' markers left out) and of
  medtune itself (setup.py's ``install_requires``) is either carried, in a version that satisfies
  it, or among the packages that machine already has (``GPU_HAS``, read off the workplace's notes
  on that machine; where they give its version, the version is checked too);
* the folder is under the 64 MiB a call may carry.

Prints one line per wheel and per problem, then the total size; exit code 1 on any problem.

With ``--installed SITE`` (run with SITE on ``PYTHONPATH``) it checks the same
requirements against the versions the running interpreter really finds,
imports what medtune needs, and prints the versions that matter (Python,
torch and its CUDA, the GPU, transformers, deepspeed, datasets...).
"""
from __future__ import annotations

import ast
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LIMIT_MIB = 64
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}

# The 'cuda' image of the nvidia-h200 machines: KINDS.md's "Python packages already there"
# (read 2026-11-17); versions where its pip list gives one (2026-11).
GPU_HAS: dict[str, str | None] = dict.fromkeys("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
GPU_HAS.update({"accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2",
                "safetensors": "0.8.0", "sentencepiece": "0.2.2", "tokenizers": "0.23.2",
                "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0"})


def medtune_requirements() -> list[str]:
    """setup.py's ``install_requires``, read without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return ast.literal_eval(node.value)
    raise ValueError("setup.py has no install_requires")


def check(folder: Path) -> list[str]:
    """Every problem with the wheels in `folder` (empty when they will do); prints what it saw."""
    supported = set(cpython_tags((3, 12), platforms=PLATFORMS)) | \
        set(compatible_tags((3, 12), "cp312", platforms=PLATFORMS))
    problems, carried, needs, unverified = [], {}, [], []
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        return [f"{folder}: no wheels"]
    for whl in wheels:
        name, version, _, tags = parse_wheel_filename(whl.name)
        print(f"  {whl.name:<72}{whl.stat().st_size / 2**20:7.2f} MiB")
        if not tags & supported:
            problems.append(f"{whl.name}: its tags fit no cp312 manylinux x86-64 interpreter")
        if name in carried:
            problems.append(f"{name} is carried twice ({carried[name]} and {version})")
        carried[name] = version
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            msg = Parser().parsestr(z.read(meta).decode())
        needs += [(whl.name, r) for r in msg.get_all("Requires-Dist") or []]
    needs += [("setup.py (medtune)", r) for r in medtune_requirements()]
    for who, text in needs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(MARKERS):
            continue
        name = canonicalize_name(req.name)
        if name in carried:
            have, where = carried[name], "carried"
        elif name in GPU_HAS:
            have, where = GPU_HAS[name], "on the GPU machine"
        else:
            problems.append(f"{who} needs {text}: neither carried nor on the GPU machine")
            continue
        if have is None and req.specifier:
            unverified.append(f"{who.split('-')[0]} needs {text}")
        if have is not None and req.specifier and not req.specifier.contains(Version(str(have)),
                                                                               prereleases=True):
            problems.append(f"{who} needs {text}: {name} {have} is {where}")
    if unverified:
        print("on the GPU machine in a version not known here (its install step checks them): "
              + "; ".join(sorted(set(unverified))))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {total:.1f} MiB in all (a call carries at most {LIMIT_MIB} MiB)")
    if total >= LIMIT_MIB:
        problems.append(f"{folder}: {total:.1f} MiB is over the {LIMIT_MIB} MiB a call carries")
    return problems


VERSIONS = ("torch", "transformers", "deepspeed", "datasets", "accelerate", "huggingface-hub", "tokenizers",
            "safetensors", "pydantic", "pydantic-core", "numpy", "pyarrow", "fsspec", "pandas",
            "sentencepiece", "seqeval", "triton", "typing-extensions", "pytest")
IMPORTS = ("medtune.cli", "medtune.engine.main", "medtune.engine.trainer", "medtune.data.prepare",
           "medtune.evaluation.metrics", "deepspeed", "datasets", "seqeval.metrics", "pydantic")


def check_installed(site: Path) -> list[str]:
    """Problems of the interpreter running this, with `site` on its path; prints the versions."""
    import importlib
    import importlib.metadata as md
    import platform

    problems = []
    print(f"python {platform.python_version()} ({sys.executable}) on {platform.machine()}")
    for name in VERSIONS:
        try:
            dist = md.distribution(name)
            where = "carried" if Path(str(dist.locate_file(""))).resolve() == site.resolve() else "installed"
            print(f"  {name:<20}{dist.version:<16}{where}")
        except md.PackageNotFoundError:
            print(f"  {name:<20}{'-':<16}absent")
    carried = list(md.distributions(path=[str(site)]))
    needs = [(f"{d.metadata['Name']} {d.version}", r) for d in carried for r in d.requires or []]
    needs += [("setup.py (medtune)", r) for r in medtune_requirements()]
    for who, text in needs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{who} needs {text}: {req.name} is not installed")
            continue
        if req.specifier and not req.specifier.contains(Version(have), prereleases=True):
            problems.append(f"{who} needs {text}: {req.name} {have} is installed")
    for module in IMPORTS:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 (any failure to import is the finding)
            problems.append(f"import {module}: {type(err).__name__}: {err}")
    try:
        import torch

        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
              f"{torch.backends.cudnn.version() if torch.cuda.is_available() else '-'}")
        if torch.cuda.is_available():
            print(f"GPU: {torch.cuda.get_device_name()}, compute capability "
                  f"{'.'.join(map(str, torch.cuda.get_device_capability()))}, "
                  f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, "
                  f"bf16 {torch.cuda.is_bf16_supported()}")
        else:
            print("GPU: none (CUDA not available)")
        from medtune.kernels.attention import VARLEN, unavailable

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        for backend in VARLEN:
            print(f"  attention {backend:<14}{unavailable(backend, device, dtype, 64) or 'runs here'}")
        try:
            import inspect

            from torch.nn.attention.varlen import varlen_attn

            print(f"  torch varlen_attn{inspect.signature(varlen_attn)}")  # medtune passes window_size, enable_gqa
        except ImportError:
            pass
    except Exception as err:  # noqa: BLE001
        problems.append(f"torch: {type(err).__name__}: {err}")
    return problems


if __name__ == "__main__":
    if sys.argv[1:2] == ["--installed"]:
        found = check_installed(Path(sys.argv[2]))
        for line in found:
            print(f"problem: {line}")
        print("installed: OK" if not found else f"installed: {len(found)} problem(s)")
        sys.exit(1 if found else 0)
    found = check(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".whl"))
    for line in found:
        print(f"problem: {line}")
    print("wheels: OK" if not found else f"wheels: {len(found)} problem(s)")
    sys.exit(1 if found else 0)
