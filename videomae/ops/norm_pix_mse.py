"""norm_pix_mse: the pretraining loss, MSE between the decoder's predictions and the normalized pixels of the
cubes it reconstructs (VideoMAE V1, V2 dual masking, MAE-ST), in fp32.

One place for the op: the public function (validation once, dispatch), the targets `pixel_targets` and the
reference `norm_pix_mse_ref` written the way the official engines compute them, the fake kernel and the
autograd glue. Backends supply only kernels; `pixel_loss` is the op for Bool masks.
"""

from __future__ import annotations

import torch
from einops import rearrange

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.dispatch import select
from videomae.masking import token_ids

from . import _checks
from ._index import channel_constants, take_rows
from .library import torch_op

STYLES = ("videomae", "mae_st")


def norm_pix_mse(
    pred: torch.Tensor,
    videos: torch.Tensor,
    decoded: torch.Tensor,
    scored: torch.Tensor | None = None,
    *,
    tubelet_size: int = 2,
    patch_size: int = 16,
    normalize_target: bool = True,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """The loss without materializing the targets (fused backends).

    pred: [B, N_dec, t*p*p*C], cube values (t, p, p) with channel fastest; videos: [B, C, T, H, W] normalized with
    (mean, std), or uint8; decoded: [B, N_dec] int64 ids of pred's cubes; scored: [B, N_dec] Bool, the cubes the
    loss counts (V2: decoded and masked), None = all (V1) -> scalar fp32 loss; d pred comes back in pred's dtype.
    V1: mean over all values of the decoded cubes; V2: per-cube mean averaged over the scored cubes.

    Degenerate input, the same on every backend: no decoded cube (N_dec = 0, or B = 0) is a ValueError naming
    `decoded`; a zero or negative `std` is a ValueError; V2 ids whose batch scores no cube give NaN (the mean of
    nothing; a data-dependent case a step cannot check without a host sync; the trainer skips a non-finite step).
    Ids: checked by value when on the CPU (`_checks`); on any device an id outside [0, N) reads nothing and
    weighs 0 on the fused backends. Duplicated decoded ids are refused by that check; if they slip through, each
    copy is a cube of its own in the mean (the loss and d pred stay exact).
    """
    _checks.check_norm_pix_mse(pred, videos, decoded, scored, tubelet_size, patch_size, style, mean, std)
    backend = select("norm_pix_mse", dict(pred=pred, videos=videos, decoded=decoded, scored=scored))
    return torch_op("norm_pix_mse", backend.name)(
        pred, videos, decoded, scored, tubelet_size, patch_size, normalize_target, style, list(mean), list(std)
    )


def patchify(videos: torch.Tensor, tubelet_size: int = 2, patch_size: int = 16) -> torch.Tensor:
    """videos: [B, C, T, H, W] -> cubes [B, N, t*p*p, C] in (t, h, w) raster order."""
    return rearrange(videos, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet_size, p1=patch_size,
                     p2=patch_size)


def pixel_loss(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    normalize_target: bool = True,
    tubelet_size: int = 2,
    patch_size: int = 16,
    decode_mask: torch.Tensor | None = None,
    *,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """`norm_pix_mse` for Bool masks (mask: [B, N] True = masked; decode_mask: [B, N] True = not decoded, V2),
    converted by `masking.token_ids` (validates; syncs on a GPU: not for a training step)."""
    ids = token_ids(mask, decode_mask)
    return norm_pix_mse(pred, videos, ids.decoded, ids.scored, tubelet_size=tubelet_size, patch_size=patch_size,
                        normalize_target=normalize_target, style=style, mean=mean, std=std)


def pixel_targets(
    videos: torch.Tensor,
    *,
    normalize_target: bool = True,
    tubelet_size: int = 2,
    patch_size: int = 16,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    upcast: bool = False,
) -> torch.Tensor:
    """Regression targets of every cube, no gradient: fp32 as the official engines (fp64 when `upcast`).

    videos: [B, C, T, H, W] normalized with (mean, std), or uint8 pixels -> [B, N, t*p*p*C], channel fastest.
    - videomae: the [0, 1] pixels; per cube and channel `(x - mu) / (std_unbiased + 1e-6)`.
    - mae_st: the normalized input; per cube jointly over all values `(x - mu) / sqrt(var_unbiased + 1e-6)`.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    ct = torch.float64 if upcast else torch.float32
    m, s = (v.view(1, -1, 1, 1, 1) for v in channel_constants(mean, std, videos.device, ct))
    with torch.no_grad():
        x = videos.detach().to(ct)
        if videos.dtype == torch.uint8:
            x = x / 255 if style == "videomae" else (x / 255 - m) / s
        elif style == "videomae":
            x = x * s + m
        cubes = patchify(x, tubelet_size, patch_size)
        if normalize_target and style == "videomae":
            mu = cubes.mean(dim=-2, keepdim=True)
            sd = cubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
            cubes = (cubes - mu) / (sd + 1e-6)
        cubes = rearrange(cubes, "b n p c -> b n (p c)")
        if normalize_target and style == "mae_st":
            mu = cubes.mean(dim=-1, keepdim=True)
            var = cubes.var(dim=-1, unbiased=True, keepdim=True)
            cubes = (cubes - mu) / (var + 1e-6) ** 0.5
        return cubes


def norm_pix_mse_ref(
    pred: torch.Tensor,
    videos: torch.Tensor,
    decoded: torch.Tensor,
    scored: torch.Tensor | None = None,
    *,
    tubelet_size: int = 2,
    patch_size: int = 16,
    normalize_target: bool = True,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    upcast: bool = False,
) -> torch.Tensor:
    """The official loss: targets of every cube, the decoded ones taken as labels, squared error in fp32
    (fp64 when `upcast`, the test oracle). Arguments as `norm_pix_mse` -> scalar."""
    target = pixel_targets(videos, normalize_target=normalize_target, tubelet_size=tubelet_size,
                           patch_size=patch_size, style=style, mean=mean, std=std, upcast=upcast)
    labels = take_rows(target, decoded)
    err = (pred.to(target.dtype) - labels) ** 2
    if scored is None:
        return err.mean()
    w = scored.to(target.dtype)  # decoded cubes that the encoder did not see
    return (err.mean(dim=-1) * w).sum() / w.sum()


# ---------------------------------------------------------------------------------------------- fake kernels


def fake(backend: str):
    def norm_pix_mse_fake(pred, videos, decoded, scored, tubelet_size, patch_size, normalize_target, style, mean,
                          std):
        return pred.new_empty((), dtype=torch.float32)

    return norm_pix_mse_fake


def backward_fake(grad, pred, *args):
    return torch.empty_like(pred)


# ---------------------------------------------------------------------------------------------- autograd


def setup(ctx, inputs, output):
    pred, videos, decoded, scored, *config = inputs
    ctx.save_for_backward(pred, videos, decoded, scored)
    ctx.config = config


def backward(backend: str):
    def norm_pix_mse_backward(ctx, grad):
        pred, videos, decoded, scored = ctx.saved_tensors
        gp = torch_op("norm_pix_mse_backward", backend)(grad, pred, videos, decoded, scored, *ctx.config)
        return gp, *([None] * 9)

    return norm_pix_mse_backward
