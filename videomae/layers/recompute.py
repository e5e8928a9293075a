"""What a training step keeps for backward, and what it recomputes instead.

A block's matmuls and attention are expensive to redo; its LayerNorms, casts, GELU and residual adds cost one
pass over memory. So by default (`cheap`) each block keeps the outputs of its matmuls and of its attention
kernel (with its log-sum-exp) and its input, and backward recomputes the rest from them (PyTorch's selective
activation checkpointing: the recomputation replays the block, taking the kept outputs from the cache).
Per token of a ViT-B encoder block under bf16 autocast that keeps 15.4 KB instead of 27.7 KB; the eager
step's activations per clip drop from 151 to 98 MiB (`bench/memory.py`, results in bench/results/memory.md).

Switch (`set_recompute`, `use_recompute`, env `VIDEOMAE_RECOMPUTE`): `auto` (default: `cheap` for eager training
on CUDA, `none` elsewhere), `cheap`, `none` (autograd keeps what each op saves), `full` (recompute whole blocks:
the model's `grad_checkpointing`, which wins over this switch). Recomputation reruns the same kernels on the
same inputs, so gradients are bitwise those of `none`.

Compiled steps (`torch.compile`): `auto` leaves the choice to AOTAutograd's min-cut partitioner, which finds the
same cut by itself once told that a value the backward needs anyway (the GELU output, the fp32 LayerNorm
input) may be recomputed rather than stored: `COMPILE_SETTINGS`, applied by `apply_compile_settings()` before
compiling (`videomae.train.step.build_objective` does), unless the switch is `none`. What it costs and saves:
ViT-B at B=32 keeps 89 instead of 135 MiB per clip (bench/results/memory.md) for a predicted 0.47 ms per step
(23.24 against 22.77 ms, bench/results/cost_model.md "What each setting buys"); `none` (`videomae pretrain
--recompute none`) is the faster choice when memory is not short.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

MODES = ("auto", "cheap", "none", "full")
ENV = "VIDEOMAE_RECOMPUTE"
COMPILE_SETTINGS = {"ban_recompute_materialized_backward": False}  # torch._functorch.config
# torch._inductor.config. With the recomputation above, inductor's mix-order LayerNorm backward (row reductions
# for dx fused with the column sums for d weight, d bias) also recomputes the residual add and the normalized
# forward in the same loop: on torch 2.11 (the GPU machine's) its fixed config (2 warps, XBLOCK 4, 512-wide rows)
# then hits the 255-register cap and spills (bench/triton_sm90a.py). Without it the column sums are split
# reductions of their own: inductor's estimate of its kernels' traffic for the ViT-B step at B=32 (`bench/trace.py
# --traffic`, torch 2.11) grows from 16.67 to 17.32 GB and 607 to 634 launches (+4%, about 0.15 ms at copy
# bandwidth), and nothing spills.
INDUCTOR_SETTINGS = {"triton.mix_order_reduction": False}
_BEFORE: dict[str, object] = {}  # COMPILE_SETTINGS' values before apply_compile_settings first changed them

_aten = torch.ops.aten
# Kept: matmuls (their outputs feed the weight gradients) and every attention kernel (output + log-sum-exp).
_KEEP = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default, _aten.convolution.default}
_mode: str | None = None


def _keeps(op) -> bool:
    if op in _KEEP:
        return True
    name = op.name() if hasattr(op, "name") else str(op)
    return "attention" in name or "flash_attn" in name or "xformers" in name


def _narrowing(op, args) -> bool:
    """A matmul whose output is narrower than its inner dimension: the block's last one (the MLP's fc2). Backward
    needs nothing of its output and the replay stops before it (checkpoint's early stop), so it is not kept."""
    if op is _aten.addmm.default:
        return args[2].shape[-1] < args[1].shape[-1]
    if op is _aten.mm.default:
        return args[1].shape[-1] < args[0].shape[-1]
    return False


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if _keeps(op) and not _narrowing(op, args):
        return CheckpointPolicy.MUST_SAVE
    if op is _aten._to_copy.default and isinstance(args[0], torch.Tensor) and args[0].is_leaf:
        return CheckpointPolicy.MUST_SAVE  # a parameter's autocast copy: its size does not grow with the batch
    return CheckpointPolicy.PREFER_RECOMPUTE


def _check(mode: str, what: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{what} must be one of {MODES}, got {mode!r}")
    return mode


def set_recompute(mode: str | None) -> None:
    """Set the switch (None: back to `VIDEOMAE_RECOMPUTE`, default `auto`)."""
    global _mode
    _mode = None if mode is None else _check(mode, "recompute")


def get_recompute() -> str:
    return _mode if _mode is not None else _check(os.environ.get(ENV, "auto") or "auto", ENV)


@contextlib.contextmanager
def use_recompute(mode: str) -> Iterator[None]:
    global _mode
    prev = _mode
    set_recompute(mode)
    try:
        yield
    finally:
        _mode = prev


def resolve(x: torch.Tensor, grad_checkpointing: bool = False) -> str:
    """The mode for blocks fed `x`: none when nothing needs gradients."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return "none"
    if grad_checkpointing:
        return "full"
    mode = get_recompute()
    if mode == "auto":
        return "cheap" if x.device.type == "cuda" and not torch.compiler.is_compiling() else "none"
    return mode


def run_block(block: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """`block(x)` with `mode`'s recomputation (`resolve`)."""
    if mode == "full":
        return checkpoint(block, x, use_reentrant=False)
    if mode == "cheap":
        return checkpoint(block, x, use_reentrant=False, context_fn=_cheap_contexts)
    return block(x)


_cheap_contexts = functools.partial(create_selective_checkpoint_contexts, _policy)


def apply_compile_settings(mode: str | None = None) -> None:
    """Let the compiled step's partitioner recompute cheap values the backward needs (see the module docstring),
    unless `mode` (default: the switch in force, `get_recompute()`) is `none`, which puts back the values these
    settings had before they were first applied (torch's, unless the user set them); and keep inductor's kernels
    for that graph free of register spills (INDUCTOR_SETTINGS)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    mode = get_recompute() if mode is None else _check(mode, "recompute")
    for name, value in COMPILE_SETTINGS.items():
        _BEFORE.setdefault(name, getattr(functorch_config, name))
        setattr(functorch_config, name, _BEFORE[name] if mode == "none" else value)
    for name, value in INDUCTOR_SETTINGS.items():
        *path, leaf = name.split(".")
        setattr(functools.reduce(getattr, path, inductor_config), leaf, value)
