#!/usr/bin/env bash
# One command on the GPU machine: build the extension, then the quick pretraining-step benchmark.
#   bash bench/gpu_train_step.sh            # ViT-B: every impl, batch sweep, attention check+tuning, profile
# Full mode, one command each (< 10 min): MODE=full bash bench/gpu_train_step.sh --parts compare --models S,B
#   then ... --parts compare --models L, then ... --parts scaling
# The official peer runs when VIDEOMAE_OFFICIAL (default third_party/VideoMAE) holds modeling_pretrain.py:
#   git --git-dir=/work/.mirror/MCG-NJU+VideoMAE/repo archive HEAD modeling_pretrain.py modeling_finetune.py \
#     | tar -x -C third_party/VideoMAE      # and carry third_party/VideoMAE if it is git-ignored
# Results: bench/results/train_step-<device>-<date>.{json,png}, copied to $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv || true
$PY -m pip install --no-build-isolation --no-deps -e . > "${OUT:-/tmp}/pip_install.log" 2>&1 \
  || { tail -30 "${OUT:-/tmp}/pip_install.log"; exit 1; }
$PY -c "import videomae, videomae.ops as o; print('videomae', videomae.__version__); print(o.backend_report()['cube_embed'])"
OFFICIAL=${VIDEOMAE_OFFICIAL:-third_party/VideoMAE}
args=()
[[ -f "$OFFICIAL/modeling_pretrain.py" ]] && args+=(--official "$OFFICIAL") || echo "no official checkout at $OFFICIAL: skipping that peer"
[[ "${MODE:-quick}" == quick ]] && args+=(--quick)
$PY bench/train_step.py "${args[@]}" "$@" 2>&1 | tee "${OUT:-/tmp}/train_step.log"
