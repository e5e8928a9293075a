#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one call on a lent H100/H200, in under 9 minutes:
#   GIT_SHA=<sha> bash bench/gpu.sh    # the GPU machine gets the tree without .git: name the commit
#   bash bench/gpu.sh --rehearse       # every step on the CPU at tiny shapes (CI runs it on both stacks)
#   bash bench/gpu.sh --steps ops,tests --budget 300 --limit ops=120   # some steps, the total and one step's
#                                      # seconds; --list names the steps
# Steps, highest value first: build (16 jobs) + `videomae info`; bf16 correctness smoke of every backend; the
# end-to-end table (bench/train_step.py); op microbenchmarks; compiled and CUDA-graph rows; GPU tests;
# compute-sanitizer on our kernels; the loader's GPU step.
# No `set -e`, on purpose: each step runs under its own time limit, cut to what is left of the budget; a failed
# step is recorded and the next one runs, so one early failure never loses the later figures.
# Results: bench/results/<name>.json ($BENCH_RESULTS; the rehearsal writes bench/results/rehearsal/), each
# copied into $OUT when set (at most 8 files: gpu.log, gpu_steps.json and the benchmarks' files); one status row
# per step in gpu_steps.json; all output in gpu.log. Exit status 1 when a step failed or ran out of time.
# The official VideoMAE code for the end-to-end table comes from $VIDEOMAE_OFFICIAL (default
# third_party/VideoMAE, git-ignored).

STEPS=(build smoke train ops compiled tests sanitize loader)
declare -A LIMIT=([build]=150 [smoke]=90 [train]=150 [ops]=90 [compiled]=100 [tests]=90 [sanitize]=75 [loader]=40)
# The CPU interpreter is slow, and CI has two cores: the rehearsal's limits are its own.
declare -A REHEARSE_LIMIT=([build]=120 [smoke]=240 [train]=420 [ops]=240 [compiled]=420 [tests]=240 [sanitize]=180
                          [loader]=180)
MIN_STEP_S=20  # a step is not started with less than this left of the budget

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
    "$PY" bench/train_step.py --rehearse --out "$RES"
  else
    "$PY" bench/train_step.py --batch-sizes 64 128 --peers fast,eager,hf${official:+,official} --out "$RES" \
      --budget $(( STEP_LIMIT - 15 ))
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
    "$PY" bench/train_step.py --batch-sizes 128 --peers fast --compile both --cuda-graphs --out "$RES" \
      --budget $(( STEP_LIMIT * 2 / 3 )) || rc=$?
  fi
  # torch.compile of each op's reference: ViT-B only, as inductor compiles every shape anew.
  "$PY" -m bench.ops --impls compile --models B ${REHEARSE_FLAG} || rc=$?
  return $rc
}

step_tests() {
  # Only the files that hold GPU tests: av / decord are missing on the GPU machine, and one module that cannot
  # be imported must not stop the rest.
  local files
  mapfile -t files < <(grep -rlE 'mark\.gpu' tests --include='*.py' | sort)
  (( ${#files[@]} )) || { echo "no gpu-marked tests under tests/"; return 1; }
  if (( REHEARSE )); then  # no GPU to run them on: they must still import and collect on this stack
    "$PY" -m pytest -q -p no:cacheprovider -m gpu --collect-only "${files[@]}"
  else
    env -u TRITON_INTERPRET "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs --continue-on-collection-errors \
      "${files[@]}"
  fi
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
  local name=$1 limit left t0 rc secs notefile
  limit=${LIMIT[$name]}
  (( REHEARSE )) && limit=${REHEARSE_LIMIT[$name]}
  [[ -n "${GIVEN_LIMIT[$name]:-}" ]] && limit=${GIVEN_LIMIT[$name]}
  left=$(( DEADLINE - $(date +%s) ))
  if (( left < MIN_STEP_S )); then
    echo "== $name: skipped, ${left}s left of the budget" | tee -a "$LOG"
    record "$name" 0 0 "$limit" "budget spent (${left}s left)" --skipped
    (( REHEARSE )) && FAILED+=("$name")  # the rehearsal must run every step
    return
  fi
  (( limit > left )) && limit=$left
  notefile=$(mktemp)
  echo "== $name (limit ${limit}s, $(date -u +%H:%M:%S))" | tee -a "$LOG"
  t0=$(date +%s.%N)
  # timeout signals the step's whole process group; -k: a step that ignores SIGTERM is killed 10 s later.
  STEP_LIMIT=$limit STEP_NOTE=$notefile timeout -k 10 "$limit" bash "$SELF" --one "$name" $REHEARSE_FLAG 2>&1 \
    | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
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

usage() {
  sed -n '2,17p' "$SELF" | sed 's/^# \{0,1\}//'
  echo "steps: ${STEPS[*]}"
}

main() {
  local only="" budget="" one="" kv
  REHEARSE=0
  declare -gA GIVEN_LIMIT=()
  while (( $# )); do
    case "$1" in
      --rehearse) REHEARSE=1 ;;
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
  mkdir -p "$RES"
  if [[ -n "$one" ]]; then  # inside run_step: one step, its rc is the step's
    [[ " ${STEPS[*]} " == *" $one "* ]] || { echo "gpu.sh: no step '$one' (steps: ${STEPS[*]})" >&2; return 2; }
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
  budget=${budget:-$( (( REHEARSE )) && echo 2400 || echo 540 )}
  [[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu.sh: --budget takes whole seconds, got '$budget'" >&2; return 2; }
  DEADLINE=$(( $(date +%s) + budget ))
  export BENCH_RUN=${BENCH_RUN:-$(date -u +%Y%m%dT%H%M%SZ)-gpu-sh-$$}
  LOG=${OUT:+$OUT/gpu.log}
  LOG=${LOG:-$RES/gpu.log}
  [[ -n "${OUT:-}" ]] && mkdir -p "$OUT"
  : > "$LOG"
  FAILED=()
  {
    echo "gpu.sh: run $BENCH_RUN, steps ${selected[*]}, budget ${budget}s, rehearse $REHEARSE, python $PY"
    [[ -d .git || -n "${GIT_SHA:-}" ]] || echo "gpu.sh: no .git and no GIT_SHA: rows will say git_sha 'unknown'"
  } | tee -a "$LOG"
  for s in "${selected[@]}"; do
    run_step "$s"
  done
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
