"""Stochastic depth, as the official recipes draw it.

Ours, not `timm.layers.DropPath`: the official code calls timm 0.4.12's `drop_path`, which keeps a sample when
`floor(keep + rand) == 1` and scales by `x.div(keep)`; timm >= 0.5 draws `bernoulli_(keep)` instead, another
random stream of the same law (from one seed at p = 0.1, 18.0% of the samples are dropped by one and kept by the
other, i.e. independent draws). And `import videomae` builds the layers: importing timm.layers there would add
0.47 s (1.9 s on a loaded machine) and torchvision to every start.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drop the residual branch per sample with probability `p`, rescaling survivors by 1/(1-p): x [B, ...]."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x.div(keep) * (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()

    def extra_repr(self) -> str:
        return f"p={self.p}"
