"""Static-shape index helpers shared by the backends (no host sync, no data-dependent size)."""

from __future__ import annotations

import torch

_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def channel_constants(mean, std, device: torch.device, dtype: torch.dtype = torch.float32
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as [C] tensors on `device`, made once per (values, device, dtype): a step must not copy
    Python data to the device on every call (each copy waits for the host)."""
    key = (tuple(mean), tuple(std), str(device), dtype)
    if key in _CONSTANTS:
        return _CONSTANTS[key]
    m = torch.tensor(mean, dtype=dtype).to(device)
    s = torch.tensor(std, dtype=dtype).to(device)
    # Under tracing (fake / functional tensors) these are the tracer's own tensors: never cache those.
    if type(m) is torch.Tensor and m.device.type != "meta":
        _CONSTANTS[key] = (m, s)
    return m, s


def take_rows(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, N, D] (or [1, N, D], broadcast over the batch), ids [B, K] int64 -> x[b, ids[b, k]]: [B, K, D]."""
    if x.shape[0] != ids.shape[0]:
        x = x.expand(ids.shape[0], *x.shape[1:])
    return x.gather(1, ids.unsqueeze(-1).expand(*ids.shape, x.shape[-1]))


def put_rows(rows: torch.Tensor, ids: torch.Tensor, num_tokens: int, dtype: torch.dtype | None = None,
             into: torch.Tensor | None = None) -> torch.Tensor:
    """rows [B, K, D] -> [B, N, D], zero except out[b, ids[b, k]] = rows[b, k] (added to `into` when given).

    Ids are unique per sample, so the scatter has no collisions: deterministic on every device.
    """
    b, _, d = rows.shape
    idx = ids.unsqueeze(-1).expand(*ids.shape, d)
    if into is not None:
        return into.scatter_add(1, idx, rows.to(into.dtype))
    out = rows.new_zeros(b, num_tokens, d, dtype=dtype or rows.dtype)
    return out.scatter_(1, idx, rows.to(out.dtype))


def rows_of(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """tokens [B, K] -> rows [B, N] int32: rows[b, tokens[b, k]] = k, -1 for tokens not listed.

    The inverse map lets a per-token reduction (the pos gradient) gather instead of scatter-add,
    which keeps it deterministic.
    """
    b, k = tokens.shape
    rows = torch.full((b, num_tokens), -1, dtype=torch.int32, device=tokens.device)
    src = torch.arange(k, dtype=torch.int32, device=tokens.device).expand(b, k)
    return rows.scatter_(1, tokens, src)


def loss_weights(decoded: torch.Tensor, scored: torch.Tensor | None, values_per_cube: int) -> torch.Tensor:
    """Weight of each decoded cube's squared-error sum in the loss -> [B, N_dec] fp32, on the device.

    V1 (scored None): 1 / (B * N_dec * E), the mean over all values; V2: scored / (E * #scored).
    """
    if scored is None:
        return torch.full(decoded.shape, 1.0 / (decoded.numel() * values_per_cube), dtype=torch.float32,
                          device=decoded.device)
    w = scored.float()
    return w / (values_per_cube * w.sum())
