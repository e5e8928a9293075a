# Quick start: `make demo` (pretrain a small model on built-in synthetic clips) and `make test`.
# Both create .venv on first use and install everything from the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CI has no GPU: build the CUDA extension for Hopper only, with both cores.
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= 2
# Each stack is a CUDA build of torch (about 6 GiB installed); pip's cache would keep a second copy of every wheel
# it downloads, which once ran a CI machine out of disk. Installs stop first, in one line, when the disk is short.
PIP_INSTALL = -m pip install -q --no-cache-dir
NEED_GIB = 7
CHECK_DISK = $(PYTHON) -c 'import shutil, sys; free = shutil.disk_usage(".").free / 2**30; \
  free < $(NEED_GIB) and sys.exit(f"Makefile: only {free:.1f} GiB free on this disk; installing $(@D) needs about $(NEED_GIB) GiB")'

# The GPU machine's stack: Python 3.12, torch 2.11.0 (+cu130), triton 3.6.0, transformers 5.17.0, no av / decord.
# `make test` also runs, on it, the tests of what must work there (op registration, the ops, the fused model, the
# sync-free step, the GPU script) and the GPU script's rehearsal. Its CUDA extension is not built here (the GPU
# machine builds its own; this tree's build belongs to .venv).
PINNED ?= .venv-pinned
PINNED_PY := $(PINNED)/bin/python
PINNED_STAMP := $(PINNED)/.installed
PINNED_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12) \
                 $(PYTHON))
GPU_STACK := torch==2.11.0 triton==3.6.0 transformers==5.17.0
# Named one by one (no wildcard): `test-pinned` stops, naming it, when one of them is missing.
PINNED_TESTS = tests/ops tests/test_models.py tests/test_sync_free.py tests/test_train_step.py tests/test_gpu_script.py \
               tests/test_fake_cuda_trace.py tests/test_triton_sm90a.py tests/test_data_gpu_aug.py

.PHONY: install install-pinned test suite rehearse test-pinned lint demo gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@$(CHECK_DISK)
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PY) $(PIP_INSTALL) "torch>=2.11" ninja
	$(PY) $(PIP_INSTALL) --no-build-isolation -e ".[dev,hf,timm,decord,export]"
	touch $(STAMP)

install-pinned: $(PINNED_STAMP)

$(PINNED_STAMP): pyproject.toml setup.py
	@$(CHECK_DISK)
	$(PINNED_PYTHON) -m venv $(PINNED)
	$(PINNED_PY) $(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PINNED_PY) $(PIP_INSTALL) $(GPU_STACK) ninja $$($(PINNED_PY) .ci/pinned_deps.py)
	VIDEOMAE_SKIP_CUDA_BUILD=1 $(PINNED_PY) $(PIP_INSTALL) --no-build-isolation --no-deps -e .
	$(PINNED_PY) -c 'import sys, torch, triton, transformers as t; \
	  print("pinned stack: python", sys.version.split()[0], torch.__version__, triton.__version__, t.__version__)'
	touch $(PINNED_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Both stacks; the whole suite last, so that CI closes on its summary. TRITON_INTERPRET=1 runs every Triton
# kernel on the CPU, which is how CI tests them.
test: lint test-pinned rehearse suite

# VIDEOMAE_REHEARSAL: the suite's rehearsal test checks the results `rehearse` has just written (this commit's)
# instead of running the rehearsal a second time.
suite: $(STAMP)
	VIDEOMAE_REHEARSAL=bench/results/rehearsal TRITON_INTERPRET=1 $(PY) -m pytest -q -p no:cacheprovider tests

# Every step of bench/gpu.sh on the CPU at tiny shapes.
rehearse: $(STAMP)
	rm -rf bench/results/rehearsal
	PYTHON=$(PY) bash bench/gpu.sh --rehearse

test-pinned: $(PINNED_STAMP)
	@for t in $(PINNED_TESTS); do [ -e "$$t" ] || { echo "Makefile: PINNED_TESTS names $$t, which does not exist" >&2; exit 1; }; done
	rm -rf bench/results/rehearsal-pinned
	PYTHON=$(PINNED_PY) BENCH_RESULTS=bench/results/rehearsal-pinned bash bench/gpu.sh --rehearse
	VIDEOMAE_REHEARSAL=bench/results/rehearsal-pinned TRITON_INTERPRET=1 $(PINNED_PY) -m pytest -q \
	  -p no:cacheprovider $(PINNED_TESTS)

# On a GPU machine (its own python3, or PYTHON=...): every GPU check and benchmark, see bench/gpu.sh.
gpu:
	bash bench/gpu.sh

demo: $(STAMP)
	$(PY) -m videomae pretrain --output_dir runs/demo --overwrite

clean:
	rm -rf $(VENV) $(PINNED) build *.egg-info runs bench/results/rehearsal bench/results/rehearsal-pinned
