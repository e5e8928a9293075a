#!/usr/bin/env bash
# Every GPU check and benchmark of the project, for a lent H100/H200 (each part fits one 10-minute call).
#   bash bench/gpu.sh check   # build videomae._C, GPU tests (Triton + CUDA ops, attention, fused model),
#                             # compute-sanitizer memcheck/racecheck, op microbenchmarks -> bench/results/ops-*
#   bash bench/gpu.sh train   # end-to-end pretraining step vs eager / HF sdpa / official -> train_step-*
#   bash bench/gpu.sh loader  # data loader incl. GPU augmentation -> loader-*
# Results land in bench/results/ and, when $OUT is set (the device tool), are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
part=${1:-check}
shift || true
copy_out() { [[ -n "${OUT:-}" ]] && cp "$@" "$OUT"/ 2>/dev/null || true; }

case "$part" in
  check)
    PYTHON=$PY bash bench/gpu_cuda_check.sh
    $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_ops_gpu.py tests/test_attention.py
    $PY bench/bench_ops.py "$@"
    copy_out bench/results/ops-*
    ;;
  train)
    PYTHON=$PY bash bench/gpu_train_step.sh "$@"
    ;;
  loader)
    $PY bench/loader.py "$@"  # measures GPU augmentation when a GPU is present
    copy_out bench/results/loader-*
    ;;
  *)
    echo "usage: bash bench/gpu.sh check|train|loader [args]" >&2
    exit 2
    ;;
esac
