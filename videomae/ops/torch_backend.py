"""The `torch` backend: the ops in eager torch, any device. It is the unfused path of the model.

Forward kernels are the ops' references (`<op>_ref`, the official computation: conv3d over every cube,
torch's type promotion in the decoder input, targets of every cube); backward kernels are written out with
static-shape gathers and scatter-adds onto zeros (deterministic on every device for ids without repeats; a
repeated id still gets the sum of its rows). Ids outside [0, N) are refused by aten's own bounds checks.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ._index import loss_weights, put_rows, take_rows
from .cube_embed import cube_embed_ref, normalize_uint8
from .decoder_input import decoder_input_ref
from .library import define_ops
from .norm_pix_mse import norm_pix_mse_ref, pixel_targets

CUBES = "b c (t p0) (h p1) (w p2) -> b (t h w) (c p0 p1 p2)"  # conv3d's weight order (c, t, p, p)


def cube_embed(videos: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pos: torch.Tensor | None,
               visible: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """-> [B, N_vis, D]"""
    return cube_embed_ref(videos, weight, bias, pos, visible, mean=mean, std=std)


def _cubes(videos: torch.Tensor, weight: torch.Tensor, mean, std) -> torch.Tensor:
    """videos [B, C, T, H, W] -> [B, N, C*t*p*p] in weight's dtype (uint8 normalized)."""
    _, _, t, p, _ = weight.shape
    videos = normalize_uint8(videos, mean, std, weight.dtype) if videos.dtype == torch.uint8 else videos
    return rearrange(videos.to(weight.dtype), CUBES, p0=t, p1=p, p2=p)


def cube_embed_backward(grad: torch.Tensor, videos: torch.Tensor, weight: torch.Tensor, visible: torch.Tensor,
                        mean: list[float], std: list[float], needs: list[bool]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad [B, N_vis, D] -> (d videos, d weight, d bias fp32 [D], d pos fp32 [N, D]); empty where not needed."""
    need_videos, need_weight, need_bias, need_pos = needs
    _, _, t, p, _ = weight.shape
    grid = (videos.shape[2] // t, videos.shape[3] // p, videos.shape[4] // p)
    n, d, k = grid[0] * grid[1] * grid[2], weight.shape[0], weight[0].numel()  # sizes spelled out: B may be 0
    g = grad.reshape(-1, d)
    gv, gw, gb, gp = (grad.new_empty(0) for _ in range(4))  # distinct: op outputs may not alias
    if need_weight:
        gw = (g.t() @ take_rows(_cubes(videos, weight, mean, std), visible).reshape(g.shape[0], k)).view_as(weight)
    if need_bias:
        gb = g.sum(0, dtype=torch.float32)
    if need_pos:
        gp = put_rows(grad, visible, n, torch.float32).sum(0)
    if need_videos:
        full = put_rows((g @ weight.reshape(d, k)).view(*visible.shape, k), visible, n)
        gv = rearrange(full, "b (t h w) (c p0 p1 p2) -> b c (t p0) (h p1) (w p2)", t=grid[0], h=grid[1], w=grid[2],
                       p0=t, p1=p, p2=p).to(videos.dtype).contiguous()
    return gv, gw, gb, gp


def decoder_input(x_vis: torch.Tensor, mask_token: torch.Tensor, pos: torch.Tensor, visible: torch.Tensor,
                  decoded: torch.Tensor) -> torch.Tensor:
    """-> [B, N_vis + N_dec, Dd] with torch's type promotion (the official numerics)"""
    return decoder_input_ref(x_vis, mask_token, pos, visible, decoded)


def decoder_input_backward(grad: torch.Tensor, visible: torch.Tensor, decoded: torch.Tensor, num_tokens: int,
                           need_pos: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad [B, N_vis + N_dec, Dd] -> (d x_vis, d mask_token fp32 [Dd], d pos fp32 [N, Dd] or empty)."""
    nv = visible.shape[1]
    gx = grad[:, :nv].clone()
    gd = grad[:, nv:]
    gm = gd.sum((0, 1), dtype=torch.float32)
    gp = grad.new_empty(0, dtype=torch.float32)
    if need_pos:
        # A token both visible and decoded (V2) gets both rows: add the decoded rows on top.
        full = put_rows(gx, visible, num_tokens, torch.float32)
        gp = put_rows(gd, decoded, num_tokens, into=full).sum(0)
    return gx, gm, gp


def norm_pix_mse(pred: torch.Tensor, videos: torch.Tensor, decoded: torch.Tensor, scored: torch.Tensor | None,
                 tubelet_size: int, patch_size: int, normalize_target: bool, style: str, mean: list[float],
                 std: list[float]) -> torch.Tensor:
    """-> scalar fp32 loss"""
    return norm_pix_mse_ref(pred, videos, decoded, scored, tubelet_size=tubelet_size, patch_size=patch_size,
                            normalize_target=normalize_target, style=style, mean=mean, std=std)


def norm_pix_mse_backward(grad: torch.Tensor, pred: torch.Tensor, videos: torch.Tensor, decoded: torch.Tensor,
                          scored: torch.Tensor | None, tubelet_size: int, patch_size: int, normalize_target: bool,
                          style: str, mean: list[float], std: list[float]) -> torch.Tensor:
    """grad: scalar -> d pred [B, N_dec, E] in pred's dtype (targets recomputed, never stored)."""
    target = pixel_targets(videos, normalize_target=normalize_target, tubelet_size=tubelet_size,
                           patch_size=patch_size, style=style, mean=mean, std=std)
    n = (videos.shape[2] // tubelet_size) * (videos.shape[3] // patch_size) * (videos.shape[4] // patch_size)
    w = loss_weights(decoded, scored, pred.shape[-1], n).unsqueeze(-1)
    return (2 * grad.float() * w * (pred.float() - take_rows(target, decoded))).to(pred.dtype)


IMPLS = {
    "cube_embed": cube_embed,
    "cube_embed_backward": cube_embed_backward,
    "decoder_input": decoder_input,
    "decoder_input_backward": decoder_input_backward,
    "norm_pix_mse": norm_pix_mse,
    "norm_pix_mse_backward": norm_pix_mse_backward,
}
define_ops("torch", IMPLS)
