#!/usr/bin/env bash
# The GPU check in one call (tools/gpu_check.py says what it does):
#
#   bash tools/build_gpu_wheels.sh && bash tools/gpu_check.sh OUT             # on the lent GPU machine
#   bash tools/gpu_check.sh OUT --cpu-rehearsal                              # here, without a GPU
#
# On the GPU machine it runs that machine's own `python3` (torch, transformers, accelerate are
# there) plus the wheels carried in .whl/, never a virtual environment of this repository.
# $PYTHON overrides the interpreter; the summary table is printed last; exit code 1 if a step failed.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ]; then
    echo "usage: tools/gpu_check.sh OUT [--cpu-rehearsal]" >&2
    exit 2
fi
PY="${PYTHON:-python3}"
cd "$REPO" && exec "$PY" tools/gpu_check.py --python "$PY" "$@"
