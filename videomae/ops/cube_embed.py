"""cube_embed: the encoder's input, `(conv3d(videos, weight, bias, stride=kernel) + pos)` at the visible tokens.

One place for the op: the public function (validation once, dispatch), its reference `cube_embed_ref` written the
way the official code computes it, the fake kernel and the autograd glue. Backends supply only kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.dispatch import select

from . import _checks
from ._index import channel_constants, take_rows
from .library import torch_op


def cube_embed(
    videos: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos: torch.Tensor | None,
    visible: torch.Tensor,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Embed only the visible cubes: `(conv3d(videos, weight, bias, stride=kernel) + pos)[b, visible[b]]`.

    videos: [B, C, T, H, W] float (any of fp32/bf16/fp16, converted to weight's dtype by the kernel) or uint8
    (normalized by `(x/255 - mean)/std` first); weight: [D, C, t, p, p]; bias: [D] or None; pos: [1, N, D],
    [N, D] or None (any float dtype, cast to the output dtype as the official `type_as`);
    visible: [B, N_vis] int64 token ids (from `masking.token_ids`) -> [B, N_vis, D] in weight's dtype.
    Under autocast the weight is cast to the autocast dtype first, as conv3d would; the clip, bias and pos are not.

    Bad input is one ValueError naming the argument, the same on every backend (`_checks`): shapes, dtypes, a
    uint8 clip's mean / std (std > 0), and the ids' values where the host reads them free (CPU tensors, eager).
    Degenerate shapes, the same on every backend: an empty batch or no visible cube gives an empty [B, N_vis, D]
    output and zero gradients. Whatever the ids hold, no kernel leaves its buffers: Triton and CUDA embed an id
    outside [0, N) as the bias alone (no pixel, no pos, no gradient to the clip or pos); torch's indexing refuses
    it. A repeated id (refused by validation) is embedded twice; d weight and d bias stay exact, but the fused
    backends' d videos and d pos count one of its rows (torch's count both).
    """
    if torch.is_autocast_enabled(videos.device.type):
        weight = weight.to(torch.get_autocast_dtype(videos.device.type))
    _checks.check_cube_embed(videos, weight, bias, pos, visible, mean, std)
    backend = select("cube_embed", dict(weight=weight, videos=videos, bias=bias, pos=pos, visible=visible))
    return torch_op("cube_embed", backend.name)(videos, weight, bias, pos, visible, list(mean), list(std))


def normalize_uint8(videos: torch.Tensor, mean, std, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [B, C, T, H, W] -> `(x / 255 - mean) / std` in fp32 (fp64 for an fp64 oracle), cast to `dtype`."""
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    m, s = (v.view(1, -1, 1, 1, 1) for v in channel_constants(mean, std, videos.device, ct))
    return ((videos.to(ct) / 255 - m) / s).to(dtype)


def cube_embed_ref(
    videos: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos: torch.Tensor | None,
    visible: torch.Tensor,
    *,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    upcast: bool = False,
) -> torch.Tensor:
    """The official computation: conv3d on every cube in weight's dtype (clip and bias cast to it, as autocast
    does), `+ pos.type_as(x)`, keep the visible tokens. `upcast`: everything in fp64 (the test oracle).

    Arguments as `cube_embed` -> [B, N_vis, D] in weight's dtype (fp64 when upcast).
    """
    dtype = torch.float64 if upcast else weight.dtype
    if videos.dtype == torch.uint8:
        videos = normalize_uint8(videos, mean, std, dtype)
    x = F.conv3d(videos.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                 stride=weight.shape[2:])
    x = rearrange(x, "b d t h w -> b (t h w) d")
    if pos is not None:
        x = x + pos.reshape(1, x.shape[1], -1).to(x.dtype)
    return take_rows(x, visible)


# ---------------------------------------------------------------------------------------------- fake kernels


def fake(backend: str):
    def cube_embed_fake(videos, weight, bias, pos, visible, mean, std):
        return weight.new_empty(visible.shape[0], visible.shape[1], weight.shape[0])

    return cube_embed_fake


def backward_fake(grad, videos, weight, visible, mean, std, needs):
    _, _, t, p, _ = weight.shape
    n = (videos.shape[2] // t) * (videos.shape[3] // p) * (videos.shape[4] // p)
    d = weight.shape[0]
    f32 = dict(dtype=torch.float32)
    return (
        videos.new_empty(videos.shape if needs[0] else (0,), dtype=videos.dtype if needs[0] else grad.dtype),
        weight.new_empty(weight.shape if needs[1] else (0,)),
        weight.new_empty((d,) if needs[2] else (0,), **f32),
        weight.new_empty((n, d) if needs[3] else (0,), **f32),
    )


# ---------------------------------------------------------------------------------------------- autograd


def setup(ctx, inputs, output):
    videos, weight, bias, pos, visible, mean, std = inputs
    ctx.save_for_backward(videos, weight, visible)
    ctx.stats = (mean, std)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.pos_meta = None if pos is None else (pos.shape, pos.dtype)


def backward(backend: str):
    def cube_embed_backward(ctx, grad):
        videos, weight, visible = ctx.saved_tensors
        needs = [bool(x) for x in ctx.needs_input_grad[:4]]
        needs[0] = needs[0] and videos.is_floating_point()
        gv, gw, gb, gp = torch_op("cube_embed_backward", backend)(grad.contiguous(), videos, weight, visible,
                                                                   *ctx.stats, needs)
        gb = gb.to(ctx.bias_dtype) if needs[2] else None
        gp = gp.view(ctx.pos_meta[0]).to(ctx.pos_meta[1]) if needs[3] else None
        return (gv if needs[0] else None), (gw if needs[1] else None), gb, gp, None, None, None

    return cube_embed_backward
