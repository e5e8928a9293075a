"""Every CUDA-extension op, forward and backward, on small inputs: the workload for compute-sanitizer.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 python bench/sanitize_ops.py

The cases cover each kernel path: 16-byte and scalar accesses (patch 16 vs 14), every dtype, uint8 clips,
V1 / V2 masks, with and without bias / pos, the videos gradient. Without the caching allocator each tensor is
its own allocation, so an access past its end is reported.
"""

from __future__ import annotations

import itertools
import sys

import torch

import videomae.ops as ops
from videomae import _ext
from videomae.masking import running_cell_mask, tube_mask

CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),  # vectorized
    (2, 3, 4, 28, 28, 2, 14, 0.5),  # scalar path: rows of 14 pixels
    (1, 1, 2, 16, 16, 2, 16, 0.5),  # one channel, one frame pair
]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def run_case(case, dtype, uint8: bool, v2: bool, gen: torch.Generator) -> None:
    b, c, t, h, w, tub, p, ratio = case
    grid = (t // tub, h // p, w // p)
    n, k, d = grid[0] * grid[1] * grid[2], c * tub * p * p, 40
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, dtype=torch.uint8).cuda()
    else:
        videos = torch.randn(b, c, t, h, w, generator=gen).to("cuda", dtype).requires_grad_()
    mask = tube_mask(b, grid, ratio, gen).cuda()
    even = grid[1] % 2 == 0 and grid[2] % 2 == 0
    decode_mask = running_cell_mask(b, grid, 0.5, gen).cuda() if v2 and even else None
    weight = torch.randn(d, c, tub, p, p, generator=gen).to("cuda", dtype).requires_grad_()
    bias = torch.randn(d, generator=gen).to("cuda", dtype).requires_grad_()
    pos = torch.randn(1, n, d, generator=gen).cuda().requires_grad_()
    stats = dict(mean=(0.45,) * c, std=(0.225,) * c)
    with ops.use_backend("cuda"):
        for bp in ((bias, pos), (None, None)):
            x = ops.cube_embed(videos, weight, *bp, mask, **stats)
            x.float().square().sum().backward()
        token = torch.randn(1, 1, d, generator=gen).cuda().requires_grad_()
        y = ops.decoder_input(x.detach().requires_grad_(), token, pos, mask, decode_mask)
        y.float().square().sum().backward()
        n_dec = int((mask if decode_mask is None else ~decode_mask)[0].sum())
        pred = torch.randn(b, n_dec, k, generator=gen).to("cuda", dtype).requires_grad_()
        cfg = dict(tubelet_size=tub, patch_size=p, decode_mask=decode_mask, **stats)
        for style, normalize in itertools.product(("videomae", "mae_st"), (True, False)):
            ops.norm_pix_mse(pred, videos.detach(), mask, normalize_target=normalize, style=style, **cfg).backward()
    torch.cuda.synchronize()


def main() -> int:
    if not _ext.available():
        print(f"videomae._C unavailable: {_ext.reason()}", file=sys.stderr)
        return 1
    gen = torch.Generator().manual_seed(0)
    for case, dtype, uint8, v2 in itertools.product(CASES, DTYPES, (False, True), (False, True)):
        run_case(case, dtype, uint8, v2, gen)
    print(f"sanitize_ops: {len(CASES) * len(DTYPES) * 4} cases of cube_embed, decoder_input, norm_pix_mse fwd+bwd")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
