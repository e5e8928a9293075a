#!/usr/bin/env bash
# The CUDA extension on a GPU machine, one command: build videomae._C for this GPU, run its GPU tests and the
# shared op suite on the cuda backend, then compute-sanitizer memcheck and racecheck on every op fwd + bwd.
#   bash bench/gpu_cuda_check.sh            (PYTHON=..., TORCH_CUDA_ARCH_LIST=..., MAX_JOBS=... to override)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# Build for this GPU only (fast), and fail loudly instead of installing without the extension.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export VIDEOMAE_FORCE_CUDA=1

echo "== build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"
time $PY -m pip install --no-build-isolation --no-deps -e .
$PY -c "from videomae import _ext; assert _ext.available(), _ext.reason(); print(_ext.build_info())"

echo "== GPU tests: tests/test_cuda_ext.py and the cuda cases of tests/test_ops_gpu.py"
$PY -m pytest -q -p no:cacheprovider -m gpu -k cuda tests/test_cuda_ext.py tests/test_ops_gpu.py

SAN=$(command -v compute-sanitizer || true)
for cand in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer"; do
  [ -z "$SAN" ] && [ -x "$cand" ] && SAN=$cand
done
[ -n "$SAN" ] || { echo "compute-sanitizer not found (set CUDA_HOME or PATH)" >&2; exit 1; }
# Without the caching allocator every tensor is its own allocation: an access past its end is reported.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
for tool in memcheck racecheck; do
  echo "== compute-sanitizer --tool $tool"
  "$SAN" --tool "$tool" --error-exitcode 1 --print-limit 20 $PY bench/sanitize_ops.py
done
echo "== all CUDA extension checks passed"
