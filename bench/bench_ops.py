"""Benchmark of the fused ops: every available backend vs the eager reference and torch.compile of it.

GPU (the table and chart that get committed):
    python bench/bench_ops.py                      # ViT-B (B=32, 16x224x224, ratio 0.9) + batch / ratio sweeps
CPU smoke (tiny shapes, wall-clock timer; add TRITON_INTERPRET=1 to include the triton backend):
    python bench/bench_ops.py --smoke

Rows (op, impl, mode, shape, median_ms, p20_ms, p80_ms, gbps, peak_mem_mb, device, torch, triton, git_sha) go
to bench/results/ops-<device>.{csv,json}, a chart to bench/results/ops-<device>.png. GB/s counts the bytes
an op must move (`must_move`), so it compares with the measured device-to-device copy bandwidth (row
`copy`), the memory-bound floor.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import triton

import videomae.ops as ops
from videomae.kernels import INTERPRET
from videomae.ops import dispatch
from videomae.ops import testing as T
from videomae.ops.reference import cube_embed_ref, decoder_input_ref, norm_pix_mse_ref

RESULTS = Path(__file__).resolve().parent / "results"
OPS = ("cube_embed", "decoder_input", "norm_pix_mse")
MODES = ("forward", "backward", "both")


# ---------------------------------------------------------------------------------------------- bytes


def must_move(op: str, case: T.Case, dtype: torch.dtype, mode: str) -> int:
    """Bytes the op cannot avoid moving: visible / decoded cubes read once, outputs written once.

    The fixed pos table (fp32) is read once per row it feeds; parameters once; index tables ignored.
    """
    e = torch.finfo(dtype).bits // 8
    b, n, k = case.batch, case.tokens, case.values
    hidden = int(case.ratio * case.grid[1] * case.grid[2]) * case.grid[0]  # tube masking
    nv, nd = n - hidden, hidden
    if op == "cube_embed":  # weight, bias, pos (no clip grad: the clip is data)
        d = case.dim
        fwd = b * nv * k * e + d * k * e + d * e + b * nv * d * 4 + b * nv * d * e
        bwd = b * nv * d * e + b * nv * k * e + d * k * e + d * 4 + n * d * 4
    elif op == "decoder_input":  # grads of x_vis and mask_token; the sinusoid table is constant
        d = case.dec_dim
        fwd = b * nv * d * e + b * (nv + nd) * d * 4 + b * (nv + nd) * d * e
        bwd = b * (nv + nd) * d * e + b * nv * d * e + d * 4
    else:
        fwd = 2 * b * nd * k * e  # decoded cubes of the clip + pred
        bwd = 3 * b * nd * k * e  # both again, + d pred
    return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[mode]


# ---------------------------------------------------------------------------------------------- cases


def setup(op: str, case: T.Case, dtype, device):
    """-> (call(impl) -> (output, grad inputs), kwargs); impl is a backend name, `eager` or `compile`."""
    if op == "cube_embed":
        kw = T.cube_embed_inputs(case, dtype, device)
        kw["videos"].requires_grad_(False)
        fused, ref, grads = ops.cube_embed, cube_embed_ref, ["weight", "bias", "pos"]
    elif op == "decoder_input":
        kw = T.decoder_input_inputs(case, dtype, device)
        fused, ref, grads = ops.decoder_input, decoder_input_ref, ["x_vis", "mask_token"]
    else:
        kw = T.norm_pix_mse_inputs(case, dtype, device)
        fused = ops.norm_pix_mse
        ref, grads = norm_pix_mse_ref, ["pred"]
    compiled = torch.compile(ref)

    def call(impl):
        if impl == "eager":
            return ref(**kw), [kw[g] for g in grads]
        if impl == "compile":
            return compiled(**kw), [kw[g] for g in grads]
        with ops.use_backend(impl):
            return fused(**kw), [kw[g] for g in grads]

    return call


def timer(fn, device: str, reps: int) -> tuple[float, float, float]:
    """(median, p20, p80) in ms: triton.testing.do_bench on GPU, a wall clock on CPU."""
    if device == "cuda":
        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=reps))
    fn()
    times = []
    for _ in range(max(3, reps // 20)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return statistics.median(times), q[1], q[7]


def peak_mb(fn, device: str) -> float:
    if device != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_case(op, case, dtype, device, impls, reps, meta):
    call = setup(op, case, dtype, device)
    rows = []
    for impl in impls:
        try:
            out, inputs = call(impl)
        except ops.NotSupportedError as e:
            print(f"skip {op} {impl}: {e}", file=sys.stderr)
            continue
        g = torch.randn_like(out)
        fns = {
            "forward": lambda impl=impl: call(impl),
            "backward": lambda out=out, inputs=inputs, g=g: torch.autograd.grad(out, inputs, g, retain_graph=True),
            "both": lambda impl=impl, g=g: _both(call, impl, g),
        }
        for mode, fn in fns.items():
            med, p20, p80 = timer(fn, device, reps)
            rows.append(dict(
                op=op, impl=impl, mode=mode, shape=str(case), median_ms=med, p20_ms=p20, p80_ms=p80,
                gbps=must_move(op, case, dtype, mode) / med / 1e6, peak_mem_mb=peak_mb(fn, device), **meta,
            ))
            print(f"{op:14s} {impl:8s} {mode:8s} {case}  {med:8.3f} ms  {rows[-1]['gbps']:7.1f} GB/s", flush=True)
    return rows


def _both(call, impl, g):
    out, inputs = call(impl)
    return torch.autograd.grad(out, inputs, g)


def copy_bandwidth(device: str, meta: dict, mib: int) -> dict:
    """Device-to-device copy: 2 x bytes moved per copy."""
    src = torch.randn(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    med, p20, p80 = timer(lambda: dst.copy_(src), device, 200)
    nbytes = 2 * src.numel() * 4
    return dict(op="copy", impl="torch", mode="forward", shape=f"{mib}MiB", median_ms=med, p20_ms=p20, p80_ms=p80,
                gbps=nbytes / med / 1e6, peak_mem_mb=float("nan"), **meta)


# ---------------------------------------------------------------------------------------------- output


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(rows: list[dict], stem: str, main_shape: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    chart(rows, RESULTS / f"{stem}.png", main_shape)
    print(f"wrote {RESULTS / stem}.{{csv,json,png}}")


def chart(rows: list[dict], path: Path, main_shape: str) -> None:
    """Median time per impl at the main shape, one panel per op, modes side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OPS), figsize=(5 * len(OPS), 4))
    for ax, op in zip(axes, OPS):
        sel = [r for r in rows if r["op"] == op and r["shape"] == main_shape]
        impls = sorted({r["impl"] for r in sel})
        for i, mode in enumerate(MODES):
            vals = [next((r["median_ms"] for r in sel if r["impl"] == m and r["mode"] == mode), 0) for m in impls]
            ax.bar([j + 0.27 * (i - 1) for j in range(len(impls))], vals, 0.27, label=mode)
        ax.set_xticks(range(len(impls)), impls)
        ax.set_title(op)
        ax.set_ylabel("median ms")
    axes[0].legend()
    copy = next((r for r in rows if r["op"] == "copy"), None)
    note = f" | copy {copy['gbps']:.0f} GB/s" if copy else ""
    fig.suptitle(f"{main_shape} on {rows[0]['device']}{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, no sweeps (runs on CPU)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    ap.add_argument("--impls", nargs="+", default=None, help="default: every available backend + eager + compile")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--reps", type=int, default=200, help="ms of timing per measurement (do_bench rep)")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        ap.error("no CUDA device: run with --smoke on CPU")
    if device == "cuda" and INTERPRET:
        ap.error("TRITON_INTERPRET=1 would time the interpreter: unset it for GPU figures")
    dtype = getattr(torch, args.dtype)
    impls = args.impls or [*(n for n in ("cuda", "triton", "torch") if n in dispatch.registered()), "eager"] + (
        [] if args.smoke else ["compile"])
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    meta = dict(device=name, torch=torch.__version__, triton=triton.__version__, git_sha=git_sha())

    main_case = T.Case(2, 4, 32, 48, dim=64, dec_dim=32, ratio=0.75) if args.smoke else T.VIT["B"]
    cases = [main_case]
    if not (args.smoke or args.no_sweep):
        cases += [replace(main_case, batch=b) for b in (8, 16, 64)]
        cases += [replace(main_case, ratio=r) for r in (0.5, 0.75, 0.95)]
    rows = [copy_bandwidth(device, meta, 8 if args.smoke else 1024)]
    for case in cases:
        for op in args.ops:
            rows += bench_case(op, case, dtype, device, impls, args.reps, meta)
            if device == "cuda":
                torch.cuda.empty_cache()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    write(rows, f"ops-{slug}{'-smoke' if args.smoke else ''}", str(main_case))


if __name__ == "__main__":
    main()
