"""Multi-head self-attention with the official fused qkv projection: `qkv.weight [3D, D]` with no
bias parameter, learnable `q_bias` and `v_bias`, and a zero k bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from videomae.attention import scaled_dot_product_attention


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def qkv_bias(self) -> torch.Tensor | None:
        """[3D]: (q_bias, 0, v_bias); the key bias cancels in softmax, so the official code fixes it at 0."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]"""
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        # q, k, v: [B, H, N, d] views of qkv [B, N, 3, H, d]. Split on the `3` axis, their gradients stack back into
        # that layout, which is qkv's: backward writes d qkv once (splitting on a leading axis would stack
        # [3, B, H, N, d] and then copy again to [B, N, 3D]).
        q, k, v = (t.transpose(1, 2) for t in qkv.unflatten(-1, (3, self.num_heads, -1)).unbind(2))
        drop = self.attn_drop if self.training else 0.0
        out = scaled_dot_product_attention(q, k, v, scale=self.scale, dropout_p=drop)
        return self.proj_drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))
