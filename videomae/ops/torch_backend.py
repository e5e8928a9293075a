"""The `torch` backend: eager implementations of the ops' forward and backward, any device.

Cheaper than the references (only visible / decoded cubes are embedded or normalized) but plain
torch: the baseline every fused backend must beat, and the fallback when none can run.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ._index import decoded_mask, loss_weights, tokens_where
from .library import define_ops
from .reference import normalize_uint8

CUBES = "b c (t p0) (h p1) (w p2) -> b (t h w) (c p0 p1 p2)"  # conv3d's weight order (c, t, p, p)


def _cubes(videos, weight, mean, std) -> torch.Tensor:
    """videos [B, C, T, H, W] -> [B, N, C*t*p*p] in weight's dtype (uint8 normalized)."""
    _, _, t, p, _ = weight.shape
    if videos.dtype == torch.uint8:
        videos = normalize_uint8(videos, mean, std, weight.dtype)
    return rearrange(videos, CUBES, p0=t, p1=p, p2=p)


def cube_embed(videos, weight, bias, pos, mask, mean, std):
    """-> [B, N_vis, D]"""
    b, d = videos.shape[0], weight.shape[0]
    vis = _cubes(videos, weight, mean, std)[~mask]  # [B*N_vis, K]
    w = weight.reshape(d, -1)
    out = vis @ w.t() if bias is None else torch.addmm(bias, vis, w.t())
    if pos is not None:
        out = out + pos.reshape(-1, d)[tokens_where(~mask).flatten().long()].to(out.dtype)
    return out.view(b, -1, d)


def cube_embed_backward(grad, videos, weight, mask, mean, std, needs):
    """grad [B, N_vis, D] -> (d videos, d weight, d bias fp32 [D], d pos fp32 [N, D]); empty where not needed."""
    need_videos, need_weight, need_bias, need_pos = needs
    b, n = mask.shape
    d = weight.shape[0]
    g = grad.reshape(-1, d)
    gv, gw, gb, gp = (grad.new_empty(0) for _ in range(4))  # distinct: op outputs may not alias
    if need_weight:
        gw = (g.t() @ _cubes(videos, weight, mean, std)[~mask]).view_as(weight)
    if need_bias:
        gb = g.float().sum(0)
    if need_pos:
        full = torch.zeros(b, n, d, dtype=torch.float32, device=grad.device)
        full[~mask] = g.float()
        gp = full.sum(0)
    if need_videos:
        _, _, t, p, _ = weight.shape
        full = torch.zeros(b, n, weight[0].numel(), dtype=grad.dtype, device=grad.device)
        full[~mask] = g @ weight.reshape(d, -1)
        tt, hh, ww = videos.shape[2] // t, videos.shape[3] // p, videos.shape[4] // p
        gv = rearrange(full, "b (t h w) (c p0 p1 p2) -> b c (t p0) (h p1) (w p2)", t=tt, h=hh, w=ww, p0=t, p1=p, p2=p)
        gv = gv.contiguous()
    return gv, gw, gb, gp


def decoder_input(x_vis, mask_token, pos, mask, decode_mask):
    """-> [B, N_vis + N_dec, Dd], sums in fp32"""
    b, _, d = x_vis.shape
    table = pos.reshape(-1, d).float()
    vis = x_vis.float() + table[tokens_where(~mask).long()]
    dec = mask_token.reshape(1, 1, d).float() + table[tokens_where(decoded_mask(mask, decode_mask)).long()]
    return torch.cat([vis, dec], dim=1).to(x_vis.dtype)


def decoder_input_backward(grad, mask, decode_mask, num_visible: int, need_pos: bool):
    """grad [B, N_vis + N_dec, Dd] -> (d x_vis, d mask_token fp32 [Dd], d pos fp32 [N, Dd] or empty)."""
    b, n = mask.shape
    d = grad.shape[-1]
    gx = grad[:, :num_visible].clone()
    gd = grad[:, num_visible:].float()
    gm = gd.sum((0, 1))
    gp = grad.new_empty(0, dtype=torch.float32)
    if need_pos:
        full = torch.zeros(b, n, d, dtype=torch.float32, device=grad.device)
        full[~mask] = gx.float().reshape(-1, d)
        full[decoded_mask(mask, decode_mask)] += gd.reshape(-1, d)
        gp = full.sum(0)
    return gx, gm, gp


def _targets(videos, mask, decode_mask, tubelet, patch, normalize, style, mean, std):
    """Pixel targets of the decoded cubes only -> ([B, N_dec, t*p*p*C] fp32, loss weight per cube [B, N_dec])."""
    m = torch.tensor(mean, dtype=torch.float32, device=videos.device).view(1, -1, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=videos.device).view(1, -1, 1, 1, 1)
    x = videos.float()
    if videos.dtype == torch.uint8:
        x = x / 255 if style == "videomae" else (x / 255 - m) / s
    elif style == "videomae":
        x = x * s + m
    cubes = rearrange(x, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet, p1=patch, p2=patch)
    b = cubes.shape[0]
    dec = decoded_mask(mask, decode_mask)
    cubes = cubes[dec].reshape(b, -1, *cubes.shape[2:])
    if normalize and style == "videomae":
        cubes = (cubes - cubes.mean(-2, keepdim=True)) / (cubes.var(-2, keepdim=True).sqrt() + 1e-6)
    cubes = cubes.flatten(2)
    if normalize and style == "mae_st":
        cubes = (cubes - cubes.mean(-1, keepdim=True)) / (cubes.var(-1, keepdim=True) + 1e-6) ** 0.5
    return cubes, loss_weights(mask, decode_mask, tokens_where(dec, cubes.shape[1]), cubes.shape[-1])


def norm_pix_mse(pred, videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style, mean, std):
    """-> scalar fp32 loss"""
    tgt, w = _targets(videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style, mean, std)
    return (((pred.float() - tgt) ** 2).sum(-1) * w).sum()


def norm_pix_mse_backward(grad, pred, videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style,
                          mean, std):
    """grad: scalar -> d pred [B, N_dec, E] in pred's dtype (targets recomputed, never stored)."""
    tgt, w = _targets(videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style, mean, std)
    return (2 * grad.float() * w.unsqueeze(-1) * (pred.float() - tgt)).to(pred.dtype)


define_ops("torch", {
    "cube_embed": cube_embed,
    "cube_embed_backward": cube_embed_backward,
    "decoder_input": decoder_input,
    "decoder_input_backward": decoder_input_backward,
    "norm_pix_mse": norm_pix_mse,
    "norm_pix_mse_backward": norm_pix_mse_backward,
})
