# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install medtune into it first (once; again when setup.py changes).
#
# torch: without a CUDA GPU we install the CPU build torch==$(TORCH_VERSION)
# (our machines hold its wheel on disk; elsewhere set TORCH_INDEX=https://download.pytorch.org/whl/cpu
# so pip does not fetch the multi-GB CUDA build). With `nvidia-smi` present, pip's default
# CUDA build of the same version is installed; add the flash-attn extra with `make flash`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
# The versions the suite was proven with (see constraints.txt; `make lock` rewrites it).
CONSTRAINTS := constraints.txt

.PHONY: demo test flash clean lock gpu-check gpu-check-rehearsal

$(STAMP): setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing torch==$(TORCH_VERSION) (CUDA build)"; \
		$(BIN)/pip install -q -c $(CONSTRAINTS) torch==$(TORCH_VERSION); \
	else \
		echo "no CUDA GPU: installing the CPU build torch==$(TORCH_VERSION)"; \
		$(BIN)/pip install -q -c $(CONSTRAINTS) torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev,wandb,mlflow]'
	touch $@

demo: $(STAMP)
	$(BIN)/medtune train recipes/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest tests

# The one-call GPU check (README: GPU check). On the lent GPU machine it runs that machine's own
# python3 plus the wheels of tools/build_gpu_wheels.sh in .whl/, never this venv.
OUT ?= gpu-check-out
gpu-check:
	bash tools/gpu_check.sh $(OUT)

gpu-check-rehearsal: $(STAMP)
	PYTHON=$(abspath $(BIN))/python bash tools/gpu_check.sh $(OUT) --cpu-rehearsal

flash: $(STAMP)
	$(BIN)/pip install -e '.[flash]' --no-build-isolation

# After installing newer versions into .venv and running `make test` green with them:
# write them down as the versions everyone installs.
lock:
	@{ sed -n '/^#/p' $(CONSTRAINTS); $(BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) runs
