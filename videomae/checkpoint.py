"""Weight files: official VideoMAE V1/V2, MAE-ST and Hugging Face files, HF model folders or Hub ids, into our models.

    report = videomae.load_checkpoint(model, "vit_b_k400_pt.pth")   # prints nothing; str(report) is short
    videomae.save_checkpoint(model, "out.pth")                      # {'model': sd} or {'module': sd}, + .sha256
    model, report = videomae.from_pretrained("MCG-NJU/videomae-base")  # HF folder or Hub id -> our model

(Resumable training state is another thing, `videomae.train.state`.) A file that cannot be read, weights of
another model size, a config.json that does not describe its weights, or a file whose bytes changed since we wrote
it raise `ValueError` with one line naming the file and the reason. Hub ids (`ORG/NAME[@REVISION]`,
`ORG/NAME/FILE`) are fetched through huggingface_hub (`videomae.interop.hub`) wherever a path is accepted.

Every foreign layout is first converted to the official key names (which our modules use), then
adapted to the model: `encoder.`/`backbone.` stripped and the decoder dropped for a classifier (as
official fine-tuning does), fixed positional tables dropped (they are regenerated), learnable ones
resized to the model's grid, a head with another class count dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from videomae import integrity
from videomae.interop import hub
from videomae.interop.hf import hf_to_official, is_hf_state_dict
from videomae.interop.mae_st import is_mae_st_state_dict, mae_st_to_official

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


HF_WEIGHTS = hub.HF_WEIGHTS


def local(path_or_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local file or folder as it is; a Hugging Face Hub id -> its cached (or downloaded) folder or file."""
    if revision is not None or hub.is_hub_id(os.fspath(path_or_id)):
        return hub.download(os.fspath(path_or_id), revision=revision)
    return Path(path_or_id)


def hf_weights_file(directory: str | os.PathLike) -> Path:
    """The weights of a Hugging Face model folder (config.json + model.safetensors or pytorch_model.bin)."""
    directory = local(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory}: a folder, but not a Hugging Face model folder (no config.json)")
    for name in HF_WEIGHTS:
        if (directory / name).is_file():
            return directory / name
    raise ValueError(f"{directory}: no model.safetensors or pytorch_model.bin (sharded weights are not read)")


def load_error(path: str | os.PathLike, err: Exception) -> str:
    """One line on why torch.load failed, for a person: corrupt, truncated, or holding code."""
    text = str(err)
    if isinstance(err, zipfile.BadZipFile) or "central directory" in text or "PytorchStreamReader" in text:
        return "truncated or corrupt (not a complete torch.save archive)"
    if "Weights only load failed" in text or "Unsupported global" in text:
        return "holds pickled Python objects other than tensors and plain data; not loaded, since unpickling " \
               "them could run code"
    if isinstance(err, EOFError) or "Ran out of input" in text:
        return "truncated (ends early)"
    if "invalid load key" in text or "magic number" in text:
        return "not a torch.save file (corrupt, or another format)"
    return f"unreadable ({type(err).__name__}: {text.splitlines()[0] if text else 'no details'})"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw object of a `.safetensors` file, a pickle (`.pth`/`.pt`/`.bin`), a Hugging Face model folder or a
    Hub id, without running code from it. Unreadable, or changed since we wrote it (its `.sha256` sidecar) ->
    ValueError, one line naming the file and why."""
    path = os.fspath(local(path))
    if os.path.isdir(path):
        path = os.fspath(hf_weights_file(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    integrity.verify(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    try:
        # Official checkpoints pickle the run's argparse.Namespace next to the weights: plain data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every load failure becomes one line naming the file
        raise ValueError(f"{path}: {load_error(path, err)}") from None


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
    from videomae.layers.pos_embed import resize_pos_embed, sinusoid_table

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
        theirs, ours = describe(sd), describe(own)
        what = f"a {theirs} checkpoint, the model is a {ours}" if theirs != ours else "same size, other shapes"
        raise ValueError(f"{report.source}: {what} ({len(bad)} tensors differ, e.g. {bad[0]})")
    return sd


def describe(sd: dict[str, torch.Tensor]) -> str:
    """'ViT width 768, 12 blocks, patch 16' from the tensors alone (any official-layout state dict)."""
    proj = next((v for k, v in sd.items() if k.endswith("patch_embed.proj.weight")), None)
    if proj is None:
        return "model without a patch embedding"
    blocks = {k.split(".blocks.")[-1].split(".")[0] if ".blocks." in k else k.split(".")[1]
              for k in sd if k.startswith(("blocks.", "encoder.blocks."))}
    return f"ViT width {proj.shape[0]}, {len(blocks)} blocks, patch {proj.shape[-1]}"


SIZE_NAMES = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant"}


def guess_model(sd: dict[str, torch.Tensor], kind: str) -> str | None:
    """A registered model name for these weights (`kind`: 'pretrain' or 'vit'), from the encoder width."""
    proj = next((v for k, v in sd.items() if k.endswith("patch_embed.proj.weight")), None)
    if proj is None or proj.shape[0] not in SIZE_NAMES:
        return None
    name = SIZE_NAMES[proj.shape[0]]
    patch = proj.shape[-1]
    return f"pretrain_videomae_{name}_patch{patch}_224" if kind == "pretrain" else f"vit_{name}_patch{patch}_224"


def stored_args(path: str | os.PathLike) -> dict:
    """The run arguments stored with weights: the file's `args` entry (ours: a dict; official: a pickled
    Namespace), else `args.json` beside it, else a Hugging Face config.json as our names; {} if none."""
    path = local(path)
    if path.is_dir():
        from videomae.interop.pretrained import hf_flags, read_hf_config

        return hf_flags(read_hf_config(path))
    obj = read_checkpoint(path)
    found = obj.get("args") if isinstance(obj, dict) else None
    if isinstance(found, argparse.Namespace):
        found = vars(found)
    if not isinstance(found, dict) and (path.parent / "args.json").is_file():
        found = json.loads((path.parent / "args.json").read_text())
    return dict(found) if isinstance(found, dict) else {}


# --------------------------------------------------------------------------
# public API


def fitted_state_dict(model: nn.Module, path_or_state_dict: str | os.PathLike | dict
                      ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Any supported layout -> the state dict `model` takes, and the report so far; raises ValueError (one
    line naming both model sizes) when it cannot fit. Works on a meta-device model: the command line
    checks the fit before a run starts."""
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
    return adapt_state_dict(model, sd, report), report


def load_checkpoint(
    model: nn.Module, path_or_state_dict: str | os.PathLike | dict, strict: bool = False
) -> LoadReport:
    """Load official V1/V2, MAE-ST or Hugging Face weights into `model`; -> a LoadReport.

    strict: raise when a model tensor stays missing or a checkpoint tensor is neither loaded nor
    dropped by a documented rule. Warns when the source model's outputs are not reproduced.
    """
    sd, report = fitted_state_dict(model, path_or_state_dict)
    source = report.source
    result = model.load_state_dict(sd, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    unexpected = set(report.unexpected)
    report.loaded = [k for k in sd if k not in unexpected]
    if strict and (report.missing or report.unexpected):
        raise RuntimeError(f"strict load failed:\n{report}")
    if report.inexact:
        warnings.warn(f"{source}: the source model's outputs are not reproduced:\n{report}", stacklevel=2)
    return report


def save_checkpoint(model: nn.Module, path: str | os.PathLike, format: str = "official", **extra) -> Path:
    """format "official": `{'model': sd}` for a pretraining model, `{'module': sd}` for a classifier (as the
    official DeepSpeed fine-tuning run writes), plus `extra` entries; "safetensors": the bare state dict.

    Written atomically with a SHA-256 sidecar (`<file>.sha256`) that loading checks; a full disk or a read-only
    folder raises `videomae.integrity.WriteFailed` (one line) and leaves an earlier file there as it was."""
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if format == "official":
        key = "model" if any(k.startswith("encoder.") for k in sd) else "module"
        return integrity.write_atomic(path, lambda f: torch.save({key: sd, **extra}, f))
    if format == "safetensors":
        from safetensors.torch import save

        # Bytes first: safetensors' own file writer does not report a full disk.
        data = save(sd, metadata={"format": "pt", **{k: str(v) for k, v in extra.items()}})
        return integrity.write_atomic(path, lambda f: f.write(data))
    raise ValueError(f"format must be 'official' or 'safetensors', got {format!r}")
