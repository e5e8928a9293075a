"""Helpers shared by the kernel files: launching, cube addressing and the deterministic per-token row sum."""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

INTERPRET = bool(triton.knobs.runtime.interpret)  # kernels built for the interpreter run on CPU tensors


def launcher(kernel):
    """`kernel[grid](...)` as torch.compile can trace it (`wrap_triton`); the interpreter's kernels as they are
    (torch 2.11's wrap_triton rejects them, and those ops are opaque custom ops anyway)."""
    return kernel if INTERPRET else wrap_triton(kernel)


@triton.jit
def cube_offsets(tok, b, sB, sT, sH, sW, GH, GW, TUB: tl.constexpr, P: tl.constexpr):
    """Element offset of each listed cube's first pixel; tok, b: [BLOCK] token id and sample index."""
    ti = tok // (GH * GW)
    hi = (tok // GW) % GH
    wi = tok % GW
    return b.to(tl.int64) * sB + (ti * TUB * sT + hi * P * sH + wi * P * sW).to(tl.int64)


@triton.jit
def pixel_offsets(rk, sC, sT, sH, sW, TUB: tl.constexpr, P: tl.constexpr):
    """Offset of value rk of a cube in conv3d weight order (c, dt, dy, dx) -> (offset, channel)."""
    c = rk // (TUB * P * P)
    r = rk % (TUB * P * P)
    off = c * sC + (r // (P * P)) * sT + ((r // P) % P) * sH + (r % P) * sW
    return off, c


@triton.jit
def _token_sum_kernel(
    grad, rows_a, rows_b, out, N, D, R, OFFSET_B,
    B: tl.constexpr, HAS_B: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # B is a loop bound: constexpr, because triton 3.6's interpreter cannot loop over a runtime scalar.
    # out[n, d] = sum_b grad[b, rows_a[b, n], d] (+ grad[b, OFFSET_B + rows_b[b, n], d]); a row of -1 adds nothing.
    # Each program owns its outputs and sums b in order: deterministic, no atomics.
    rt = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t_ok = rt < N
    d_ok = rd < D
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for b in range(B):
        ra = tl.load(rows_a + b * N + rt, mask=t_ok, other=-1)
        ok = (ra >= 0)[:, None] & d_ok[None, :]
        row = (b * R + ra).to(tl.int64)
        acc += tl.load(grad + row[:, None] * D + rd[None, :], mask=ok, other=0.0).to(tl.float32)
        if HAS_B:
            rb = tl.load(rows_b + b * N + rt, mask=t_ok, other=-1)
            ok = (rb >= 0)[:, None] & d_ok[None, :]
            row = (b * R + OFFSET_B + rb).to(tl.int64)
            acc += tl.load(grad + row[:, None] * D + rd[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(out + rt[:, None] * D + rd[None, :], acc, mask=t_ok[:, None] & d_ok[None, :])


def token_sum(grad: torch.Tensor, rows_a: torch.Tensor, rows_b: torch.Tensor | None = None,
              offset_b: int = 0) -> torch.Tensor:
    """grad [B, R, D]; rows_a, rows_b [B, N] int32 (-1 = absent) -> [N, D] fp32 sum over samples."""
    b, r, d = grad.shape
    n = rows_a.shape[1]
    out = torch.zeros(n, d, dtype=torch.float32, device=grad.device)
    if b * r == 0:
        return out
    block_t, block_d = 16, min(128, triton.next_power_of_2(d))
    grid = (triton.cdiv(n, block_t), triton.cdiv(d, block_d))
    launcher(_token_sum_kernel)[grid](
        grad, rows_a, rows_a if rows_b is None else rows_b, out, n, d, r, offset_b,
        B=b, HAS_B=rows_b is not None, BLOCK_T=block_t, BLOCK_D=block_d,
    )
    return out
