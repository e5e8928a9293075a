"""The `triton` backend: ops `videomae::{op}_triton` over the kernels in `videomae.kernels`.

On GPU the ops are `torch.library.triton_op`s (torch.compile sees the kernels through `wrap_triton`).
Under `TRITON_INTERPRET=1` they are opaque `custom_op`s running on CPU tensors: the interpreter's kernels
cannot be traced with fake tensors, and CI tests the kernels' numerics that way.
"""

from __future__ import annotations

import torch

from videomae.kernels import INTERPRET
from videomae.kernels._common import token_sum
from videomae.kernels.cube_embed import cube_embed_fwd, gather_cubes, scatter_cubes
from videomae.kernels.decoder_input import decoder_input_fwd
from videomae.kernels.norm_pix_mse import norm_pix_mse_bwd, norm_pix_mse_fwd

from ._index import decoded_mask, loss_weights, rows_of, tokens_where
from .dispatch import Backend, register_backend
from .library import define_ops


class TritonBackend(Backend):
    name, priority = "triton", 20
    devices = ("cuda", "cpu") if INTERPRET else ("cuda",)
    min_compute_capability = (8, 0)  # bf16 tensor cores; the kernels are only tested on sm80+

    def unavailable_reasons(self) -> list[str]:
        if INTERPRET or torch.cuda.is_available():
            return []
        return ["no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU)"]


def cube_embed(videos, weight, bias, pos, mask, mean, std):
    tokens = tokens_where(~mask)
    d = weight.shape[0]
    return cube_embed_fwd(videos, weight, bias, None if pos is None else pos.reshape(-1, d), tokens, mean, std)


def cube_embed_backward(grad, videos, weight, mask, mean, std, needs):
    need_videos, need_weight, need_bias, need_pos = needs
    d = weight.shape[0]
    tokens = tokens_where(~mask, grad.shape[1])
    g = grad.reshape(-1, d)
    gv, gw, gb, gp = (grad.new_empty(0) for _ in range(4))  # distinct: op outputs may not alias
    if need_weight:
        gw = (g.t() @ gather_cubes(videos, weight, tokens, mean, std)).view_as(weight)
    if need_bias:
        gb = g.float().sum(0)
    if need_pos:
        gp = token_sum(grad, rows_of(tokens, mask.shape[1]))
    if need_videos:
        gv = scatter_cubes(g @ weight.reshape(d, -1), videos, weight, tokens)
    return gv, gw, gb, gp


def decoder_input(x_vis, mask_token, pos, mask, decode_mask):
    nv, d = x_vis.shape[1], x_vis.shape[2]
    vis = tokens_where(~mask, nv)
    n_dec = mask.shape[1] - nv if decode_mask is None else None  # V2's count is only in the mask's values
    dec = tokens_where(decoded_mask(mask, decode_mask), n_dec)
    return decoder_input_fwd(x_vis, mask_token.reshape(d), pos.reshape(-1, d), torch.cat([vis, dec], dim=1))


def decoder_input_backward(grad, mask, decode_mask, num_visible, need_pos):
    gx = grad[:, :num_visible].clone()
    gm = grad[:, num_visible:].float().sum((0, 1))
    gp = grad.new_empty(0, dtype=torch.float32)
    if need_pos:
        n = mask.shape[1]
        n_dec = grad.shape[1] - num_visible
        vis = rows_of(tokens_where(~mask, num_visible), n)
        dec = rows_of(tokens_where(decoded_mask(mask, decode_mask), n_dec), n)
        gp = token_sum(grad, vis, dec, num_visible)
    return gx, gm, gp


def _loss_setup(pred, mask, decode_mask):
    tokens = tokens_where(decoded_mask(mask, decode_mask), pred.shape[1])
    return tokens, loss_weights(mask, decode_mask, tokens, pred.shape[2])


def norm_pix_mse(pred, videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style, mean, std):
    tokens, w = _loss_setup(pred, mask, decode_mask)
    return norm_pix_mse_fwd(pred, videos, tokens, w, tubelet_size, patch_size, normalize_target, style, mean, std)


def norm_pix_mse_backward(grad, pred, videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style,
                          mean, std):
    tokens, w = _loss_setup(pred, mask, decode_mask)
    return norm_pix_mse_bwd(grad, pred, videos, tokens, w, tubelet_size, patch_size, normalize_target, style, mean,
                            std)


define_ops(
    "triton",
    {
        "cube_embed": cube_embed,
        "cube_embed_backward": cube_embed_backward,
        "decoder_input": decoder_input,
        "decoder_input_backward": decoder_input_backward,
        "norm_pix_mse": norm_pix_mse,
        "norm_pix_mse_backward": norm_pix_mse_backward,
    },
    define=torch.library.custom_op if INTERPRET else torch.library.triton_op,
    opaque=("cube_embed", "cube_embed_backward", "decoder_input", "decoder_input_backward"),
)
register_backend(TritonBackend())
