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
def valid_tokens(tok, ok, N):
    """(ids to address with, which are real): an id outside [0, N) or a lane not `ok` is not real, and is
    replaced by 0 so that even the addresses the masked accesses compute stay inside the buffers."""
    real = ok & (tok >= 0) & (tok < N)
    return tl.where(real, tok, 0), real


@triton.jit
def cube_offsets(tok, b, sB, sT, sH, sW, GH, GW, TUB: tl.constexpr, P: tl.constexpr):
    """Element offset of each listed cube's first pixel; tok, b: [BLOCK] token id (in range) and sample index."""
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
    grad, rows_a, rows_b, out, N, D, R, R_A, OFFSET_B,
    B: tl.constexpr, HAS_B: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # B is a loop bound: constexpr, because triton 3.6's interpreter cannot loop over a runtime scalar.
    # out[n, d] = sum_b grad[b, rows_a[b, n], d] (+ grad[b, OFFSET_B + rows_b[b, n], d]); a row of -1 adds nothing,
    # and so does any row outside its table's part of grad (rows_a: [0, R_A), rows_b: [0, R - OFFSET_B)).
    # Each program owns its outputs and sums b in order: deterministic, no atomics.
    rt = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t_ok = rt < N
    d_ok = rd < D
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for b in range(B):
        ra = tl.load(rows_a + b * N + rt, mask=t_ok, other=-1)
        a_ok = (ra >= 0) & (ra < R_A)
        row = (b * R + tl.where(a_ok, ra, 0)).to(tl.int64)
        acc += tl.load(grad + row[:, None] * D + rd[None, :], mask=a_ok[:, None] & d_ok[None, :],
                       other=0.0).to(tl.float32)
        if HAS_B:
            rb = tl.load(rows_b + b * N + rt, mask=t_ok, other=-1)
            b_ok = (rb >= 0) & (rb < R - OFFSET_B)
            row = (b * R + OFFSET_B + tl.where(b_ok, rb, 0)).to(tl.int64)
            acc += tl.load(grad + row[:, None] * D + rd[None, :], mask=b_ok[:, None] & d_ok[None, :],
                           other=0.0).to(tl.float32)
    tl.store(out + rt[:, None] * D + rd[None, :], acc, mask=t_ok[:, None] & d_ok[None, :])


def token_sum(grad: torch.Tensor, rows_a: torch.Tensor, rows_b: torch.Tensor | None = None,
              offset_b: int = 0) -> torch.Tensor:
    """grad [B, R, D]; rows_a, rows_b [B, N] int32 (-1 = absent), rows of grad[:, :offset_b] and
    grad[:, offset_b:] (rows_a: of all R without rows_b) -> [N, D] fp32 sum over samples."""
    b, r, d = grad.shape
    n = rows_a.shape[1]
    out = torch.zeros(n, d, dtype=torch.float32, device=grad.device)
    if b * r == 0:
        return out
    block_t, block_d = 16, min(128, triton.next_power_of_2(d))
    grid = (triton.cdiv(n, block_t), triton.cdiv(d, block_d))
    launcher(_token_sum_kernel)[grid](
        grad, rows_a, rows_a if rows_b is None else rows_b, out, n, d, r, r if rows_b is None else offset_b, offset_b,
        B=b, HAS_B=rows_b is not None, BLOCK_T=block_t, BLOCK_D=block_d,
    )
    return out
