"""Cube (tubelet) embedding, the module of the op `videomae.ops.cube_embed`: `Conv3d(C, D, kernel=stride=(t, p, p))`
(+ pos), tokens in (t, h, w) raster order."""

from __future__ import annotations

import torch
from torch import nn

from videomae import ops


class CubeEmbed(nn.Module):
    def __init__(self, patch_size: int = 16, tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """[B, C, T, H, W] -> token grid (T', H', W'); raises if the cube does not divide the clip."""
        if len(video_shape) != 5:
            raise ValueError(f"videos must be [B, C, T, H, W], got shape {list(video_shape)}")
        _, c, t, h, w = video_shape
        if c != self.proj.in_channels:
            raise ValueError(f"videos must have {self.proj.in_channels} channels, got {c}")
        p, tt = self.patch_size, self.tubelet_size
        if t % tt or h % p or w % p:
            raise ValueError(f"videos T={t}, H={h}, W={w} must be divisible by the cube ({tt}, {p}, {p})")
        return t // tt, h // p, w // p

    def forward(self, videos: torch.Tensor, visible: torch.Tensor | None = None,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        """videos: [B, C, T, H, W]; visible: [B, N_vis] int64 token ids, or None for every token;
        pos: [1, N, D] or None, added in the output's dtype (the official `type_as`) -> [B, N_vis or N, D]

        With ids this is `ops.cube_embed` (only the visible cubes are embedded); without, conv3d (the classifier).
        """
        if visible is not None:
            return ops.cube_embed(videos, self.proj.weight, self.proj.bias, pos, visible)
        x = self.proj(videos).flatten(2).transpose(1, 2)
        return x if pos is None else x + pos.type_as(x)
