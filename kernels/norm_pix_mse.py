"""Normalized-pixel masked MSE: one program per decoded cube reads its pixels once, builds the target in
registers (fp32) and returns the cube's squared-error sum, or in backward writes d pred directly.

Target of a cube, values in pred's order (p = (dt, dy, dx), channel fastest):
- videomae: pixels x*std + mean (or x/255 for uint8); per channel `(x - mu) / (std_unbiased + 1e-6)`.
- mae_st:   the normalized input; jointly over the cube `(x - mu) / sqrt(var_unbiased + 1e-6)`.
- without normalization: the pixels as above.
A token id outside [0, N) reads no pixel (its target is zeros); `loss_weights` gives it weight 0.
"""

import torch
import triton
import triton.language as tl

from videomae.ops._index import channel_constants

from ._common import cube_offsets, launcher


@triton.jit
def _norm_pix_mse_kernel(
    pred, video, tokens, mean, std, weight, grad_loss, out,
    ND, N, sB, sC, sT, sH, sW, GH, GW,
    C: tl.constexpr, TUB: tl.constexpr, P: tl.constexpr, MAE_ST: tl.constexpr, NORMALIZE: tl.constexpr,
    IS_UINT8: tl.constexpr, BACKWARD: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0)  # b * N_dec + j
    tok = tl.load(tokens + row)
    real = (tok >= 0) & (tok < N)
    tok = tl.where(real, tok, 0)  # an id outside [0, N): no pixel read, and addresses inside the clip
    base = cube_offsets(tok, row // ND, sB, sT, sH, sW, GH, GW, TUB, P)
    PP: tl.constexpr = TUB * P * P
    rp = tl.arange(0, BLOCK_P)
    rc = tl.arange(0, BLOCK_C)
    p_ok = rp < PP
    c_ok = rc < C
    ok = p_ok[:, None] & c_ok[None, :]
    off = (rp // (P * P)) * sT + ((rp // P) % P) * sH + (rp % P) * sW
    x = tl.load(video + base + off[:, None] + rc[None, :] * sC, mask=ok & real, other=0).to(tl.float32)
    m = tl.load(mean + rc, mask=c_ok, other=0.0)[None, :]
    s = tl.load(std + rc, mask=c_ok, other=1.0)[None, :]
    if IS_UINT8:
        x = x / 255.0
        if MAE_ST:
            x = (x - m) / s
    elif not MAE_ST:
        x = x * s + m
    if NORMALIZE:
        if MAE_ST:
            mu = tl.sum(tl.sum(tl.where(ok, x, 0.0), 1), 0) / (PP * C)
            dx = tl.where(ok, x - mu, 0.0)
            var = tl.sum(tl.sum(dx * dx, 1), 0) / (PP * C - 1)
            x = dx / tl.sqrt(var + 1e-6)
        else:
            mu = tl.sum(tl.where(ok, x, 0.0), 0) / PP  # [BLOCK_C]
            dx = tl.where(ok, x - mu[None, :], 0.0)
            var = tl.sum(dx * dx, 0) / (PP - 1)
            x = dx / (tl.sqrt(var)[None, :] + 1e-6)
    dst = row.to(tl.int64) * (PP * C) + rp[:, None] * C + rc[None, :]
    diff = tl.where(ok, tl.load(pred + dst, mask=ok, other=0.0).to(tl.float32) - x, 0.0)
    if BACKWARD:
        g = 2.0 * tl.load(grad_loss).to(tl.float32) * tl.load(weight + row)
        tl.store(out + dst, (g * diff).to(out.dtype.element_ty), mask=ok)
    else:
        tl.store(out + row, tl.sum(tl.sum(diff * diff, 1), 0))


def _launch(pred, videos, tokens, weight, grad_loss, out, tubelet, patch, normalize, style, mean, std):
    if tokens.numel() == 0:
        return
    b, c = videos.shape[:2]
    gt, gh, gw = videos.shape[2] // tubelet, videos.shape[3] // patch, videos.shape[4] // patch
    m, s = channel_constants(mean, std, videos.device)
    pp = tubelet * patch * patch
    launcher(_norm_pix_mse_kernel)[(tokens.numel(),)](
        pred, videos, tokens, m, s, weight, weight if grad_loss is None else grad_loss, out, tokens.shape[1],
        gt * gh * gw, *videos.stride(), gh, gw,
        C=c, TUB=tubelet, P=patch, MAE_ST=style == "mae_st", NORMALIZE=normalize,
        IS_UINT8=videos.dtype == torch.uint8, BACKWARD=grad_loss is not None,
        BLOCK_P=triton.next_power_of_2(pp), BLOCK_C=triton.next_power_of_2(c),
        num_warps=8 if pp * c >= 1024 else 4,
    )


def norm_pix_mse_fwd(pred, videos, tokens, weight, tubelet, patch, normalize, style, mean, std) -> torch.Tensor:
    """pred [B, N_dec, E]; tokens [B, N_dec] int64 decoded ids; weight [B, N_dec] fp32 -> scalar fp32 loss"""
    err = torch.empty(tokens.shape, dtype=torch.float32, device=pred.device)
    _launch(pred, videos, tokens, weight, None, err, tubelet, patch, normalize, style, mean, std)
    return (err * weight).sum()


def norm_pix_mse_bwd(grad, pred, videos, tokens, weight, tubelet, patch, normalize, style, mean, std):
    """grad: scalar d loss -> d pred [B, N_dec, E] in pred's dtype"""
    out = torch.empty_like(pred)
    _launch(pred, videos, tokens, weight, grad, out, tubelet, patch, normalize, style, mean, std)
    return out
