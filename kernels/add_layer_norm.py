"""Residual add + LayerNorm in one pass, forward and backward.

Forward, per row: s = x + r (rounded to the stream's dtype, as the separate add would), y = (s - mean) * rstd *
w + b in fp32, stored in y's dtype; mean and rstd kept for backward. Backward, per row: dx = rstd * (w dy -
mean(w dy) - xhat * mean(w dy xhat)) + ds; the weight and bias gradients are column sums over rows, accumulated
per program in fp32 and summed over programs afterwards (a fixed order: deterministic, no atomics).
"""

import torch
import triton
import triton.language as tl

from ._common import launcher


@triton.jit
def _fwd_kernel(
    X, R, W, B, S, Y, MEAN, RSTD, M, D, eps,
    HAS_RES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    r_ok = rows < M
    c_ok = cols < D
    ok = r_ok[:, None] & c_ok[None, :]
    off = rows.to(tl.int64)[:, None] * D + cols[None, :]
    s = tl.load(X + off, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        s += tl.load(R + off, mask=ok, other=0.0).to(tl.float32)
        s_out = s.to(S.dtype.element_ty)
        tl.store(S + off, s_out, mask=ok)
        s = s_out.to(tl.float32)  # normalize the stored sum, as LayerNorm after a separate add would
    mean = tl.sum(s, axis=1) / D
    diff = tl.where(ok, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=1) / D + eps)
    w = tl.load(W + cols, mask=c_ok, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=c_ok, other=0.0).to(tl.float32)
    y = diff * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + off, y.to(Y.dtype.element_ty), mask=ok)
    tl.store(MEAN + rows, mean, mask=r_ok)
    tl.store(RSTD + rows, rstd, mask=r_ok)


@triton.jit
def _bwd_kernel(
    DY, DS, S, MEAN, RSTD, W, DX, DW_PART, DB_PART, M, D,
    HAS_DS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ITERS: tl.constexpr,
):
    # Each program takes ITERS blocks of BLOCK_M rows (a compile-time loop: the interpreter needs one) and writes
    # one row of partial weight / bias gradients.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    c_ok = cols < D
    w = tl.load(W + cols, mask=c_ok, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    db = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in tl.static_range(ITERS):
        rows = (pid * ITERS + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        r_ok = rows < M
        ok = r_ok[:, None] & c_ok[None, :]
        off = rows.to(tl.int64)[:, None] * D + cols[None, :]
        s = tl.load(S + off, mask=ok, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=r_ok, other=0.0)
        rstd = tl.load(RSTD + rows, mask=r_ok, other=0.0)
        dy = tl.load(DY + off, mask=ok, other=0.0).to(tl.float32)
        xhat = tl.where(ok, (s - mean[:, None]) * rstd[:, None], 0.0)
        wdy = dy * w[None, :]
        c1 = tl.sum(xhat * wdy, axis=1) / D
        c2 = tl.sum(wdy, axis=1) / D
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DS:
            dx += tl.load(DS + off, mask=ok, other=0.0).to(tl.float32)
        tl.store(DX + off, dx.to(DX.dtype.element_ty), mask=ok)
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(DW_PART + pid * D + cols, dw, mask=c_ok)
    tl.store(DB_PART + pid * D + cols, db, mask=c_ok)


def _blocks(d: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_D): the whole row in registers, about 4096 values per program block."""
    block_d = triton.next_power_of_2(d)
    return max(1, min(64, 4096 // block_d)), block_d


def add_layer_norm_fwd(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                       eps: float, out_dtype: torch.dtype
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, residual: [..., D] contiguous -> (x + residual in their promoted dtype, or empty without a residual;
    LayerNorm of it [..., D] in out_dtype; mean [M] fp32; rstd [M] fp32), M = x.numel() // D."""
    d = x.shape[-1]
    m = x.numel() // d
    stream = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    s = x.new_empty(x.shape, dtype=stream) if residual is not None else x.new_empty(0)
    y = x.new_empty(x.shape, dtype=out_dtype)
    mean = x.new_empty(m, dtype=torch.float32)
    rstd = x.new_empty(m, dtype=torch.float32)
    if m == 0:
        return s, y, mean, rstd
    block_m, block_d = _blocks(d)
    launcher(_fwd_kernel)[(triton.cdiv(m, block_m),)](
        x, x if residual is None else residual, weight, bias, s, y, mean, rstd, m, d, eps,
        HAS_RES=residual is not None, BLOCK_M=block_m, BLOCK_D=block_d)
    return s, y, mean, rstd


def add_layer_norm_bwd(grad_y: torch.Tensor, grad_sum: torch.Tensor | None, saved: torch.Tensor, mean: torch.Tensor,
                       rstd: torch.Tensor, weight: torch.Tensor, iters: int = 8
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_y [..., D]; grad_sum [..., D] or None; saved: the LayerNorm input [..., D] -> (d input in saved's
    dtype, d weight fp32 [D], d bias fp32 [D])."""
    d = saved.shape[-1]
    m = saved.numel() // d
    dx = torch.empty_like(saved)
    block_m, block_d = _blocks(d)
    programs = max(1, triton.cdiv(m, block_m * iters))
    dw = saved.new_empty(programs, d, dtype=torch.float32)
    db = saved.new_empty(programs, d, dtype=torch.float32)
    if m:
        launcher(_bwd_kernel)[(programs,)](
            grad_y, grad_y if grad_sum is None else grad_sum, saved, mean, rstd, weight, dx, dw, db, m, d,
            HAS_DS=grad_sum is not None, BLOCK_M=block_m, BLOCK_D=block_d, ITERS=iters,
            num_warps=8)  # 4 warps hold 32 values per thread per tensor: at D=768, 255 registers and a spill
    else:
        dw.zero_()
        db.zero_()
    return dx, dw.sum(0), db.sum(0)
