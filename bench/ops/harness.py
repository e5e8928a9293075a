"""What the op benchmarks share: an op's description (`OpBench`), the impls it is timed under, and the loop
that writes one row per (shape, impl, mode).

An impl is a registered backend (`cuda`, `triton`, `torch`: the public op forced onto it), `eager` (the op's
reference as PyTorch runs it) or `compile` (`torch.compile` of that reference). Every impl runs as training
calls the op: fp32 parameters and clip under bf16 autocast (`--dtype float32`: no autocast).

The floor of a row is the larger of two times: the bytes the op must move (each input read once, each output
written once: `bytes_moved` of the op's file) over the device-to-device copy bandwidth, and its FLOPs (`flops`,
for the ops that multiply matrices) over the bf16 matmul rate, both measured at the start of the run (rows
`copy` and `matmul`).
Targets (issue 3): norm_pix_mse forward+backward >= 5x eager and >= 60% of the copy bandwidth, cube_embed >= 2x,
decoder_input >= 3x eager.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench.common import ResultWriter, copy_bandwidth, matmul_rate, tf32, timer
from videomae import ops
from videomae.ops import testing as T

MODES = ("forward", "backward", "both")
REHEARSAL_CASE = T.Case(2, 4, 32, 48, dim=64, dec_dim=32, ratio=0.75)


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
    """Every registered backend, fused ones first (cuda, triton, torch)."""
    return list(ops.backend_report()[next(iter(ops.backend_report()))])


def autocast(device: str, dtype: torch.dtype):
    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device, dtype)


def make_call(op: OpBench, kw: dict, impl: str, device: str, dtype: torch.dtype, compile_backend: str):
    """-> call() -> output, for one impl; raises NotSupportedError when a backend cannot take these inputs."""
    if impl == "eager":
        fn = op.ref
    elif impl == "compile":
        fn = torch.compile(op.ref, backend=compile_backend, dynamic=False)
    else:
        def fn(**kwargs):
            with op.use(impl):
                return op.fn(**kwargs)

    def call():
        with autocast(device, dtype):
            return fn(**kw)

    return call


def bench_case(op: OpBench, model: str, case: T.Case, impls: list[str], args, ceilings: tuple[float, float],
               writer: ResultWriter) -> None:
    """Rows of every impl x mode at one shape; ceilings: (copy GB/s, matmul TFLOP/s)."""
    copy_gbps, tflops = ceilings
    kw = op.inputs(case, args.device)
    inputs = [kw[g] for g in op.grads]
    eager_ms: dict[str, float] = {}
    for impl in impls:
        base = dict(op=op.name, impl=impl, model=model, shape=str(case), dtype=args.dtype_label)
        try:
            call = make_call(op, kw, impl, args.device, args.dtype, args.compile_backend)
            out = call()
        except ops.NotSupportedError as e:
            writer.add({**base, "status": "unsupported", "reason": str(e)}, backend=impl, device=args.device)
            print(f"{op.name:14s} {impl:8s} {model}: not supported: {e}", flush=True)
            continue
        except Exception as e:  # noqa: BLE001  (one impl failing must not lose the others' rows)
            writer.add({**base, "status": "error", "reason": f"{type(e).__name__}: {e}"}, backend=impl,
                       device=args.device)
            print(f"{op.name:14s} {impl:8s} {model}: ERROR {type(e).__name__}: {e}", flush=True)
            continue
        g = torch.randn_like(out)

        def backward(out=out, g=g):
            return torch.autograd.grad(out, inputs, g, retain_graph=True)

        def both(call=call, g=g):
            return torch.autograd.grad(call(), inputs, g)

        for mode, fn in (("forward", call), ("backward", backward), ("both", both)):
            with tf32(args.tf32):
                t = timer(fn, args.device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
                peak = peak_mb(fn, args.device) if mode == "both" else None
            moved = op.bytes_moved(kw, out, mode)
            flops = op.flops(kw, out, mode) if op.flops else None
            floor_ms = max(moved / copy_gbps / 1e6, flops / tflops / 1e9 if flops else 0.0)
            if impl == "eager":
                eager_ms[mode] = t.median_ms
            row = {**base, "mode": mode, "status": "ok", **t.row(), "bytes": moved, "flops": flops,
                   "gbps": moved / t.median_ms / 1e6, "tflops": flops / t.median_ms / 1e9 if flops else None,
                   "floor_ms": floor_ms, "of_floor": floor_ms / t.median_ms,
                   "speedup_vs_eager": eager_ms[mode] / t.median_ms if mode in eager_ms else None,
                   "peak_mem_mb": peak}
            writer.add(row, backend=impl, device=args.device, tf32=args.tf32)
            print(f"{op.name:14s} {impl:8s} {mode:8s} {model} {t.median_ms:9.3f} ms {row['gbps']:8.1f} GB/s "
                  f"{100 * row['of_floor']:5.1f}% of floor", flush=True)
        del out, g
    if args.device == "cuda":
        torch.cuda.empty_cache()


def peak_mb(fn, device: str) -> float | None:
    """Peak memory one call adds over what is allocated before it (CUDA only)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def op_impls(op: OpBench, given: list[str] | None) -> list[str]:
    """The impls of one op: those given that it knows, else its backends and eager; eager first, as the other
    impls' speedups are relative to it."""
    known = op.backends() + ["eager", "compile"]
    impls = [i for i in given if i in known] if given else op.backends() + ["eager"]
    return sorted(impls, key=lambda i: i != "eager")


def parse(argv, benches: list[OpBench]) -> argparse.Namespace:
    names = [b.name for b in benches]
    ap = argparse.ArgumentParser(description="Op microbenchmarks: each backend vs the eager reference.")
    ap.add_argument("--rehearse", action="store_true", help="CPU, a tiny shape, a few calls: the code paths only")
    ap.add_argument("--ops", nargs="+", default=names, choices=names)
    ap.add_argument("--models", default="S,B,L", help="ViT sizes of videomae.ops.testing.VIT (B=32, 16x224x224)")
    ap.add_argument("--impls", default=None,
                    help="comma list of backends, eager, compile (default: each op's backends + eager)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                    help="autocast dtype (float32: no autocast)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 for fp32 matmuls (off by default)")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; "
                    "rehearsal: aot_eager, which traces the same graphs without compiling C++ on the CPU)")
    ap.add_argument("--warmup-ms", type=float, default=None)
    ap.add_argument("--rep-ms", type=float, default=None)
    ap.add_argument("--name", default="ops", help="results file bench/results/<name>.json")
    args = ap.parse_args(argv)
    args.device = "cuda" if torch.cuda.is_available() and not args.rehearse else "cpu"
    if args.device == "cpu" and not args.rehearse:
        ap.error("no CUDA device: run with --rehearse on the CPU")
    from videomae.kernels._common import INTERPRET

    if args.device == "cuda" and INTERPRET:
        ap.error("TRITON_INTERPRET=1 would time the interpreter: unset it for GPU figures")
    args.dtype_label = args.dtype if args.dtype == "float32" else f"{args.dtype}-autocast"
    args.dtype = getattr(torch, args.dtype)
    args.compile_backend = args.compile_backend or ("aot_eager" if args.rehearse else "inductor")
    args.warmup_ms = args.warmup_ms if args.warmup_ms is not None else (0 if args.rehearse else 25)
    args.rep_ms = args.rep_ms if args.rep_ms is not None else (0 if args.rehearse else 100)
    args.impls = args.impls.split(",") if args.impls else None
    known = {i for b in benches for i in b.backends()} | {"eager", "compile"}
    if args.impls and not set(args.impls) <= known:
        ap.error(f"--impls: unknown {sorted(set(args.impls) - known)}; known: {sorted(known)}")
    models = args.models.split(",")
    if not set(models) <= set(T.VIT):
        ap.error(f"--models: sizes of {sorted(T.VIT)}, got {args.models}")
    args.cases = [("tiny", REHEARSAL_CASE)] if args.rehearse else [(m, T.VIT[m]) for m in models]
    return args


def main(benches: list[OpBench], argv: list[str] | None = None) -> int:
    args = parse(argv, benches)
    writer = ResultWriter(args.name)
    t, copy_gbps = copy_bandwidth(args.device, mib=8 if args.rehearse else 1024)
    writer.add({"op": "copy", "impl": "torch", "mode": "forward", "status": "ok", **t.row(), "gbps": copy_gbps},
               backend="torch", device=args.device)
    ceilings = (copy_gbps, 0.0)
    if any(b.flops and b.name in args.ops for b in benches):
        with tf32(args.tf32):
            t, tflops = matmul_rate(args.device, 256 if args.rehearse else 8192)
        writer.add({"op": "matmul", "impl": "torch", "mode": "forward", "status": "ok", **t.row(),
                    "tflops": tflops}, backend="torch", device=args.device, tf32=args.tf32)
        ceilings = (copy_gbps, tflops)
        print(f"bf16 matmul: {tflops:.1f} TFLOP/s (the floor's rate)", flush=True)
    print(f"device-to-device copy: {copy_gbps:.0f} GB/s (the floor's bandwidth)", flush=True)
    for model, case in args.cases:
        for op in benches:
            impls = op_impls(op, args.impls)
            if op.name in args.ops and impls:
                bench_case(op, model, case, impls, args, ceilings, writer)
    errors = [r for r in writer.rows if r.get("status") == "error"]
    print(f"wrote {len(writer.rows)} rows to {writer.path}" + (f"; {len(errors)} errors" if errors else ""))
    return 1 if errors else 0


def run_module(bench: OpBench) -> None:
    """`python -m bench.ops.bench_<op>`: that op alone."""
    sys.exit(main([bench]))

