"""The `triton` backend: ops `videomae::{op}_triton` over the Triton kernels of `kernels/` (`videomae.kernels`).

Like every kernel, these read and write nothing outside their buffers whatever the token ids hold (an id outside
[0, N) is not real: no pixel, no pos row, weight 0); shapes and dtypes are the public op's to check.

On GPU the ops are `torch.library.triton_op`s: every shape is static, so torch.compile traces each body down to
its kernels (`wrap_triton`). Under `TRITON_INTERPRET=1` they are opaque `custom_op`s running on CPU tensors: the
interpreter's kernels cannot run on fake tensors, and CI tests the kernels' numerics that way.
"""

from __future__ import annotations

import torch

from videomae.dispatch import Backend, register_backend
from videomae.kernels._common import INTERPRET, token_sum
from videomae.kernels.cube_embed import cube_embed_fwd, gather_cubes, scatter_cubes
from videomae.kernels.decoder_input import decoder_input_fwd
from videomae.kernels.norm_pix_mse import norm_pix_mse_bwd, norm_pix_mse_fwd

from ._index import loss_weights, rows_of
from .library import define_ops


class TritonBackend(Backend):
    name = "triton"
    devices = ("cuda", "cpu") if INTERPRET else ("cuda",)
    min_compute_capability = (8, 0)  # bf16 tensor cores; the kernels are only tested on sm80+

    def unavailable_reasons(self) -> list[str]:
        if INTERPRET or torch.cuda.is_available():
            return []
        return ["no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU)"]


def cube_embed(videos: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pos: torch.Tensor | None,
               visible: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    d = weight.shape[0]
    return cube_embed_fwd(videos, weight, bias, None if pos is None else pos.reshape(-1, d), visible, mean, std)


def cube_embed_backward(grad: torch.Tensor, videos: torch.Tensor, weight: torch.Tensor, visible: torch.Tensor,
                        mean: list[float], std: list[float], needs: list[bool]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    need_videos, need_weight, need_bias, need_pos = needs
    d, (_, _, t, p, _) = weight.shape[0], weight.shape
    n = (videos.shape[2] // t) * (videos.shape[3] // p) * (videos.shape[4] // p)
    g = grad.reshape(-1, d)
    gv, gw, gb, gp = (grad.new_empty(0) for _ in range(4))  # distinct: op outputs may not alias
    if need_weight:
        gw = (g.t() @ gather_cubes(videos, weight, visible, mean, std)).view_as(weight)
    if need_bias:
        gb = g.sum(0, dtype=torch.float32)
    if need_pos:
        gp = token_sum(grad, rows_of(visible, n))
    if need_videos:
        gv = scatter_cubes(g @ weight.reshape(d, -1), videos, weight, visible)
    return gv, gw, gb, gp


def decoder_input(x_vis: torch.Tensor, mask_token: torch.Tensor, pos: torch.Tensor, visible: torch.Tensor,
                  decoded: torch.Tensor) -> torch.Tensor:
    d = x_vis.shape[2]
    return decoder_input_fwd(x_vis, mask_token.reshape(d), pos.reshape(-1, d), torch.cat([visible, decoded], dim=1))


def decoder_input_backward(grad: torch.Tensor, visible: torch.Tensor, decoded: torch.Tensor, num_tokens: int,
                           need_pos: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    nv = visible.shape[1]
    gx = grad[:, :nv].clone()
    gm = grad[:, nv:].sum((0, 1), dtype=torch.float32)
    gp = grad.new_empty(0, dtype=torch.float32)
    if need_pos:
        gp = token_sum(grad, rows_of(visible, num_tokens), rows_of(decoded, num_tokens), nv)
    return gx, gm, gp


def _tokens(videos: torch.Tensor, tubelet: int, patch: int) -> int:
    return (videos.shape[2] // tubelet) * (videos.shape[3] // patch) * (videos.shape[4] // patch)


def norm_pix_mse(pred: torch.Tensor, videos: torch.Tensor, decoded: torch.Tensor, scored: torch.Tensor | None,
                 tubelet_size: int, patch_size: int, normalize_target: bool, style: str, mean: list[float],
                 std: list[float]) -> torch.Tensor:
    w = loss_weights(decoded, scored, pred.shape[2], _tokens(videos, tubelet_size, patch_size))
    return norm_pix_mse_fwd(pred, videos, decoded, w, tubelet_size, patch_size, normalize_target, style, mean, std)


def norm_pix_mse_backward(grad: torch.Tensor, pred: torch.Tensor, videos: torch.Tensor, decoded: torch.Tensor,
                          scored: torch.Tensor | None, tubelet_size: int, patch_size: int, normalize_target: bool,
                          style: str, mean: list[float], std: list[float]) -> torch.Tensor:
    w = loss_weights(decoded, scored, pred.shape[2], _tokens(videos, tubelet_size, patch_size))
    return norm_pix_mse_bwd(grad, pred, videos, decoded, w, tubelet_size, patch_size, normalize_target, style, mean,
                            std)


IMPLS = {
    "cube_embed": cube_embed,
    "cube_embed_backward": cube_embed_backward,
    "decoder_input": decoder_input,
    "decoder_input_backward": decoder_input_backward,
    "norm_pix_mse": norm_pix_mse,
    "norm_pix_mse_backward": norm_pix_mse_backward,
}
define_ops("triton", IMPLS, define=torch.library.custom_op if INTERPRET else torch.library.triton_op)
register_backend(TritonBackend())
