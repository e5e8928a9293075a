# Quick start: `make demo` (pretrain a small model on built-in synthetic clips) and `make test`.
# Both create .venv on first use and install everything from the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CI has no GPU: build the CUDA extension for Hopper only, with both cores.
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= 2

.PHONY: install test lint demo gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "torch>=2.11" ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[dev,hf,timm,decord]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# TRITON_INTERPRET=1 runs every Triton kernel on the CPU, which is how CI tests them.
test: $(STAMP) lint
	TRITON_INTERPRET=1 $(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(PY) -m videomae pretrain --output_dir runs/demo

clean:
	rm -rf $(VENV) build *.egg-info runs
