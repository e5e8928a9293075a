"""Pre-norm transformer block: `x + attn(norm1(x))`, `x + mlp(norm2(x))`, optional layer scale; the first residual
add and norm2 run as one op (`videomae.ops.add_layer_norm`)."""

from __future__ import annotations

import torch
from torch import nn

from videomae.layers import recompute
from videomae.layers.attention import Attention
from videomae.layers.drop import DropPath
from videomae.layers.norm import LayerNorm


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as the official models
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        if init_values and init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]"""
        a = self.attn(self.norm1(x))
        x, h = self.norm2(x, self.drop_path(a if self.gamma_1 is None else self.gamma_1 * a))
        m = self.mlp(h)
        return x + self.drop_path(m if self.gamma_2 is None else self.gamma_2 * m)


def stochastic_depth(rate: float, depth: int) -> list[float]:
    """Official drop-path schedule `linspace(0, rate, depth)` (float32 values, as the official code);
    built on the CPU so that models can be constructed under `torch.device("meta")`."""
    return [x.item() for x in torch.linspace(0, rate, depth, device="cpu")]


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """The blocks in order; with `grad_checkpointing` each block's activations are recomputed in backward,
    otherwise what `videomae.layers.recompute` says (by default, in eager CUDA training, the cheap ones)."""
    mode = recompute.resolve(x, grad_checkpointing)
    for blk in blocks:
        x = recompute.run_block(blk, x, mode)
    return x
