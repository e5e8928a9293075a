"""LayerNorm that can take the residual branch it follows: `norm(x, branch) -> (x + branch, LayerNorm(x + branch))`
in one kernel (`videomae.ops.add_layer_norm`), `norm(x) -> LayerNorm(x)` otherwise. Parameters and state dict
are nn.LayerNorm's, so checkpoints load unchanged.

Under autocast the normalized output comes out in the autocast dtype, the dtype the Linear after it computes in
(nn.LayerNorm would write fp32 and the Linear would cast it); the values are the same.
"""

from __future__ import annotations

import torch
from torch import nn

from videomae import ops


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """x: [..., D]; residual: [..., D] or None -> LayerNorm(x), or (x + residual, LayerNorm(x + residual))"""
        residual = None if residual is None else residual.contiguous()
        s, y = ops.add_layer_norm(x.contiguous(), residual, self.weight, self.bias, self.eps)  # no-ops when dense
        return y if residual is None else (s, y)
