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
    """rows [B, K, D] -> [B, N, D], zero except out[b, ids[b, k]] += rows[b, k] (added to `into` when given).

    Validated ids are unique per sample: each output gets at most one add onto zero, so the result is
    deterministic on every device; a repeated id (refused by validation) still gets the sum of its rows.
    """
    b, _, d = rows.shape
    idx = ids.unsqueeze(-1).expand(*ids.shape, d)
    if into is None:
        into = rows.new_zeros(b, num_tokens, d, dtype=dtype or rows.dtype)
    return into.scatter_add(1, idx, rows.to(into.dtype))


def rows_of(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """tokens [B, K] -> rows [B, N] int32: rows[b, tokens[b, k]] = k, -1 for tokens not listed.

    The inverse map lets a per-token reduction (the pos gradient) gather instead of scatter-add, which keeps it
    deterministic. An id outside [0, N) is not listed (it lands in a spare column, dropped); of a repeated id
    (refused by validation) one row is kept, which one unspecified.
    """
    b, k = tokens.shape
    real = (tokens >= 0) & (tokens < num_tokens)
    rows = torch.full((b, num_tokens + 1), -1, dtype=torch.int32, device=tokens.device)
    src = torch.arange(k, dtype=torch.int32, device=tokens.device).expand(b, k)
    return rows.scatter_(1, torch.where(real, tokens, num_tokens), src)[:, :num_tokens].contiguous()


def loss_weights(decoded: torch.Tensor, scored: torch.Tensor | None, values_per_cube: int,
                 num_tokens: int) -> torch.Tensor:
    """Weight of each decoded cube's squared-error sum in the loss -> [B, N_dec] fp32, on the device.

    V1 (scored None): 1 / (E * #cubes), the mean over all values; V2: scored / (E * #scored). A cube whose id is
    outside [0, N) weighs 0 and is not counted (as in the CUDA kernels). No counted cube: NaN (0 / 0).
    """
    w = ((decoded >= 0) & (decoded < num_tokens)).float()
    if scored is not None:
        w = w * scored
    return w / (values_per_cube * w.sum())
