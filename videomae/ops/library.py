"""Torch-op plumbing shared by every backend: the one schema table, op definition, registration of the fake
kernels and autograd formulas (which live with their op in `videomae/ops/<op>.py`).

Backend `X` owns six ops in the `videomae` namespace, all with the schemas below:
`videomae::{op}_X` and `videomae::{op}_X_backward` for op in cube_embed, decoder_input, norm_pix_mse.
Forward ops are differentiable (autograd registered here, calling the backend's own backward op);
backward ops are not. Every shape is static (token ids carry the counts), so the fake kernels need no
unbacked sizes and torch.compile traces through the Triton ops down to their kernels.

The CUDA extension only implements ops (`TORCH_LIBRARY_IMPL(videomae, CUDA, m)`): `cuda_backend.define_schemas()`
defines them from this table after loading `_C`, then calls `register_fakes_and_autograd("cuda")`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

OPS = ("cube_embed", "decoder_input", "norm_pix_mse")

# Ints are SymInt: torch 2.11 infers the schema from the Python annotations, where `int` means SymInt.
SCHEMAS = {
    "cube_embed": "(Tensor videos, Tensor weight, Tensor? bias, Tensor? pos, Tensor visible, float[] mean,"
    " float[] std) -> Tensor",
    # needs = (videos, weight, bias, pos); grads not needed come back as empty tensors.
    # -> (d videos [videos' dtype], d weight [weight's dtype], d bias fp32 [D], d pos fp32 [N, D])
    "cube_embed_backward": "(Tensor grad, Tensor videos, Tensor weight, Tensor visible, float[] mean, float[] std,"
    " bool[] needs) -> (Tensor, Tensor, Tensor, Tensor)",
    "decoder_input": "(Tensor x_vis, Tensor mask_token, Tensor pos, Tensor visible, Tensor decoded) -> Tensor",
    # -> (d x_vis [grad's dtype], d mask_token fp32 [Dd], d pos fp32 [num_tokens, Dd] or empty)
    "decoder_input_backward": "(Tensor grad, Tensor visible, Tensor decoded, SymInt num_tokens, bool need_pos)"
    " -> (Tensor, Tensor, Tensor)",
    # -> scalar fp32 loss
    "norm_pix_mse": "(Tensor pred, Tensor videos, Tensor decoded, Tensor? scored, SymInt tubelet_size,"
    " SymInt patch_size, bool normalize_target, str style, float[] mean, float[] std) -> Tensor",
    # -> d pred in pred's dtype
    "norm_pix_mse_backward": "(Tensor grad, Tensor pred, Tensor videos, Tensor decoded, Tensor? scored,"
    " SymInt tubelet_size, SymInt patch_size, bool normalize_target, str style, float[] mean, float[] std) -> Tensor",
}


# Ops whose kernels are all in Python (torch, Triton): no CUDA C++ kernel, so not in SCHEMAS (the table the
# extension implements); each op module supplies its kernels as `IMPLS[backend][op]`.
PYTHON_OPS = ("add_layer_norm",)
PYTHON_SCHEMAS = {
    # -> (x + residual in their promoted dtype, or empty without a residual; y [out_dtype]; mean [M]; rstd [M])
    "add_layer_norm": "(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps, ScalarType out_dtype)"
    " -> (Tensor, Tensor, Tensor, Tensor)",
    # -> (d LayerNorm input [saved's dtype], d weight fp32 [D], d bias fp32 [D])
    "add_layer_norm_backward": "(Tensor grad_y, Tensor? grad_sum, Tensor saved, Tensor mean, Tensor rstd,"
    " Tensor weight, Tensor bias) -> (Tensor, Tensor, Tensor)",
}


def qualname(op: str, backend: str) -> str:
    """`cube_embed`, `triton` -> `videomae::cube_embed_triton`; `cube_embed_backward` -> `..._triton_backward`."""
    if op.endswith("_backward"):
        return f"videomae::{op.removesuffix('_backward')}_{backend}_backward"
    return f"videomae::{op}_{backend}"


def torch_op(op: str, backend: str):
    """The OpOverloadPacket of `qualname(op, backend)`."""
    return getattr(torch.ops.videomae, qualname(op, backend).split("::")[1])


def define_ops(backend: str, impls: dict[str, Callable], define: Callable = torch.library.custom_op) -> None:
    """Define the six ops of `backend` from Python implementations keyed like SCHEMAS, then register the
    fakes and autograd.

    `define` is `torch.library.custom_op` (opaque to torch.compile) or `torch.library.triton_op` (compile traces
    the body down to the Triton kernels). torch 2.11 infers the schema from the implementations' annotations
    and ignores `schema=` (newer torch uses it): both must say the same, which the op tests check.
    """
    for op, schema in SCHEMAS.items():
        define(qualname(op, backend), impls[op], mutates_args=(), schema=schema)
    for op, schema in PYTHON_SCHEMAS.items():
        impl = _module(op.removesuffix("_backward")).IMPLS[backend][op]
        define(qualname(op, backend), impl, mutates_args=(), schema=schema)
    register_fakes_and_autograd(backend, OPS + PYTHON_OPS)


def _module(op: str):
    # Imported here, not at the top: the op modules import this one to call their backends.
    return importlib.import_module(f"videomae.ops.{op}")


def register_fakes_and_autograd(backend: str, ops: tuple[str, ...] = OPS) -> None:
    """Register each op's fake kernels and autograd formula on `backend`'s (already defined) ops."""
    for op in ops:
        glue = _module(op)
        torch.library.register_fake(qualname(op, backend), glue.fake(backend))
        torch.library.register_fake(qualname(op + "_backward", backend), glue.backward_fake)
        torch.library.register_autograd(qualname(op, backend), glue.backward(backend), setup_context=glue.setup)
