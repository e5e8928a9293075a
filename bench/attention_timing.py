"""Every attention kernel that runs here, timed forward and backward at the shapes of a pretraining step, and the
order `auto` should try them in.

Shapes (ViT-B, 16x224x224, tube 0.9, B=32, bf16): the decoder's [32, 6, 1568, 64] (the largest single cost of the
step, bench/results/cost_model.md) and the encoder's [32, 12, 160, 64]. Candidates: each backend of
`videomae.attention.BACKENDS` that declares it can run the call (cuDNN, flash, memory-efficient SDPA; flash-attn
and xformers when installed), except the reference ones (eager, math, PyTorch's own choice). Per kernel: forward
alone and backward alone (`bench.common.timer`: CUDA events, median after warm-up), TFLOP/s (4*B*H*N^2*d forward,
2.5x that backward) and the fraction of the bf16 matmul rate the cost model assumes for it.

Output (`--out DIR`, default bench/results): attention-<device>.json with, per `videomae.dispatch.priority_key`,
the measured order (fastest fwd+bwd first); `install(path)` puts those orders into `videomae.dispatch` (what
`auto` reads), so a run that loads the file keeps the measured choice.

    python bench/attention_timing.py --out $OUT      # on a GPU (bench/gpu.sh)
    python bench/attention_timing.py --rehearse      # CPU, tiny shapes: the code path, no figures worth keeping
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import provenance, timer  # noqa: E402
from videomae import dispatch  # noqa: E402
from videomae.attention import BACKENDS  # noqa: E402

SHAPES = {"decoder": (32, 6, 1568, 64), "encoder": (32, 12, 160, 64)}
REHEARSAL = {"decoder": (2, 2, 64, 16), "encoder": (2, 2, 16, 16)}
SKIP = ("eager", "sdpa-math", "sdpa-default")  # references: correct, never the fastest, slow at 1568 tokens


def attention_flops(shape: tuple[int, int, int, int]) -> tuple[float, float]:
    """(forward, backward) FLOPs of softmax(q k^T) v: two products forward, five backward (S, dV, dP, dQ, dK)."""
    b, h, n, d = shape
    fwd = 4 * b * h * n * n * d
    return fwd, 2.5 * fwd


def time_kernel(name: str, shape, dtype=torch.bfloat16, device="cuda", rep_ms: float = 100) -> dict:
    """{fwd_ms, bwd_ms, fwd_tflops, bwd_tflops} of backend `name` on random q, k, v [B, H, N, d] laid out as the
    model makes them (views of one [B, N, 3, H, d] projection)."""
    b, h, n, d = shape
    gen = torch.Generator(device=device).manual_seed(0)
    qkv = torch.randn(b, n, 3, h, d, device=device, dtype=dtype, generator=gen).requires_grad_()
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    fn, scale = BACKENDS[name], d ** -0.5
    with torch.no_grad():
        fwd = timer(lambda: fn(q, k, v, scale, 0.0), device, rep_ms=rep_ms)
    out = fn(q, k, v, scale, 0.0)
    grad = torch.randn_like(out)
    bwd = timer(lambda: torch.autograd.grad(out, qkv, grad, retain_graph=True), device, rep_ms=rep_ms)
    f_flops, b_flops = attention_flops(shape)
    return dict(fwd_ms=fwd.median_ms, bwd_ms=bwd.median_ms, fwd_bwd_ms=fwd.median_ms + bwd.median_ms,
                fwd_tflops=f_flops / fwd.median_ms / 1e9, bwd_tflops=b_flops / bwd.median_ms / 1e9,
                timer=fwd.method)


def candidates(q: torch.Tensor) -> list[str]:
    """Backends that declare they can run q (and k, v of its shape), in `auto`'s current order first."""
    order = dispatch.priority("attention", {"q": q})
    names = order + [n for n in BACKENDS if n not in order]
    return [n for n in names if n not in SKIP and not BACKENDS[n].reasons(q, q, q, 0.0)]


def measure(shapes: dict = SHAPES, dtype=torch.bfloat16, device="cuda", rep_ms: float = 100) -> dict:
    """{part: {"shape", "key", "kernels": {name: timings or {"error"}}, "order": [...]}} for each shape."""
    out = {}
    for part, shape in shapes.items():
        q = torch.empty(shape, device=device, dtype=dtype)
        rows = {}
        for name in candidates(q):
            try:
                rows[name] = time_kernel(name, shape, dtype, device, rep_ms)
            except RuntimeError as e:  # declared able, refused at run time: recorded, never ordered first
                rows[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        timed = sorted((n for n in rows if "fwd_bwd_ms" in rows[n]), key=lambda n: rows[n]["fwd_bwd_ms"])
        key = dispatch.priority_key("attention", {"q": q})
        out[part] = dict(shape=list(shape), key=list(key), kernels=rows,
                         order=timed + [n for n in dispatch.priority("attention", {"q": q}) if n not in timed])
    return out


def install(path: str | Path) -> dict[tuple, list[str]]:
    """Put the measured orders of an attention-<device>.json into `videomae.dispatch` (what `auto` reads)."""
    installed = {}
    for part in json.loads(Path(path).read_text())["shapes"].values():
        key = tuple(part["key"])
        dispatch.set_priority(key, part["order"])
        installed[key] = part["order"]
    return installed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rehearse", action="store_true", help="CPU, tiny shapes (the code path only)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    device = "cpu" if args.rehearse else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --rehearse on a CPU")
    dtype = torch.float32 if args.rehearse else torch.bfloat16
    shapes = measure(REHEARSAL if args.rehearse else SHAPES, dtype, device, rep_ms=10 if args.rehearse else 100)
    name = "rehearsal" if args.rehearse else torch.cuda.get_device_name().replace(" ", "-").lower()
    result = dict(shapes=shapes, dtype=str(dtype), **provenance("attention", device))
    path = Path(args.out) / f"attention-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for part, r in shapes.items():
        print(part, r["shape"], "order:", ", ".join(r["order"]), flush=True)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
