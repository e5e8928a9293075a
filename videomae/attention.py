"""Attention backend used by every transformer block, behind one function.

Backends: `eager` (the official math: `softmax(q*scale @ k^T) @ v`) and `sdpa`
(`torch.nn.functional.scaled_dot_product_attention`). `auto` picks SDPA. Select globally with
`set_attention_backend(name)` or the `VIDEOMAE_ATTN` environment variable (timm-style switch,
no monkey-patching).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

ATTENTION_BACKENDS = ("auto", "eager", "sdpa")

_backend = os.environ.get("VIDEOMAE_ATTN", "auto")


def set_attention_backend(name: str) -> None:
    global _backend
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {name!r}")
    _backend = name


def get_attention_backend() -> str:
    return _backend


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k, v: [B, H, N, d] -> [B, H, N, d], exactly the official order of operations."""
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k, v: [B, H, N, d] -> [B, H, N, d]"""
    if _backend == "eager":
        return eager_attention(q, k, v, scale, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
