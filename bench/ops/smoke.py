"""The short correctness smoke of every backend, first on a GPU machine: bf16, ViT-B shapes.

    python -m bench.ops.smoke                   # GPU: each op on each backend, then a ViT-B training step
    python -m bench.ops.smoke --rehearse        # the same on the CPU at a tiny shape (TRITON_INTERPRET=1)
    python -m bench.ops.smoke --registration    # every videomae.ops module imports, each backend registers

Ops: each backend's output and input gradients under bf16 autocast (as training calls them) against the op's
fp64 reference. The bound is tests/tolerances.py's: at most ERROR_RATIO x the error of the eager reference in
the same precision, plus ERROR_FLOOR of the oracle's largest magnitude; NaN never passes. Inputs are made on
the device. Model: one forward + loss + backward of the pretraining model under each backend (bf16 autocast)
against the torch backend in fp32; the loss and the gradient (as a direction) must be as close as the torch
backend's own bf16 step is, by the same ratio and floor.
One row per check in bench/results/smoke.json; exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import torch

import videomae
from bench.common import REPO, ResultWriter, tf32
from videomae import ops
from videomae.masking import token_ids, tube_mask
from videomae.ops import testing as T


def _tolerances():
    """tests/tolerances.py, the one tolerance table, by its path: tests/ is no package, and an installed `tests`
    package (some wheels ship one) would shadow it."""
    spec = importlib.util.spec_from_file_location("videomae_test_tolerances", Path(REPO) / "tests" / "tolerances.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ERROR_FLOOR, module.ERROR_RATIO


ERROR_FLOOR, ERROR_RATIO = _tolerances()
GPU_CASE = replace(T.VIT["B"], batch=4)  # ViT-B shapes; 4 clips keep the fp64 oracle short
REHEARSAL_CASE = T.Case(2, 4, 32, 64, dim=64, dec_dim=32, ratio=0.75)  # even grid: V2 decode masks


# ---------------------------------------------------------------------------------------------- registration


def registration() -> list[str]:
    """Import every module of videomae.ops: a backend that cannot register its ops on this torch fails its import
    (videomae.ops itself only marks it broken). On a GPU machine every backend must also be available (the build
    step built the cuda one). -> the problems found."""
    problems = []
    for mod in pkgutil.walk_packages(ops.__path__, "videomae.ops."):
        try:
            importlib.import_module(mod.name)
        except Exception as e:  # noqa: BLE001  (every failure is reported, none stops the walk)
            problems.append(f"import {mod.name}: {type(e).__name__}: {e}")
    if torch.cuda.is_available():  # on a GPU machine every backend must run (the build step built the cuda one)
        for op, by_backend in ops.backend_report().items():
            problems += [f"{op}/{b}: unavailable on the GPU: {e['reasons']}"
                         for b, e in by_backend.items() if not e["available"]]
    return sorted(set(problems))


# ---------------------------------------------------------------------------------------------- ops


def _fp64(kw: dict) -> dict:
    return {k: v.detach().double().requires_grad_(v.requires_grad)
            if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}


def _max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x = x.double()
    return float("inf") if not torch.isfinite(x).all() else (x - ref).abs().max().item()


def op_checks(device: str, case: T.Case, backends: list[str]) -> list[dict]:
    """Each op's output and gradients on each backend against the fp64 oracle, V1 and V2 masks."""
    from bench.ops.bench_cube_embed import BENCH as CUBE_EMBED
    from bench.ops.bench_decoder_input import BENCH as DECODER_INPUT
    from bench.ops.bench_norm_pix_mse import BENCH as NORM_PIX_MSE

    rows = []
    for bench in (CUBE_EMBED, DECODER_INPUT, NORM_PIX_MSE):
        for v2 in (False, True) if bench is not CUBE_EMBED else (False,):
            kw = bench.inputs(case, device)
            if v2:  # the same inputs with the V2 (running-cell) decode mask
                kw = {**kw, **_v2_ids(bench.name, case, device, kw)}
            kw64 = _fp64(kw)
            ref = bench.ref(**kw64, upcast=True)
            g = torch.randn(ref.shape, dtype=torch.float64, device=device,
                            generator=torch.Generator(device).manual_seed(7))

            def run(fn, kw=kw, kw64=kw64, bench=bench, ref=ref, g=g):
                """-> (output and gradients, the oracle's for the same output gradient): the output gradient is
                rounded to the output's dtype, as training hands it over; that rounding is input, not error."""
                with torch.autocast(device, torch.bfloat16):
                    out = fn(**kw)
                got = [out, *torch.autograd.grad(out, [kw[n] for n in bench.grads], g.to(out.dtype))]
                grads = torch.autograd.grad(ref, [kw64[n] for n in bench.grads], g.to(out.dtype).double(),
                                            retain_graph=True)
                return got, [ref, *grads]

            eager, eager_oracle = run(bench.ref)
            for backend in backends:
                base = dict(check=f"{bench.name}{'-v2' if v2 else ''}", shape=str(case), dtype="bfloat16-autocast")
                try:
                    with ops.use_backend(backend):
                        got, oracle = run(bench.fn)
                except ops.NotSupportedError as e:
                    rows.append(dict(base, backend=backend, status="unsupported", reason=str(e)))
                    continue
                except Exception as e:  # noqa: BLE001  (a crash is this backend's failed check, not the run's)
                    rows.append(dict(base, backend=backend, status="failed", reason=f"{type(e).__name__}: {e}"))
                    traceback.print_exc()
                    continue
                for name, x, o, e, eo in zip(["out", *bench.grads], got, oracle, eager, eager_oracle):
                    err, err_eager = _max_err(x, o), _max_err(e, eo)
                    scale = max(1.0, o.abs().max().item())
                    bound = ERROR_RATIO * err_eager + ERROR_FLOOR[x.dtype] * scale
                    rows.append(dict(base, backend=backend, tensor=name, out_dtype=str(x.dtype).split(".")[-1],
                                     max_err=err, eager_err=err_eager, bound=bound,
                                     status="ok" if err <= bound else "failed"))
    return rows


def _v2_ids(op: str, case: T.Case, device: str, kw: dict) -> dict:
    ids = T.ids(case, v2=True, device=device)
    if op == "decoder_input":
        return dict(visible=ids.visible, decoded=ids.decoded)
    pred = torch.randn(case.batch, ids.decoded.shape[1], case.values, device=device,
                       generator=torch.Generator(device).manual_seed(3))
    return dict(pred=pred.to(kw["pred"].dtype).requires_grad_(), decoded=ids.decoded, scored=ids.scored)


# ---------------------------------------------------------------------------------------------- model


def model_checks(device: str, rehearse: bool, backends: list[str]) -> list[dict]:
    """One pretraining step (forward, loss, backward) under each backend in bf16 autocast vs torch in fp32."""
    if rehearse:
        name, overrides, batch = "pretrain_videomae_tiny_patch16_224", dict(num_frames=4, img_size=64), 2
    else:
        name, overrides, batch = "pretrain_videomae_base_patch16_224", {}, 2
    torch.manual_seed(0)
    model = videomae.create_model(name, **overrides).to(device)
    t, size = overrides.get("num_frames", 16), overrides.get("img_size", 224)
    gen = torch.Generator(device).manual_seed(1)
    videos = torch.randn(batch, 3, t, size, size, device=device, generator=gen)
    grid = (t // 2, size // 16, size // 16)
    ids = token_ids(tube_mask(batch, grid, 0.9 if not rehearse else 0.75, torch.Generator().manual_seed(2)))
    ids = ids.to(device)

    def step(backend: str, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        with ops.use_backend(backend), torch.autocast(device, dtype or torch.float32, enabled=dtype is not None):
            loss = model.forward_loss(videos, model(videos, ids), ids)
        loss.backward()
        grad = torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])
        return loss.detach().double(), grad

    with tf32(False):
        loss_ref, grad_ref = step("torch", None)
        loss_e, grad_e = step("torch", torch.bfloat16)

    def errs(loss, grad):
        cos = torch.nn.functional.cosine_similarity(grad, grad_ref, dim=0).item()
        return abs(loss - loss_ref).item() / abs(loss_ref).item(), 1 - cos

    eager = errs(loss_e, grad_e)
    rows = []
    for backend in backends:
        base = dict(check="model-step", model=name, batch=batch, dtype="bfloat16-autocast", backend=backend)
        try:
            with tf32(False):
                loss, grad = step(backend, torch.bfloat16)
        except ops.NotSupportedError as e:
            rows.append(dict(base, status="unsupported", reason=str(e)))
            continue
        except Exception as e:  # noqa: BLE001
            rows.append(dict(base, status="failed", reason=f"{type(e).__name__}: {e}"))
            traceback.print_exc()
            continue
        got = errs(loss, grad)
        for what, err, err_eager in zip(("loss rel err", "1 - cos(grad)"), got, eager):
            bound = ERROR_RATIO * err_eager + ERROR_FLOOR[torch.bfloat16]
            ok = bool(torch.isfinite(loss)) and err <= bound
            rows.append(dict(base, tensor=what, max_err=err, eager_err=err_eager, bound=bound,
                             status="ok" if ok else "failed"))
    return rows


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rehearse", action="store_true", help="CPU, tiny shapes (with TRITON_INTERPRET=1)")
    ap.add_argument("--registration", action="store_true", help="only the imports and registration check")
    ap.add_argument("--backends", default=None, help="comma list (default: every registered backend)")
    ap.add_argument("--name", default="smoke", help="results file bench/results/<name>.json")
    args = ap.parse_args(argv)
    writer = ResultWriter(args.name)
    device = "cuda" if torch.cuda.is_available() and not args.rehearse else "cpu"
    if device == "cpu" and not (args.rehearse or args.registration):
        ap.error("no CUDA device: run with --rehearse on the CPU")

    problems = registration()
    writer.add(dict(check="registration", status="failed" if problems else "ok", reason="; ".join(problems)),
               backend=None, device=device)
    print("registration: " + ("\n  ".join(["FAILED", *problems]) if problems else "every backend registered"))
    if args.registration:
        return 1 if problems else 0

    known = list(ops.backend_report()["cube_embed"])
    backends = args.backends.split(",") if args.backends else known
    if not set(backends) <= set(known):
        ap.error(f"--backends: known {known}, got {args.backends}")
    case = REHEARSAL_CASE if args.rehearse else GPU_CASE
    rows = op_checks(device, case, backends) + model_checks(device, args.rehearse, backends)
    for row in rows:
        writer.add(row, backend=row.pop("backend"), device=device)
        detail = (f"err {row['max_err']:.3g} <= {row['bound']:.3g} (eager {row['eager_err']:.3g})"
                  if "max_err" in row else row.get("reason", ""))
        print(f"{row['check']:20s} {writer.rows[-1]['backend']:7s} {row.get('tensor', ''):14s} "
              f"{row['status']:11s} {detail}", flush=True)
    failed = [r for r in writer.rows if r["status"] == "failed"]
    print(f"smoke: {len(writer.rows)} rows, {len(failed)} failed -> {writer.path}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
