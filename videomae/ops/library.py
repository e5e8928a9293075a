"""Torch-op plumbing shared by every backend: schemas, fake kernels, autograd.

Backend `X` owns six ops in the `videomae` namespace, all with the schemas below:
`videomae::{op}_X` and `videomae::{op}_X_backward` for op in cube_embed, decoder_input, norm_pix_mse.
Forward ops are differentiable (autograd registered here, calling the backend's own backward op);
backward ops are not. Fake kernels are shared: the output shapes do not depend on the backend.

A backend that defines its ops elsewhere (the CUDA extension's `TORCH_LIBRARY(videomae, m)` with these
schemas, its kernels under `TORCH_LIBRARY_IMPL(videomae, CUDA, m)`) calls `register_fakes_and_autograd("cuda")`
once its library is loaded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

OPS = ("cube_embed", "decoder_input", "norm_pix_mse")

SCHEMAS = {
    "cube_embed": "(Tensor videos, Tensor weight, Tensor? bias, Tensor? pos, Tensor mask, float[] mean, float[] std)"
    " -> Tensor",
    # needs = (videos, weight, bias, pos); grads not needed come back as empty tensors.
    # -> (d videos [videos' dtype], d weight [weight's dtype], d bias fp32 [D], d pos fp32 [N, D])
    "cube_embed_backward": "(Tensor grad, Tensor videos, Tensor weight, Tensor mask, float[] mean, float[] std,"
    " bool[] needs) -> (Tensor, Tensor, Tensor, Tensor)",
    "decoder_input": "(Tensor x_vis, Tensor mask_token, Tensor pos, Tensor mask, Tensor? decode_mask) -> Tensor",
    # -> (d x_vis [x_vis' dtype], d mask_token fp32 [Dd], d pos fp32 [N, Dd] or empty)
    "decoder_input_backward": "(Tensor grad, Tensor mask, Tensor? decode_mask, SymInt num_visible, bool need_pos)"
    " -> (Tensor, Tensor, Tensor)",
    # -> scalar fp32 loss
    "norm_pix_mse": "(Tensor pred, Tensor videos, Tensor mask, Tensor? decode_mask, int tubelet_size, int patch_size,"
    " bool normalize_target, str style, float[] mean, float[] std) -> Tensor",
    # -> d pred in pred's dtype
    "norm_pix_mse_backward": "(Tensor grad, Tensor pred, Tensor videos, Tensor mask, Tensor? decode_mask,"
    " int tubelet_size, int patch_size, bool normalize_target, str style, float[] mean, float[] std) -> Tensor",
}


def qualname(op: str, backend: str) -> str:
    """`cube_embed`, `triton` -> `videomae::cube_embed_triton`; `cube_embed_backward` -> `..._triton_backward`."""
    if op.endswith("_backward"):
        return f"videomae::{op.removesuffix('_backward')}_{backend}_backward"
    return f"videomae::{op}_{backend}"


def torch_op(op: str, backend: str):
    """The OpOverloadPacket of `qualname(op, backend)`."""
    return getattr(torch.ops.videomae, qualname(op, backend).split("::")[1])


def define_ops(backend: str, impls: dict[str, Callable], define: Callable = torch.library.custom_op,
               opaque: tuple[str, ...] = ()) -> None:
    """Define the six ops of `backend` from Python implementations keyed like SCHEMAS.

    `define` is `torch.library.custom_op` (opaque to torch.compile) or `torch.library.triton_op` (compile traces
    the body down to the Triton kernels); ops listed in `opaque` stay whole even then (see `_keep_whole`).
    """
    for op, schema in SCHEMAS.items():
        opdef = define(qualname(op, backend), impls[op], mutates_args=(), schema=schema)
        if op in opaque:
            from torch._subclasses.functional_tensor import FunctionalTensorMode

            opdef.register_torch_dispatch(FunctionalTensorMode, _keep_whole)
    register_fakes_and_autograd(backend)


def _keep_whole(mode, op, types, args, kwargs):
    # Sizes that depend on the mask's values (N_vis; V2's N_dec) appear in these ops: torch.compile keeps each as
    # one node with the fake kernel's unbacked size, instead of tracing a body it cannot trace (nonzero()).
    return mode.__torch_dispatch__(op, types, args, kwargs)


# ---------------------------------------------------------------------------------------------- fake kernels


def _cube_embed_fake(videos, weight, bias, pos, mask, mean, std):
    # The visible count depends on the mask's values, not its shape.
    nv = torch.library.get_ctx().new_dynamic_size()
    return weight.new_empty(videos.shape[0], nv, weight.shape[0])


def _cube_embed_backward_fake(grad, videos, weight, mask, mean, std, needs):
    n, d = mask.shape[1], weight.shape[0]
    f32 = dict(dtype=torch.float32)
    return (
        videos.new_empty(videos.shape if needs[0] else (0,), dtype=grad.dtype),
        weight.new_empty(weight.shape if needs[1] else (0,)),
        weight.new_empty((d,) if needs[2] else (0,), **f32),
        weight.new_empty((n, d) if needs[3] else (0,), **f32),
    )


def _decoder_input_fake(x_vis, mask_token, pos, mask, decode_mask):
    b, nv, d = x_vis.shape
    # V1 decodes exactly the masked tokens, N - N_vis of them; V2's count depends on decode_mask's values
    # (a fresh unbacked size for the whole row count: an expression N_vis + u would not bind u).
    rows = mask.shape[1] if decode_mask is None else torch.library.get_ctx().new_dynamic_size()
    return x_vis.new_empty(b, rows, d)


def _decoder_input_backward_fake(grad, mask, decode_mask, num_visible, need_pos):
    b, _, d = grad.shape
    return (
        grad.new_empty(b, num_visible, d),
        grad.new_empty(d, dtype=torch.float32),
        grad.new_empty((mask.shape[1], d) if need_pos else (0,), dtype=torch.float32),
    )


def _norm_pix_mse_fake(pred, videos, mask, decode_mask, *args):
    return pred.new_empty((), dtype=torch.float32)


def _norm_pix_mse_backward_fake(grad, pred, *args):
    return torch.empty_like(pred)


FAKES = {
    "cube_embed": _cube_embed_fake,
    "cube_embed_backward": _cube_embed_backward_fake,
    "decoder_input": _decoder_input_fake,
    "decoder_input_backward": _decoder_input_backward_fake,
    "norm_pix_mse": _norm_pix_mse_fake,
    "norm_pix_mse_backward": _norm_pix_mse_backward_fake,
}


# ---------------------------------------------------------------------------------------------- autograd


def _cube_embed_setup(ctx, inputs, output):
    videos, weight, bias, pos, mask, mean, std = inputs
    ctx.save_for_backward(videos, weight, mask)
    ctx.stats = (mean, std)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.pos_meta = None if pos is None else (pos.shape, pos.dtype)


def _decoder_input_setup(ctx, inputs, output):
    x_vis, mask_token, pos, mask, decode_mask = inputs
    ctx.save_for_backward(mask, decode_mask)
    ctx.num_visible = x_vis.shape[1]
    ctx.token_meta = (mask_token.shape, mask_token.dtype)
    ctx.pos_meta = (pos.shape, pos.dtype)


def _norm_pix_mse_setup(ctx, inputs, output):
    pred, videos, mask, decode_mask, *config = inputs
    ctx.save_for_backward(pred, videos, mask, decode_mask)
    ctx.config = config


def _backwards(backend: str) -> dict[str, Callable]:
    def cube_embed(ctx, grad):
        videos, weight, mask = ctx.saved_tensors
        needs = [bool(x) for x in ctx.needs_input_grad[:4]]
        needs[0] = needs[0] and videos.is_floating_point()
        gv, gw, gb, gp = torch_op("cube_embed_backward", backend)(grad.contiguous(), videos, weight, mask, *ctx.stats,
                                                                   needs)
        gb = gb.to(ctx.bias_dtype) if needs[2] else None
        gp = gp.view(ctx.pos_meta[0]).to(ctx.pos_meta[1]) if needs[3] else None
        return (gv if needs[0] else None), (gw if needs[1] else None), gb, gp, None, None, None

    def decoder_input(ctx, grad):
        mask, decode_mask = ctx.saved_tensors
        need_pos = bool(ctx.needs_input_grad[2])
        gx, gm, gp = torch_op("decoder_input_backward", backend)(grad.contiguous(), mask, decode_mask,
                                                                  ctx.num_visible, need_pos)
        gm = gm.view(ctx.token_meta[0]).to(ctx.token_meta[1])
        gp = gp.view(ctx.pos_meta[0]).to(ctx.pos_meta[1]) if need_pos else None
        return gx, gm, gp, None, None

    def norm_pix_mse(ctx, grad):
        pred, videos, mask, decode_mask = ctx.saved_tensors
        gp = torch_op("norm_pix_mse_backward", backend)(grad, pred, videos, mask, decode_mask, *ctx.config)
        return gp, *([None] * 9)

    return {"cube_embed": cube_embed, "decoder_input": decoder_input, "norm_pix_mse": norm_pix_mse}


SETUPS = {"cube_embed": _cube_embed_setup, "decoder_input": _decoder_input_setup, "norm_pix_mse": _norm_pix_mse_setup}


def register_fakes_and_autograd(backend: str) -> None:
    """Register the shared fake kernels and autograd formulas on `backend`'s six (already defined) ops."""
    backwards = _backwards(backend)
    for op, fake in FAKES.items():
        torch.library.register_fake(qualname(op, backend), fake)
    for op in OPS:
        torch.library.register_autograd(qualname(op, backend), backwards[op], setup_context=SETUPS[op])
