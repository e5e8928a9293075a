"""Hugging Face model folders and Hub ids -> our models: the config.json checked against its weights, then built.

    model, report = videomae.from_pretrained("MCG-NJU/videomae-base")      # or a folder, revision="..."
    model = build_for_weights("MCG-NJU/videomae-base", "pretrain_videomae_base_patch16_224", given=set(),
                              drop_path_rate=0.1)                           # what `pretrain --init ID` builds

A config is read and checked (JSON object, types, positive sizes, and sizes that agree with the weights' shapes
read from the safetensors header or a lazily mapped archive) before any model exists, so a wrong or hostile
config.json is one line naming the file and the field, never a traceback or a model the weights do not fit.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn

from videomae.checkpoint import SIZE_NAMES, hf_weights_file, load_checkpoint, load_error, local, unwrap
from videomae.interop.hf import check_hf_config, model_from_hf_config, model_kwargs, task_of


def weight_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a weights file without reading the tensors (a safetensors header, or a lazily mapped
    torch.save archive): what a config is checked against before any model is built."""
    path = Path(path)
    if path.suffix == ".safetensors":
        import struct

        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > path.stat().st_size:
                    raise ValueError(f"header of {n} bytes in a {path.stat().st_size}-byte file")
                header = json.loads(f.read(n))
            return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        except (ValueError, KeyError, TypeError, AttributeError, struct.error) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - one line naming the file
        raise ValueError(f"{path}: {load_error(path, err)}") from None
    return {k: tuple(v.shape) for k, v in unwrap(obj, str(path)).items()}


def read_hf_config(folder: str | os.PathLike) -> dict:
    """A Hugging Face model folder's config.json, checked (JSON object, types, positive sizes) and matched against
    its weights' shapes before anything is built. ValueError: one line naming the file and the field."""
    folder = local(folder)
    path = folder / "config.json"
    weights = hf_weights_file(folder)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    return check_hf_config(config, str(path), shapes=weight_shapes(weights))


def hf_flags(config: dict, kind: str | None = None) -> dict:
    """A checked HF config -> the command-line flags it determines: the registered `kind` ('pretrain' or 'vit';
    default: the config's task) model of that width (None if there is none), input_size, num_frames,
    tubelet_size and, for pretraining, decoder_depth."""
    task = task_of(config) if config.get("architectures") else "pretrain"
    kw = model_kwargs(config, task)
    flags = {"input_size": kw["img_size"], "num_frames": kw["num_frames"], "tubelet_size": kw["tubelet_size"]}
    width = kw["encoder_embed_dim"] if task == "pretrain" else kw["embed_dim"]
    size = SIZE_NAMES.get(width)
    kind = kind or ("pretrain" if task == "pretrain" else "vit")
    prefix = "pretrain_videomae" if kind == "pretrain" else "vit"
    flags["model"] = f"{prefix}_{size}_patch{kw['patch_size']}_224" if size else None
    if task == "pretrain":
        flags["decoder_depth"] = kw["decoder_depth"]
    return flags


# Architecture overrides a config.json decides, by command-line flag (and create_model override) name.
ARCH_FLAGS = {"input_size": "img_size", "num_frames": "num_frames", "tubelet_size": "tubelet_size",
              "decoder_depth": "decoder_depth"}


def hf_config_of(weights) -> dict | None:
    """The checked config.json of weights that are a Hugging Face model folder or a Hub model id; else None."""
    if weights is None or isinstance(weights, dict):
        return None
    path = local(weights)
    return read_hf_config(path) if path.is_dir() else None


def arch_conflicts(config: dict, name: str | None, values: dict, given) -> list[str]:
    """`given` flags (names as in ARCH_FLAGS, plus 'model') whose `values` (or model `name`) disagree with an HF
    config: one 'flag value vs config.json field value' phrase each."""
    flags = hf_flags(config)
    out = []
    for flag, override in ARCH_FLAGS.items():
        value = values.get(flag, values.get(override))
        if (flag in given or override in given) and value is not None and flag in flags and value != flags[flag]:
            out.append(f"--{flag} {value} vs {flag} {flags[flag]} in config.json")
    if "model" in given and name is not None:
        from videomae.registry import create_model

        with torch.device("meta"):
            ours = create_model(name)
        enc = ours.encoder if hasattr(ours, "encoder") else ours
        have = (enc.patch_embed.proj.weight.shape[0], len(enc.blocks), int(enc.patch_embed.patch_size))
        c = model_kwargs(config, "pretrain" if name.startswith("pretrain") else "classifier")
        want = (c.get("encoder_embed_dim", c.get("embed_dim")), c.get("encoder_depth", c.get("depth")),
                c["patch_size"])
        if have != want:
            out.append(f"--model {name} (width {have[0]}, {have[1]} blocks, patch {have[2]}) vs config.json "
                       f"(hidden_size {want[0]}, num_hidden_layers {want[1]}, patch_size {want[2]})")
    return out


def build_for_weights(weights, name: str, given=None, **overrides) -> nn.Module:
    """The model to load `weights` into: `create_model(name, **overrides)`, except that weights with a Hugging
    Face config.json (a model folder or Hub id) build the architecture that config describes. Overrides that set
    the architecture (img_size / input_size, num_frames, tubelet_size, decoder_depth) and `name` count only when
    listed in `given` (the flags a person set; None: all) and must then agree with the config, else ValueError
    naming both; the rest (drop_path_rate, num_classes, ...) apply as given."""
    from videomae.registry import create_model

    config = hf_config_of(weights)
    if config is None:
        return create_model(name, **overrides)
    given = set(overrides) | {"model"} if given is None else set(given)
    values = {**overrides, **({"input_size": overrides["img_size"]} if "img_size" in overrides else {})}
    bad = arch_conflicts(config, name, values, given)
    if bad:
        raise ValueError(f"{weights}: its config.json disagrees with {'; '.join(bad)}: drop the flag to use the "
                         "config's architecture")
    arch = set(ARCH_FLAGS.values())
    rest = {k: v for k, v in overrides.items() if k not in arch}
    return model_from_hf_config(config, task="pretrain" if name.startswith("pretrain") else "classifier", **rest)


def from_pretrained(name_or_path, task: str | None = None, revision: str | None = None, **overrides):
    """Our model and its LoadReport from a Hugging Face model folder or Hub id (`config.json` + `model.safetensors`
    or `pytorch_model.bin`), e.g. "MCG-NJU/videomae-base" or one written by `save_pretrained`.

    revision: a branch, tag or commit of the Hub repository. The config is checked against the weights before the
    model is built; overrides go to the model's constructor."""
    folder = local(name_or_path, revision=revision)
    if not folder.is_dir():
        raise ValueError(f"{name_or_path}: not a Hugging Face model folder (config.json + weights); load a single "
                         "file with videomae.load_checkpoint(model, path)")
    config = read_hf_config(folder)
    model = model_from_hf_config(config, task=task, **overrides)
    return model, load_checkpoint(model, hf_weights_file(folder), strict=True)
