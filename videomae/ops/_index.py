"""Index tables the kernels are driven by, built from Bool masks with torch ops.

Masks hold the same count per sample (validated), so per-sample token lists stack into [B, K].
"""

from __future__ import annotations

import torch


def tokens_where(keep: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """keep: Bool [B, N] -> token ids [B, K] int32 of the True entries, raster order (K equal per sample).

    With `count` (= K, known from another tensor's shape) a stable sort keeps the output shape static,
    which torch.compile can trace without data-dependent sizes.
    """
    if count is None:
        return keep.nonzero()[:, 1].view(keep.shape[0], -1).to(torch.int32)
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
    return order[:, :count].to(torch.int32)


def decoded_mask(mask: torch.Tensor, decode_mask: torch.Tensor | None) -> torch.Tensor:
    """The tokens the decoder reconstructs: the encoder-masked ones (V1) or those not decode-masked (V2)."""
    return mask if decode_mask is None else ~decode_mask


def rows_of(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """tokens [B, K] -> rows [B, N] int32: rows[b, tokens[b, k]] = k, -1 for tokens not listed.

    The inverse map lets a per-token reduction (the pos gradient) gather instead of scatter-add,
    which keeps it deterministic.
    """
    b, k = tokens.shape
    rows = torch.full((b, num_tokens), -1, dtype=torch.int32, device=tokens.device)
    src = torch.arange(k, dtype=torch.int32, device=tokens.device).expand(b, k)
    return rows.scatter_(1, tokens.long(), src)


def loss_weights(mask: torch.Tensor, decode_mask: torch.Tensor | None, tokens: torch.Tensor,
                 values_per_cube: int) -> torch.Tensor:
    """Weight of each decoded cube's squared-error sum in the loss; tokens [B, N_dec] decoded ids -> [B, N_dec] fp32.

    V1: 1 / (B * N_dec * E), the mean over all values; V2: [masked] / (E * #decoded-and-masked).
    A gather, not a Boolean index, so the shapes stay static under torch.compile.
    """
    w = mask.gather(1, tokens.long()).float()
    if decode_mask is None:
        return torch.full_like(w, 1.0 / (w.numel() * values_per_cube))
    return w / (values_per_cube * w.sum())
