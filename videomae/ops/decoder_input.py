"""decoder_input: the decoder's input, `cat([x_vis + pos[visible], mask_token + pos[decoded]], 1)`.

One place for the op: the public function (validation once, dispatch), its reference `decoder_input_ref` written
the way the official code computes it, the fake kernel and the autograd glue. Backends supply only kernels.

Output dtype: the fused backends return x_vis' dtype (sums in fp32). The `torch` backend is the official
computation, dtype promotion included: under autocast x_vis is 16-bit and the fp32 pos table promotes the sums,
so the decoder's residual stream starts in fp32 there, as in the official model.
"""

from __future__ import annotations

import torch

from videomae.dispatch import select

from . import _checks
from ._index import take_rows
from .library import torch_op

PROMOTING = ("torch",)  # backends whose output follows torch's type promotion (see the module docstring)


def decoder_input(
    x_vis: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor,
    visible: torch.Tensor,
    decoded: torch.Tensor,
) -> torch.Tensor:
    """x_vis: [B, N_vis, Dd]; mask_token: [1, 1, Dd] or [Dd]; pos: [1, N, Dd] or [N, Dd];
    visible: [B, N_vis], decoded: [B, N_dec] int64 token ids (`masking.TokenIds`)
    -> [B, N_vis + N_dec, Dd], visible rows first then decoded ones, each in the ids' order

    Bad input is one ValueError naming the argument, the same on every backend (`_checks`; id values where the
    host reads them free: CPU tensors, eager). An empty batch gives an empty output; no visible cube gives the
    mask-token rows alone. Whatever the ids hold, no kernel leaves its buffers: Triton and CUDA add no pos row for
    an id outside [0, N) (and give it no pos gradient); torch's indexing refuses it. A repeated id (refused by
    validation): exact output, d x_vis and d mask_token; the fused backends' d pos counts one of its rows.
    """
    _checks.check_decoder_input(x_vis, mask_token, pos, visible, decoded)
    inputs = dict(x_vis=x_vis, mask_token=mask_token, pos=pos, visible=visible, decoded=decoded)
    backend = select("decoder_input", inputs)
    return torch_op("decoder_input", backend.name)(x_vis, mask_token, pos, visible, decoded)


def decoder_input_ref(
    x_vis: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor,
    visible: torch.Tensor,
    decoded: torch.Tensor,
    *,
    upcast: bool = False,
) -> torch.Tensor:
    """The official computation, `cat([x_vis + pos[~mask], mask_token + pos[mask]], 1)` with torch's type
    promotion; `upcast`: every input in fp64 first (the test oracle). Arguments as `decoder_input`."""
    d = x_vis.shape[-1]
    if upcast:
        x_vis, mask_token, pos = x_vis.double(), mask_token.double(), pos.double()
    pos = pos.reshape(1, -1, d)
    vis = x_vis + take_rows(pos, visible)
    dec = mask_token.reshape(1, 1, d) + take_rows(pos, decoded)
    return torch.cat([vis, dec], dim=1)


# ---------------------------------------------------------------------------------------------- fake kernels


def fake(backend: str):
    def decoder_input_fake(x_vis, mask_token, pos, visible, decoded):
        dtype = x_vis.dtype
        if backend in PROMOTING:
            dtype = torch.promote_types(torch.promote_types(dtype, pos.dtype), mask_token.dtype)
        return x_vis.new_empty(x_vis.shape[0], visible.shape[1] + decoded.shape[1], x_vis.shape[2], dtype=dtype)

    return decoder_input_fake


def backward_fake(grad, visible, decoded, num_tokens, need_pos):
    b, _, d = grad.shape
    return (
        grad.new_empty(b, visible.shape[1], d),
        grad.new_empty(d, dtype=torch.float32),
        grad.new_empty((num_tokens, d) if need_pos else (0,), dtype=torch.float32),
    )


# ---------------------------------------------------------------------------------------------- autograd


def setup(ctx, inputs, output):
    x_vis, mask_token, pos, visible, decoded = inputs
    ctx.save_for_backward(visible, decoded)
    ctx.x_dtype = x_vis.dtype
    ctx.token_meta = (mask_token.shape, mask_token.dtype)
    ctx.pos_meta = (pos.shape, pos.dtype)


def backward(backend: str):
    def decoder_input_backward(ctx, grad):
        visible, decoded = ctx.saved_tensors
        need_pos = bool(ctx.needs_input_grad[2])
        gx, gm, gp = torch_op("decoder_input_backward", backend)(grad.contiguous(), visible, decoded,
                                                                  ctx.pos_meta[0][-2], need_pos)
        gm = gm.view(ctx.token_meta[0]).to(ctx.token_meta[1])
        gp = gp.view(ctx.pos_meta[0]).to(ctx.pos_meta[1]) if need_pos else None
        return gx.to(ctx.x_dtype), gm, gp, None, None

    return decoder_input_backward
