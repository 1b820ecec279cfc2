#!/usr/bin/env bash
# Wheels the lent GPU machine lacks, for its Python 3.12 on x86-64 Linux, into .whl/ (git-ignored).
#
#   bash tools/build_gpu_wheels.sh            # then: make gpu-check OUT=DIR (or tools/gpu_check.sh DIR)
#   EXTRA="pyarrow" bash tools/build_gpu_wheels.sh   # also carry these (binary wheels, this env's versions)
#
# The GPU machine (an H200, no network) has torch 2.11, transformers 5.17, accelerate, numpy,
# pyarrow, pandas, fsspec, xxhash, scikit-learn, sentencepiece, tensorboard, safetensors, pytest...
# (see its package list); it lacks deepspeed, datasets and pydantic. Each one travels here as the
# version this machine's environment runs (so the CPU tests and the GPU check run the same code),
# with its own needs that the GPU machine lacks too. `tools/check_wheels.py` then proves that every
# requirement of every carried wheel is either carried or on that machine, one version each.
# DeepSpeed publishes an sdist only: it is built here as a pure-Python wheel (DS_BUILD_OPS=0), its
# CUDA ops are compiled just in time where a run needs one (ZeRO-3 with a torch optimizer needs none).
# datasets 5.2 asks for pyarrow>=24; the machine's pyarrow version is unknown until the check's install
# step prints it (versions.txt): if it is older, EXTRA=pyarrow carries this one (~45 MiB more).
# Needs pip access to PyPI (or its mirror) on this machine; the result is well under 64 MiB.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
DEST="${WHEELS:-.whl}"

# the versions this environment runs
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
BINARY=(datasets dill multiprocess hjson pydantic pydantic-core annotated-types typing-inspection
        typing-extensions fsspec ${EXTRA:-})
SOURCE=(deepspeed seqeval)  # sdists on PyPI: built here into py3-none-any wheels
pins=()
for name in "${BINARY[@]}"; do pins+=("$name==$(version "$name")"); done

rm -rf "$DEST"
mkdir -p "$DEST"
echo "downloading for cp312 manylinux x86-64: ${pins[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" "${pins[@]}"
for name in "${SOURCE[@]}"; do
    pin="$name==$(version "$name")"
    echo "building a pure-Python wheel: $pin"
    # --no-build-isolation: DeepSpeed's setup.py imports torch (the one installed here); no op is built
    DS_BUILD_OPS=0 DS_BUILD_STRING="" "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "$pin"
done
"$PY" tools/check_wheels.py "$DEST"
