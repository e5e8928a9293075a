"""Every fused op, forward and backward, on every backend with kernels, at small odd shapes: the workload that
bench/gpu.sh runs under compute-sanitizer memcheck and racecheck.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 86 python -m bench.ops.sanitize
    python -m bench.ops.sanitize --rehearse     # the same calls on the CPU (torch, and triton when interpreted)

The cases cover each kernel path: 16-byte and scalar accesses (patch 16 vs 14), every dtype, uint8 clips, V1 / V2
masks, with and without bias / pos. Without the caching allocator every tensor is its own allocation, so an
access past its end is reported. Inputs are made on the device.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from videomae import ops
from videomae.masking import running_cell_mask, token_ids, tube_mask

CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),  # vectorized rows
    (2, 3, 4, 28, 28, 2, 14, 0.5),  # scalar path: rows of 14 pixels
    (1, 1, 2, 16, 16, 2, 16, 0.5),  # one channel, one frame pair
]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def run_case(case, dtype, uint8: bool, v2: bool, backend: str, device: str, gen: torch.Generator,
             mask_gen: torch.Generator) -> None:
    b, c, t, h, w, tub, p, ratio = case
    grid = (t // tub, h // p, w // p)
    n, k, d = grid[0] * grid[1] * grid[2], c * tub * p * p, 40
    mask = tube_mask(b, grid, ratio, mask_gen)  # masks are made on the CPU, as the loader makes them
    even = grid[1] % 2 == 0 and grid[2] % 2 == 0
    ids = token_ids(mask, running_cell_mask(b, grid, 0.5, mask_gen) if v2 and even else None).to(device)

    def randn(*shape, dt=torch.float32):
        return torch.randn(*shape, generator=gen, device=device).to(dt).requires_grad_()

    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, device=device, dtype=torch.uint8)
    else:
        videos = randn(b, c, t, h, w, dt=dtype)
    weight, bias, pos = randn(d, c, tub, p, p, dt=dtype), randn(d, dt=dtype), randn(1, n, d)
    stats = dict(mean=(0.45,) * c, std=(0.225,) * c)
    with ops.use_backend(backend):
        for bp in ((bias, pos), (None, None)):
            x = ops.cube_embed(videos, weight, *bp, ids.visible, **stats)
            x.float().square().sum().backward()
        token = randn(1, 1, d)
        y = ops.decoder_input(x.detach().requires_grad_(), token, pos, ids.visible, ids.decoded)
        y.float().square().sum().backward()
        pred = randn(b, ids.decoded.shape[1], k, dt=dtype)
        clip = videos.detach()
        for style, normalize in itertools.product(("videomae", "mae_st"), (True, False)):
            loss = ops.norm_pix_mse(pred, clip, ids.decoded, ids.scored, tubelet_size=tub, patch_size=p,
                                    normalize_target=normalize, style=style, **stats)
            loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rehearse", action="store_true", help="on the CPU: one case and dtype per backend")
    ap.add_argument("--backends", default=None, help="comma list (default: those with kernels: cuda, triton)")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.rehearse else "cpu"
    if device == "cpu" and not args.rehearse:
        ap.error("no CUDA device: run with --rehearse on the CPU")
    report = ops.backend_report()["cube_embed"]
    wanted = args.backends.split(",") if args.backends else [b for b in report if b != "torch" or args.rehearse]
    runnable = [b for b in wanted if report.get(b, {}).get("available")]
    missing = sorted(set(wanted) - set(runnable))
    if missing and not args.rehearse:
        print(f"sanitize: backends that cannot run here: {missing}: {[report.get(b) for b in missing]}",
              file=sys.stderr)
        return 1
    cases, dtypes = (CASES[:1], DTYPES[:1]) if args.rehearse else (CASES, DTYPES)
    gen, mask_gen = torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)
    count = 0
    for backend in runnable:
        for case, dtype, uint8, v2 in itertools.product(cases, dtypes, (False, True), (False, True)):
            run_case(case, dtype, uint8, v2, backend, device, gen, mask_gen)
            count += 1
    print(f"sanitize: {count} cases of cube_embed, decoder_input, norm_pix_mse fwd+bwd on {', '.join(runnable)}")
    return 0 if runnable else 1


if __name__ == "__main__":
    sys.exit(main())
