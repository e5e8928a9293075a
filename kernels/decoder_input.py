"""Decoder input in one pass: row r of sample b is (x_vis[b, r] if r < N_vis else mask_token) + pos[tokens[b, r]].

tokens [B, N_vis + N_dec] lists the visible then the decoded token ids, each in raster order.
Backward is a slice copy (d x_vis), a column sum (d mask_token) and `token_sum` (d pos).
A token id outside [0, N) reads no pos row: its row is x_vis' or the mask token alone.
"""

import torch
import triton
import triton.language as tl

from ._common import launcher, valid_tokens


@triton.jit
def _decoder_input_kernel(
    x_vis, mask_token, pos, tokens, out, NV, R, D, N,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    rr = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    rd = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    r_ok = rr < R
    d_ok = rd < D
    ok = r_ok[:, None] & d_ok[None, :]
    tok, real = valid_tokens(tl.load(tokens + b * R + rr, mask=r_ok, other=0), r_ok, N)
    tok = tok.to(tl.int64)
    is_vis = rr < NV
    src = (b * NV + rr).to(tl.int64)
    x = tl.load(x_vis + src[:, None] * D + rd[None, :], mask=ok & is_vis[:, None], other=0.0).to(tl.float32)
    mt = tl.load(mask_token + rd, mask=d_ok, other=0.0).to(tl.float32)
    p = tl.load(pos + tok[:, None] * D + rd[None, :], mask=real[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    val = tl.where(is_vis[:, None], x, mt[None, :]) + p
    dst = (b * R + rr).to(tl.int64)
    tl.store(out + dst[:, None] * D + rd[None, :], val.to(out.dtype.element_ty), mask=ok)


def decoder_input_fwd(x_vis: torch.Tensor, mask_token: torch.Tensor, pos: torch.Tensor,
                      tokens: torch.Tensor) -> torch.Tensor:
    """x_vis [B, N_vis, Dd]; mask_token [Dd]; pos [N, Dd]; tokens [B, N_vis + N_dec] int64 -> [B, N_vis + N_dec, Dd]"""
    b, nv, d = x_vis.shape
    r = tokens.shape[1]
    out = torch.empty(b, r, d, dtype=x_vis.dtype, device=x_vis.device)
    if out.numel() == 0:
        return out
    block_r, block_d = 16, min(256, triton.next_power_of_2(d))
    grid = (b, triton.cdiv(r, block_r), triton.cdiv(d, block_d))
    launcher(_decoder_input_kernel)[grid](x_vis, mask_token, pos, tokens, out, nv, r, d, pos.shape[0],
                                             BLOCK_R=block_r, BLOCK_D=block_d)
    return out
