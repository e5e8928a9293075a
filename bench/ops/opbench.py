"""What an op benchmark is (`OpBench`) and how one (impl, mode, shape) is timed under pytest-benchmark.

An op's file (bench/ops/bench_<op>.py) describes the op once: its inputs as training passes them, the inputs it
differentiates, the bytes it must move and, where it multiplies matrices, its FLOPs. Its one test function,
named after the op, calls `time_op` for every impl x mode (parametrized) and shape (bench/ops/conftest.py).

Impls: a registered backend (`cuda`, `triton`, `torch`: the public op forced onto it; for attention its own
backends), `eager` (the op's reference called directly: the unfused PyTorch that speedups are relative to) and,
asked for by `--bench-impls compile`, `compile` (torch.compile of the reference). Every impl runs as training
calls it: fp32 parameters and clip under bf16 autocast, TF32 off. A backend that cannot run a call is skipped
with its reasons. Modes: `forward`; `backward` (the gradients of one forward's output); `both`.

Timing (pytest-benchmark's `pedantic`, one call per round): on CUDA each round first flushes the L2 cache and
synchronizes, untimed, then times the call followed by `torch.cuda.synchronize()` with `time.perf_counter`, so
a round is one cold-cache call plus one launch-and-sync latency (some microseconds, small against the
milliseconds of ViT-B shapes). Rounds: as many as fit in `--benchmark-max-time` seconds (estimated from the
fastest of three calls after a warm-up call, in which Triton compiles and autotunes), at least
`--benchmark-min-rounds`, at most MAX_ROUNDS.

`extra_info` of each benchmark: the bytes the op must move (`bytes_moved` of its file: each input read once,
each output written once) and GB/s = bytes / median time; the fraction of the device's peak bandwidth, both the
datasheet figure and the measured copy bandwidth (`PEAKS`: stated constants, never measured during the run);
for attention TFLOP/s and the fraction of the measured bf16 matmul rate; the speedup over `eager` at the same
shape and mode; on CUDA the peak memory one `both` call adds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

from bench.common import device_name, tf32
from videomae import ops
from videomae.dispatch import NotSupportedError
from videomae.ops import testing as T

MODES = ("forward", "backward", "both")
TINY_CASE = T.Case(2, 4, 32, 48, dim=64, dec_dim=32, ratio=0.75)  # the CPU (interpreter) shape
DTYPE = torch.bfloat16
MAX_ROUNDS = 2000
L2_FLUSH_BYTES = 256 * 2**20  # larger than any L2 (H100 / H200: 50 MB), as triton.testing.do_bench flushes


@dataclass(frozen=True)
class Peak:
    """Stated per-device ceilings (None: not known for this device)."""

    gbps_spec: float | None  # datasheet memory bandwidth
    gbps_copy: float | None  # device-to-device copy measured on such a machine (bytes read + written)
    tflops_bf16: float | None  # dense bf16 matmul rate measured on such a machine
    source: str


# Matched against torch.cuda.get_device_name, first hit wins (GUIDE section 3 for the measured H200 figures).
PEAKS: dict[str, Peak] = {
    "H200": Peak(4800.0, 4300.0, 790.0, "H200 datasheet 4.8 TB/s; copy 4.3 TB/s and bf16 matmul 790 TFLOP/s "
                                         "measured on the lent H200 machines (GUIDE section 3)"),
    "H100 80GB HBM3": Peak(3350.0, None, None, "H100 SXM datasheet 3.35 TB/s; copy and matmul not measured yet"),
    "H100 PCIe": Peak(2000.0, None, None, "H100 PCIe datasheet 2.0 TB/s; copy and matmul not measured yet"),
}
NO_PEAK = Peak(None, None, None, "no stated peak for this device (CPU timings say nothing about GPU speed)")


def peak_of(device: str) -> Peak:
    name = device_name(device)
    return next((p for key, p in PEAKS.items() if key in name), NO_PEAK)


@dataclass(frozen=True)
class OpBench:
    """One op: how to make its inputs as training passes them, and what it must move and compute.

    inputs(case, device) -> kwargs of both `fn` and `ref`; grads: the kwargs to differentiate;
    bytes_moved(kwargs, out, mode) -> bytes the op cannot avoid moving in `mode`; flops(kwargs, out, mode) ->
    its matmul FLOPs (None: memory-bound only); backends() -> the names `use(name)` can force.
    """

    name: str
    fn: Callable
    ref: Callable
    inputs: Callable[[T.Case, str], dict]
    grads: tuple[str, ...]
    bytes_moved: Callable[[dict, torch.Tensor, str], int]
    flops: Callable[[dict, torch.Tensor, str], int] | None = None
    backends: Callable[[], list[str]] = field(default=lambda: backends())
    use: Callable[[str], contextlib.AbstractContextManager] = ops.use_backend


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def backends() -> list[str]:
    """Every registered backend of the fused ops, fused ones first (cuda, triton, torch)."""
    report = ops.backend_report()
    return list(report[next(iter(report))])


def impls(op: OpBench) -> list[str]:
    """The impl parameters of an op's test, `eager` first (the others' speedups are relative to it); `compile`
    last, deselected unless asked for (conftest's --bench-impls)."""
    return ["eager", *op.backends(), "compile"]


@dataclass
class Session:
    """What the benchmarks of one pytest session share (made once by conftest.py)."""

    device: str
    cases: list[tuple[str, T.Case]]
    min_rounds: int
    max_time: float
    peak: Peak
    eager_s: dict[tuple, float] = field(default_factory=dict)  # (op, shape, mode) -> eager median
    rows: list[dict] = field(default_factory=list)  # extra_info of every timed benchmark, for the summary
    _flush: torch.Tensor | None = None

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def flush_l2(self) -> None:
        """Untimed, before each round: evict the inputs from L2 and wait for the device."""
        if self.cuda:
            if self._flush is None:
                self._flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
            self._flush.zero_()
            torch.cuda.synchronize()

    def rounds(self, seconds_per_call: float) -> int:
        return max(self.min_rounds, min(MAX_ROUNDS, int(self.max_time / max(seconds_per_call, 1e-9))))


def make_call(op: OpBench, kw: dict, impl: str, device: str) -> Callable[[], torch.Tensor]:
    """-> call() -> output, for one impl under bf16 autocast."""
    if impl == "eager":
        fn = op.ref
    elif impl == "compile":
        # The CPU has no C++ toolchain to spare: aot_eager traces the same graphs without compiling them.
        fn = torch.compile(op.ref, backend="inductor" if device == "cuda" else "aot_eager", dynamic=False)
    else:
        def fn(**kwargs):
            with op.use(impl):
                return op.fn(**kwargs)

    def call():
        with torch.autocast(device, DTYPE):
            return fn(**kw)

    return call


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """Memory one call adds over what is allocated before it (CUDA)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _seconds(fn: Callable[[], object], setup: Callable[[], None]) -> float:
    setup()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_op(benchmark, session: Session, op: OpBench, case: tuple[str, T.Case], impl: str, mode: str) -> None:
    """Time `op` under `impl` in `mode` at `case` (label, shape); fills benchmark.extra_info (see the module
    docstring)."""
    case_label, case = case
    kw = op.inputs(case, session.device)
    call = make_call(op, kw, impl, session.device)
    try:
        out = call()
    except NotSupportedError as e:
        pytest.skip(f"{op.name} on {impl}: {e}")
    inputs = [kw[g] for g in op.grads]
    grad_out = torch.randn_like(out)
    run = {
        "forward": call,
        "backward": lambda: torch.autograd.grad(out, inputs, grad_out, retain_graph=True),
        "both": lambda: torch.autograd.grad(call(), inputs, grad_out),
    }[mode]

    def timed():
        result = run()
        session.sync()  # the call is done when the device is, not when the launch returns
        return result

    benchmark.group = f"{op.name} {mode} {case_label}"
    moved = op.bytes_moved(kw, out, mode)
    flops = op.flops(kw, out, mode) if op.flops else None
    info = dict(op=op.name, impl=impl, mode=mode, model=case_label, shape=str(case), dtype="bfloat16-autocast",
                device=device_name(session.device), bytes=moved, flops=flops)
    benchmark.extra_info.update(info)
    with tf32(False):
        if benchmark.disabled:  # --benchmark-disable: one call, so that the file is known to run
            benchmark.pedantic(timed, setup=session.flush_l2)
            return
        session.flush_l2()
        timed()  # Triton compiles and autotunes here
        rounds = session.rounds(min(_seconds(timed, session.flush_l2) for _ in range(3))) if session.max_time > 0 \
            else session.min_rounds
        benchmark.pedantic(timed, setup=session.flush_l2, rounds=rounds, iterations=1)
        peak_mb = peak_memory_mb(run) if session.cuda and mode == "both" else None
    median = benchmark.stats.stats.median  # seconds
    key = (op.name, str(case), mode)
    if impl == "eager":
        session.eager_s[key] = median
    eager = session.eager_s.get(key)
    gbps = moved / median / 1e9
    tflops = flops / median / 1e12 if flops else None
    p = session.peak
    benchmark.extra_info.update(
        median_ms=median * 1e3, gbps=gbps,
        peak_gbps_spec=p.gbps_spec, frac_of_peak_spec=gbps / p.gbps_spec if p.gbps_spec else None,
        peak_gbps_copy=p.gbps_copy, frac_of_peak_copy=gbps / p.gbps_copy if p.gbps_copy else None,
        tflops=tflops, peak_tflops_bf16=p.tflops_bf16 if flops else None,
        frac_of_peak_tflops=tflops / p.tflops_bf16 if tflops and p.tflops_bf16 else None,
        speedup_vs_eager=eager / median if eager else None, peak_mem_mb=peak_mb, rounds=rounds,
    )
    session.rows.append(dict(benchmark.extra_info))
