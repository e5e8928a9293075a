#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one call on a lent H100/H200, in at most 540 s of steps:
#   GIT_SHA=<sha> bash bench/gpu.sh    # the GPU machine gets the tree without .git: name the commit
#   bash bench/gpu.sh --plan           # each step with its limit; the sum fits the budget (CI checks it)
#   bash bench/gpu.sh --rehearse       # every step on the CPU at tiny shapes, the GPU image's packages only
#                                      # (CI runs it on both stacks: 135 s pinned, 125 s newest with cold compile
#                                      # caches on CI's 2 cores, memory step included; 2026-12-05, 614d140)
#   bash bench/gpu.sh --steps ops,tests --budget 300 --limit ops=120   # some steps, the total and one step's
#                                      # seconds; --list names the steps
# Steps, highest value first (limits in LIMIT below, their sum at most the budget by construction):
#   build     pip install -e . (the CUDA extension, 16 jobs), `videomae info`, every op backend registers
#   train     the headline table at ViT-B, B=32, 16x224x224, tube 0.9: the CLI's step with its prepare (uint8 crops
#             from pinned memory through DeviceFeed, timed), the eager reference, Hugging Face transformers (sdpa,
#             bf16 autocast), the official code (fp16 autocast); clips/s, memory per clip, MFU (bench/train_step.py)
#   smoke     bf16 correctness of every backend against the fp64 oracle, op and model level (bench/ops/smoke.py)
#   ops       op microbenchmarks (python -m bench.ops)
#   compiled  larger batches (64, 128), the other compile setting and whole-step CUDA graphs; torch.compile of
#             each op's reference
#   memory    what bench/memory.py and bench/cost_model.py predicted, measured: bytes per clip with the allocator's
#             counters next to the fake-H200 figures (ours, hf, official), the attention timing that orders `auto`,
#             and the CLI step's time per kernel class next to the cost model's prediction
#   tests     the `gpu`-marked tests that fit the limit, broadest first (bench/gpu_tests.py)
#   sanitize  compute-sanitizer memcheck and racecheck on our kernels
#   loader    DeviceFeed per batch and NVDEC (bench/loader.py --gpu)
# One inductor and Triton cache serves every row and step of a run ($VIDEOMAE_GPU_CACHE): no reset between batch
# sizes; a later step recompiles from the cache.
#
# What the GPU machine has and what must be carried (device tool `carry`, at most 64 MiB in all):
#   image:  IMAGE below (torch, triton, transformers, timm, einops, pillow, tqdm, pytest, pytest-benchmark, numpy,
#           opencv, onnxruntime, matplotlib, and Python's pip / setuptools / wheel); no av, decord, flash-attn,
#           xformers. `--rehearse` runs every step with only those (and what they require) importable, so a step
#           that needs anything else fails there, naming it.
#   carry:  CARRY below: third_party/VideoMAE, the official code of the table's last peer (git-ignored, ~2 MiB).
#   wheels: none (every package the steps import is in the image; the rehearsal proves it).
# No `set -e`, on purpose: each step runs under its own time limit, cut to what is left of the budget; a failed
# step is recorded and the next one runs, so one early failure never loses the later figures.
# Results: bench/results/<name>.json ($BENCH_RESULTS; the rehearsal writes bench/results/rehearsal/), each row with
# its provenance (backend that ran, device, versions, git sha), written as soon as it is measured and copied into
# $OUT when set (at most 8 files: gpu.log, gpu_steps.json and the benchmarks' files); one status row per step in
# gpu_steps.json; all output in gpu.log. Exit status 1 when a step failed or ran out of time.

STEPS=(build train smoke ops compiled memory tests sanitize loader)
declare -A LIMIT=([build]=100 [train]=150 [smoke]=40 [ops]=40 [compiled]=75 [memory]=35 [tests]=40 [sanitize]=40
                  [loader]=20)
BUDGET=540
# The CPU interpreter is slow, and CI has two cores: the rehearsal's limits are its own.
declare -A REHEARSE_LIMIT=([build]=120 [train]=420 [smoke]=240 [ops]=240 [compiled]=540 [memory]=240 [tests]=240
                          [sanitize]=180 [loader]=180)
REHEARSE_BUDGET=2400
MIN_STEP_S=20  # a step is not started with less than this left of the budget
IMAGE=(torch triton transformers timm einops pillow tqdm pytest pytest-benchmark numpy opencv-python-headless
       onnxruntime matplotlib pip setuptools wheel)
CARRY=(third_party/VideoMAE)
CARRY_MAX_MIB=64

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/bench/gpu.sh"
PY=${PYTHON:-python3}

note() { [[ -n "${STEP_NOTE:-}" ]] && echo "$*" >> "$STEP_NOTE"; echo "note: $*"; }

# ---------------------------------------------------------------------------------------------- steps
# Each runs in its own bash (`gpu.sh --one NAME`), under `timeout`, with REHEARSE, RES, PY and STEP_LIMIT set.
# rc 0 ok; SKIP_RC: does not apply here (the note says why); anything else failed.
SKIP_RC=75

step_build() {
  if (( REHEARSE )); then
    # CI has installed the package; check that setup.py still configures (metadata only), build nothing.
    VIDEOMAE_SKIP_CUDA_BUILD=1 "$PY" -m pip install --no-build-isolation --no-deps --dry-run -e . || return
  else
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
    local cap
    cap=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || return
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap} MAX_JOBS=${MAX_JOBS:-16} VIDEOMAE_FORCE_CUDA=1
    note "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
    "$PY" -m pip install --no-build-isolation --no-deps -e . || return
  fi
  "$PY" -m videomae info --json > "$RES/info.json" || return
  cat "$RES/info.json"
  # Without the interpreter, as on the GPU: a backend whose ops fail to register there must fail here.
  env -u TRITON_INTERPRET "$PY" -m bench.ops.smoke --registration
}

step_smoke() {
  "$PY" -m bench.ops.smoke ${REHEARSE_FLAG}
}

official_dir() {
  local dir=${VIDEOMAE_OFFICIAL:-third_party/VideoMAE}
  [[ -f "$dir/modeling_pretrain.py" ]] && echo "$dir"
}

step_train() {
  local official
  official=$(official_dir) && export VIDEOMAE_OFFICIAL=$official || note "no official checkout: that peer is left out"
  if (( REHEARSE )); then
    "$PY" bench/train_step.py --rehearse --recompute auto none --out "$RES"
  else
    # The last row, the fast step with --recompute none, says whether the default should keep recomputing.
    "$PY" bench/train_step.py --batch-sizes 32 --peers fast,eager,hf${official:+,official} --recompute auto none \
      --out "$RES" --budget $(( STEP_LIMIT - 15 ))
  fi
}

step_ops() {
  "$PY" -m bench.ops ${REHEARSE_FLAG}
}

step_compiled() {
  local rc=0
  if (( REHEARSE )); then
    "$PY" bench/train_step.py --rehearse --peers fast --compile both --out "$RES" || rc=$?
  else
    "$PY" bench/train_step.py --batch-sizes 64 128 --peers fast --compile both --cuda-graphs --out "$RES" \
      --budget $(( STEP_LIMIT * 2 / 3 )) || rc=$?
  fi
  # torch.compile of each op's reference: ViT-B only, as inductor compiles every shape anew.
  "$PY" -m bench.ops --impls compile --models B ${REHEARSE_FLAG} || rc=$?
  return $rc
}

step_memory() {
  local rc=0
  "$PY" bench/memory.py --measure ${REHEARSE_FLAG} --peers ours hf $(official_dir >/dev/null && echo official) \
    --out "$RES" || rc=$?
  "$PY" bench/attention_timing.py ${REHEARSE_FLAG} --out "$RES" || rc=$?
  "$PY" bench/cost_model.py --measure ${REHEARSE_FLAG} --out "$RES" || rc=$?
  return $rc
}

step_tests() {
  # Only the files that hold GPU tests: av / decord are missing on the GPU machine, and one module that cannot
  # be imported must not stop the rest. About 370 tests: the budget plugin runs every test function once before
  # any twice and skips what no longer fits (the rehearsal runs the same selection; without CUDA all skip).
  local files
  mapfile -t files < <(grep -rlE 'mark\.gpu' tests --include='*.py' | sort)
  (( ${#files[@]} )) || { echo "no gpu-marked tests under tests/"; return 1; }
  env -u TRITON_INTERPRET "$PY" -m pytest -q -p no:cacheprovider -p bench.gpu_tests \
    --gpu-budget $(( STEP_LIMIT - 15 )) -m gpu -rs --continue-on-collection-errors "${files[@]}"
}

sanitizer() {
  local cand
  for cand in "$(command -v compute-sanitizer)" "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
      "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer"; do
    [[ -n "$cand" && -x "$cand" ]] && { echo "$cand"; return 0; }
  done
  return 1
}

step_sanitize() {
  # Only our kernels are instrumented (the CUDA extension's live in namespace videomae; the Triton kernels are
  # named after their op): torch's own kernels of the workload would only cost time.
  local filter=() k
  for k in videomae _cube_ _decoder_input _norm_pix_mse _token_sum; do filter+=(--kernel-name "kns=$k"); done
  if (( REHEARSE )); then
    echo "would run: compute-sanitizer --tool memcheck|racecheck --error-exitcode 86 ${filter[*]}" \
      "$PY -m bench.ops.sanitize"
    "$PY" -m bench.ops.sanitize --rehearse
    return
  fi
  local san rc=0 tool_rc
  san=$(sanitizer) || { echo "compute-sanitizer not found (PATH, CUDA_HOME)"; return 1; }
  # Without the caching allocator every tensor is its own allocation: an access past its end is reported.
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool"
    "$san" --tool "$tool" --error-exitcode 86 --print-limit 20 "${filter[@]}" "$PY" -m bench.ops.sanitize
    tool_rc=$?
    # Neither clean nor our error code: the tool itself failed (e.g. refused the filter): again, on every kernel.
    if (( tool_rc != 0 && tool_rc != 86 )); then
      note "$tool with the kernel filter: rc $tool_rc; rerun on every kernel"
      "$san" --tool "$tool" --error-exitcode 86 --print-limit 20 "$PY" -m bench.ops.sanitize
      tool_rc=$?
    fi
    (( tool_rc == 86 )) && note "$tool found errors in our kernels"
    (( tool_rc != 0 )) && rc=$tool_rc
  done
  return $rc
}

step_loader() {
  local help
  help=$("$PY" bench/loader.py --help 2>&1) || { echo "$help"; return 1; }
  if (( REHEARSE )); then
    grep -q -- '--rehearse' <<< "$help" || { note "bench/loader.py has no --rehearse mode"; return $SKIP_RC; }
    "$PY" bench/loader.py --rehearse --out "$RES"
  else
    grep -q -- '--gpu' <<< "$help" || { note "bench/loader.py has no --gpu mode"; return $SKIP_RC; }
    "$PY" bench/loader.py --gpu --out "$RES"
  fi
}

# ---------------------------------------------------------------------------------------------- runner

record() {  # record STEP RC SECONDS LIMIT NOTE [--skipped]
  "$PY" -m bench.common step --step "$1" --rc "$2" --seconds "$3" --limit "$4" --note "$5" "${@:6}" \
    || echo "gpu.sh: could not record the status of step $1 (rc $2)" >&2
}

run_step() {  # run_step NAME: under its limit and what is left of the budget; logged; its status recorded
  local name=$1 limit left t0 rc secs notefile refusedlog refused
  limit=$(step_limit "$name")
  left=$(( DEADLINE - $(date +%s) ))
  if (( left < MIN_STEP_S )); then
    echo "== $name: skipped, ${left}s left of the budget" | tee -a "$LOG"
    record "$name" 0 0 "$limit" "budget spent (${left}s left)" --skipped
    (( REHEARSE )) && FAILED+=("$name")  # the rehearsal must run every step
    return
  fi
  (( limit > left )) && limit=$left
  notefile=$(mktemp)
  refusedlog=$(mktemp)
  echo "== $name (limit ${limit}s, $(date -u +%H:%M:%S))" | tee -a "$LOG"
  t0=$(date +%s.%N)
  # timeout signals the step's whole process group; -k: a step that ignores SIGTERM is killed 10 s later.
  VIDEOMAE_REFUSED_IMPORTS=$refusedlog STEP_LIMIT=$limit STEP_NOTE=$notefile \
    timeout -k 10 "$limit" bash "$SELF" --one "$name" $REHEARSE_FLAG 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if (( REHEARSE )) && [[ -s "$refusedlog" ]]; then
    refused=$("$PY" -m bench.imports refused "$refusedlog")
    echo "refused imports (not in the GPU image, not carried): $refused" >> "$notefile"
    echo "== $name: refused imports (absent on the GPU machine): $refused" | tee -a "$LOG"
  fi
  rm -f "$refusedlog"
  local text
  text=$(tr '\n' ' ' < "$notefile"); rm -f "$notefile"
  if (( rc == SKIP_RC )); then
    record "$name" 0 "$secs" "$limit" "$text" --skipped
  else
    record "$name" "$rc" "$secs" "$limit" "$text"
    (( rc != 0 )) && FAILED+=("$name")
  fi
  echo "== $name: rc $rc after ${secs}s" | tee -a "$LOG"
}

step_limit() {  # step_limit NAME: its limit in this mode (--limit wins)
  local limit=${LIMIT[$1]}
  (( REHEARSE )) && limit=${REHEARSE_LIMIT[$1]}
  [[ -n "${GIVEN_LIMIT[$1]:-}" ]] && limit=${GIVEN_LIMIT[$1]}
  echo "$limit"
}

plan() {  # plan STEP...: each step with its limit, the total against the budget, what is carried; rc 1 if over
  local s total=0 rc=0 path mib carried=0
  printf '%-10s %8s\n' step limit_s
  for s in "$@"; do
    printf '%-10s %8d\n' "$s" "$(step_limit "$s")"
    (( total += $(step_limit "$s") ))
  done
  printf '%-10s %8d  budget %d s\n' total "$total" "$BUDGET_S"
  if (( total > BUDGET_S )); then
    echo "gpu.sh: the steps' limits add up to ${total} s, over the ${BUDGET_S} s budget" >&2
    rc=1
  fi
  echo "image: ${IMAGE[*]}"
  for path in "${CARRY[@]}"; do
    if [[ -e "$path" ]]; then
      mib=$(du -sm "$path" | cut -f1)
      (( carried += mib ))
      echo "carry: $path (${mib} MiB)"
    else
      echo "carry: $path (missing here: the step that uses it leaves that part out)"
    fi
  done
  echo "carry total: ${carried} MiB (at most ${CARRY_MAX_MIB} MiB)"
  if (( carried > CARRY_MAX_MIB )); then
    echo "gpu.sh: what must be carried is ${carried} MiB, over the device tool's ${CARRY_MAX_MIB} MiB" >&2
    rc=1
  fi
  return $rc
}

usage() {
  sed -n '2,38p' "$SELF" | sed 's/^# \{0,1\}//'
  echo "steps: ${STEPS[*]}"
}

main() {
  local only="" budget="" one="" kv show_plan=0
  REHEARSE=0
  declare -gA GIVEN_LIMIT=()
  while (( $# )); do
    case "$1" in
      --rehearse) REHEARSE=1 ;;
      --plan) show_plan=1 ;;
      --steps) only=$2; shift ;;
      --budget) budget=$2; shift ;;
      --one) one=$2; shift ;;
      --limit)
        kv=$2; shift
        [[ "$kv" =~ ^([a-z]+)=([0-9]+)$ && -n "${LIMIT[${BASH_REMATCH[1]}]:-}" ]] \
          || { echo "gpu.sh: --limit takes STEP=SECONDS with a step of: ${STEPS[*]}; got '$kv'" >&2; return 2; }
        GIVEN_LIMIT[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]} ;;
      --list) echo "${STEPS[*]}"; return 0 ;;
      -h|--help) usage; return 0 ;;
      *) echo "gpu.sh: unknown argument '$1'" >&2; usage >&2; return 2 ;;
    esac
    shift
  done
  cd "$ROOT" || return 1
  # Unbuffered: a step cut at its limit still leaves everything it printed in the log.
  export REHEARSE PY PYTHONUNBUFFERED=1
  REHEARSE_FLAG=""
  if (( REHEARSE )); then
    REHEARSE_FLAG="--rehearse"
    export TRITON_INTERPRET=1 BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/rehearsal}
  else
    unset TRITON_INTERPRET  # GPU figures never come from the interpreter
  fi
  export REHEARSE_FLAG RES=${BENCH_RESULTS:-$ROOT/bench/results}
  if [[ -n "$one" ]]; then  # inside run_step: one step, its rc is the step's
    [[ " ${STEPS[*]} " == *" $one "* ]] || { echo "gpu.sh: no step '$one' (steps: ${STEPS[*]})" >&2; return 2; }
    mkdir -p "$RES"
    "step_$one"
    return
  fi

  local selected=("${STEPS[@]}") s
  if [[ -n "$only" ]]; then
    IFS=, read -r -a selected <<< "$only"
    for s in "${selected[@]}"; do
      [[ " ${STEPS[*]} " == *" $s "* ]] || { echo "gpu.sh: no step '$s' (steps: ${STEPS[*]})" >&2; return 2; }
    done
  fi
  budget=${budget:-$( (( REHEARSE )) && echo "$REHEARSE_BUDGET" || echo "$BUDGET" )}
  [[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu.sh: --budget takes whole seconds, got '$budget'" >&2; return 2; }
  BUDGET_S=$budget
  if (( show_plan )); then
    plan "${selected[@]}"
    return
  fi
  mkdir -p "$RES"
  DEADLINE=$(( $(date +%s) + budget ))
  export BENCH_RUN=${BENCH_RUN:-$(date -u +%Y%m%dT%H%M%SZ)-gpu-sh-$$}
  # One compile cache for every process of the run (and for a rerun on the same machine).
  local cache=${VIDEOMAE_GPU_CACHE:-${TMPDIR:-/tmp}/videomae-gpu-cache}
  export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$cache/inductor}
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$cache/triton}
  LOG=${OUT:+$OUT/gpu.log}
  LOG=${LOG:-$RES/gpu.log}
  [[ -n "${OUT:-}" ]] && mkdir -p "$OUT"
  : > "$LOG"
  FAILED=()
  {
    echo "gpu.sh: run $BENCH_RUN, steps ${selected[*]}, budget ${budget}s, rehearse $REHEARSE, python $PY"
    [[ -e .git || -n "${GIT_SHA:-}" ]] || echo "gpu.sh: no .git and no GIT_SHA: rows will say git_sha 'unknown'"
  } | tee -a "$LOG"
  local image_dir=""
  if (( REHEARSE )); then  # every Python process of the steps sees the GPU image's packages only
    image_dir=$(mktemp -d)
    "$PY" -m bench.imports setup --dir "$image_dir" --image "${IMAGE[*]}" 2>&1 | tee -a "$LOG"
    if [[ ! -f "$image_dir/sitecustomize.py" ]]; then
      echo "gpu.sh: could not set up the GPU image's packages for the rehearsal (bench.imports setup)" | tee -a "$LOG"
      rm -rf "$image_dir"
      return 1
    fi
    export PYTHONPATH="$image_dir${PYTHONPATH:+:$PYTHONPATH}"
  fi
  for s in "${selected[@]}"; do
    run_step "$s"
  done
  [[ -n "$image_dir" ]] && rm -rf "$image_dir"
  "$PY" -m bench.common summary | tee -a "$LOG"
  if (( ${#FAILED[@]} )); then
    echo "gpu.sh: FAILED steps: ${FAILED[*]}" | tee -a "$LOG"
    return 1
  fi
  echo "gpu.sh: all steps passed" | tee -a "$LOG"
}

# Sourced (tests), it only defines the functions above.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
