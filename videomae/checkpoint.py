"""Load and save checkpoints: official VideoMAE V1/V2, MAE-ST and Hugging Face files into our models.

    report = videomae.load_checkpoint(model, "vit_b_k400_pt.pth")   # prints nothing; str(report) is short
    videomae.save_checkpoint(model, "out.pth")                      # {'model': sd} or {'module': sd}

Every foreign layout is first converted to the official key names (which our modules use), then
adapted to the model: `encoder.`/`backbone.` stripped and the decoder dropped for a classifier (as
official fine-tuning does), fixed positional tables dropped (they are regenerated), learnable ones
resized to the model's grid, a head with another class count dropped.
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from videomae.interop.hf import hf_to_official, is_hf_state_dict
from videomae.interop.mae_st import is_mae_st_state_dict, mae_st_to_official
from videomae.layers.pos_embed import resize_pos_embed, sinusoid_table

# Where the weights sit in each known file: official pretraining / non-DeepSpeed fine-tuning, DeepSpeed
# fine-tuning, generic, MAE-ST (pySlowFast style).
CONTAINER_KEYS = ("model", "module", "state_dict", "model_state")
PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DDP / DeepSpeed wrappers
DECODER_KEYS = ("decoder.", "encoder_to_decoder.", "mask_token")


@dataclass
class LoadReport:
    source: str
    layout: str = "official"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint key, why)
    reshaped: list[tuple[str, str]] = field(default_factory=list)  # (key, how)
    inexact: list[str] = field(default_factory=list)  # why the source model's outputs are not reproduced

    @property
    def exact(self) -> bool:
        """True when what was loaded computes what it computed in the source model."""
        return not self.inexact

    def __str__(self) -> str:
        lines = [f"{self.source} ({self.layout} layout): {len(self.loaded)} tensors loaded"]
        if self.missing:
            lines.append(f"  missing (left at init): {_short(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {_short(self.unexpected)}")
        for why in sorted({w for _, w in self.dropped}):
            lines.append(f"  dropped {_short([k for k, w in self.dropped if w == why])}: {why}")
        lines += [f"  reshaped {k}: {how}" for k, how in self.reshaped]
        lines += [f"  NOT EXACT: {why}" for why in self.inexact]
        return "\n".join(lines)


def _short(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


# --------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw object of a `.safetensors` file or a pickle (`.pth`/`.pt`/`.bin`), without running its code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        # Official checkpoints pickle the run's argparse.Namespace next to the weights: plain data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"cannot read checkpoint {path!r} with torch.load(weights_only=True), which refuses pickles that "
            f"could run code: {e}\nIf you trust the file, re-save its state dict: "
            f"torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth')"
        ) from e


def unwrap(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint, with wrapper prefixes (`_orig_mod.`, `module.`) stripped."""
    if not isinstance(obj, dict):
        raise TypeError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for key in CONTAINER_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor; "
                            f"weights are expected under one of {CONTAINER_KEYS} or at the top level")
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        sd[key] = value
    return sd


# --------------------------------------------------------------------------
# adapting to the model


def _grid(model: nn.Module) -> tuple[int, int, int]:
    return tuple(model.encoder.grid if hasattr(model, "encoder") else model.grid)


def _infer_grid(n: int, grid: tuple[int, int, int], key: str) -> tuple[int, int, int]:
    """Source token grid of a table with n positions, assuming square frames and either the model's
    number of time steps (as official fine-tuning assumes) or its spatial size."""
    t, h, w = grid
    side = math.isqrt(n // t) if n % t == 0 else 0
    if side and side * side * t == n:
        return t, side, side
    if n % (h * w) == 0:
        return n // (h * w), h, w
    raise ValueError(f"{key}: cannot infer the token grid of a {n}-position table for a model on grid {grid}")


def _adapt_pos(model, sd, report) -> None:
    own = dict(model.named_parameters())
    for key in [k for k in sd if k in ("pos_embed", "encoder.pos_embed")]:
        table = sd.pop(key)
        target = "encoder.pos_embed" if hasattr(model, "encoder") else "pos_embed"
        if target not in own:
            fixed = sinusoid_table(table.shape[1], table.shape[2])
            if table.shape[1:] == fixed.shape[1:] and torch.allclose(table.float(), fixed, atol=1e-6):
                report.dropped.append((key, "fixed sinusoid table, regenerated for the model's grid"))
            else:
                report.dropped.append((key, "learned table, but the model uses the fixed sinusoid"))
                report.inexact.append(f"{key} is learned; build the model with use_learnable_pos_emb=True to use it")
            continue
        grid, n = _grid(model), own[target].shape[1]
        if table.shape[1] == n + 1:  # a class-token position in front
            table = table[:, 1:]
            report.reshaped.append((key, "dropped the leading class-token position"))
        if table.shape[1] != n:
            src = _infer_grid(table.shape[1], grid, key)
            table = resize_pos_embed(table, src, grid)
            report.reshaped.append((key, f"resized from grid {src} to {grid}"))
        sd[target] = table


def adapt_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Official-layout keys -> the keys and shapes of `model` (see module docstring); records why."""
    own = model.state_dict()
    if not any(k.startswith("encoder.") for k in own):  # a classifier
        for key in [k for k in sd if k.startswith(DECODER_KEYS)]:
            sd.pop(key)
            report.dropped.append((key, "pretraining decoder, not part of a classifier"))
        sd = {(k.split(".", 1)[1] if k.startswith(("encoder.", "backbone.")) else k): v for k, v in sd.items()}
        if "norm.weight" in sd and "norm.weight" not in own:
            for key in ("norm.weight", "norm.bias"):
                sd.pop(key, None)
                why = "encoder norm; fine-tuning uses a fresh fc_norm after pooling"
                report.dropped.append((f"encoder.{key}", why))
    _adapt_pos(model, sd, report)
    for key in ("head.weight", "head.bias"):
        if key in sd and (key not in own or sd[key].shape != own[key].shape):
            classes = sd[key].shape[0]
            want = own[key].shape[0] if key in own else 0
            sd.pop(key)
            report.dropped.append((key, f"head for {classes} classes, the model has {want}"))
    bad = [f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}"
           for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{report.source}: shape mismatch (is it the right model size?)\n  " + "\n  ".join(bad))
    return sd


# --------------------------------------------------------------------------
# public API


def load_checkpoint(
    model: nn.Module, path_or_state_dict: str | os.PathLike | dict, strict: bool = False
) -> LoadReport:
    """Load official V1/V2, MAE-ST or Hugging Face weights into `model`; -> a LoadReport.

    strict: raise when a model tensor stays missing or a checkpoint tensor is neither loaded nor
    dropped by a documented rule. Warns when the source model's outputs are not reproduced.
    """
    if isinstance(path_or_state_dict, dict):
        source, obj = "<state dict>", path_or_state_dict
    else:
        source, obj = os.fspath(path_or_state_dict), read_checkpoint(path_or_state_dict)
    report = LoadReport(source)
    sd = unwrap(obj, source)
    if "model_state" in obj or is_mae_st_state_dict(sd):
        report.layout = "mae_st"
        sd, dropped, inexact = mae_st_to_official(sd)
        report.dropped += dropped
        report.inexact += inexact
    elif is_hf_state_dict(sd):
        report.layout = "hf"
        sd, dropped = hf_to_official(sd)
        report.dropped += dropped
    sd = adapt_state_dict(model, sd, report)
    result = model.load_state_dict(sd, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    unexpected = set(report.unexpected)
    report.loaded = [k for k in sd if k not in unexpected]
    if strict and (report.missing or report.unexpected):
        raise RuntimeError(f"strict load failed:\n{report}")
    if report.inexact:
        warnings.warn(f"{source}: the source model's outputs are not reproduced:\n{report}", stacklevel=2)
    return report


def save_checkpoint(model: nn.Module, path: str | os.PathLike, format: str = "official", **extra) -> None:
    """format "official": `{'model': sd}` for a pretraining model, `{'module': sd}` for a classifier (as the
    official DeepSpeed fine-tuning run writes), plus `extra` entries; "safetensors": the bare state dict."""
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = os.fspath(path)
    if format == "official":
        key = "model" if any(k.startswith("encoder.") for k in sd) else "module"
        torch.save({key: sd, **extra}, path)
    elif format == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, path, metadata={"format": "pt", **{k: str(v) for k, v in extra.items()}})
    else:
        raise ValueError(f"format must be 'official' or 'safetensors', got {format!r}")
