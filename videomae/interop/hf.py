"""Hugging Face transformers VideoMAE <-> our models: state-dict keys, `config.json`, `preprocessor_config.json`.

HF splits attention into `query`/`key`/`value` Linears; the official layout fuses them into
`qkv.weight [3D, D]` with `q_bias`/`v_bias` (HF's key has no bias, as the official zero k bias).
Older transformers stored `attention.attention.{q_bias,v_bias}`, newer ones `{query,value}.bias`.

HF model differences that change numbers: blocks use `config.layer_norm_eps` (default 1e-12),
`decoder.norm` and the classifier's `fc_norm` are built with eps 1e-5 whatever the config says;
input is `[B, T, C, H, W]`. `model_from_hf_config` sets all of these on our models, `hf_config` goes back.

A config is checked (`check_hf_config`: a JSON object, types, positive sizes, and, given the weights file's tensor
shapes, sizes that agree with them) before any model is built, so a wrong file is one line naming the field, never
a traceback or a model of a size the weights do not have. Nothing here reads a file (`videomae.checkpoint` does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

# HF LayerNorms built without an eps argument (decoder.norm, fc_norm) get PyTorch's default.
HF_FIXED_NORM_EPS = 1e-5

# (HF suffix inside a layer, official suffix inside a block); the longer HF names come first.
_BLOCK = (
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
)
_ATTN = "attention.attention."
_TOP = (  # (HF prefix, official prefix) outside the blocks
    ("videomae.embeddings.patch_embeddings.projection.", "encoder.patch_embed.proj."),
    ("videomae.layernorm.", "encoder.norm."),
    ("classifier.", "head."),
)
_LAYERS = (
    (r"videomae\.encoder\.layer\.(\d+)\.", "encoder.blocks.{}."),
    (r"decoder\.decoder_layers\.(\d+)\.", "decoder.blocks.{}."),
)


def is_hf_state_dict(sd: dict) -> bool:
    return any(k.startswith(("videomae.", "decoder.decoder_layers.")) for k in sd)


def hf_to_official(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """HF keys (either layout) -> official pretraining-style keys (`encoder.*`, `decoder.*`, `fc_norm`, `head`).

    -> (state dict, [(dropped HF key, why)])
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    dropped = []
    for key, value in sd.items():
        new = _rename(key)
        if new is None:
            out[key] = value  # left as is: reported as unexpected by the loader
            continue
        block, rest = new
        if rest is None:
            out[block] = value
        elif rest.startswith(_ATTN):
            name = rest[len(_ATTN):]
            if name in ("query.weight", "key.weight", "value.weight"):
                qkv.setdefault(block, {})[name[0]] = value
            elif name in ("q_bias", "query.bias"):
                out[block + "attn.q_bias"] = value
            elif name in ("v_bias", "value.bias"):
                out[block + "attn.v_bias"] = value
            elif name == "key.bias":
                dropped.append((key, "a key bias adds the same score to every key of a query: cancels in softmax"))
            else:
                out[key] = value
        else:
            out[key] = value
    for block, w in qkv.items():
        if set(w) != {"q", "k", "v"}:
            raise ValueError(f"{block}: HF attention needs query, key and value weights, found only {sorted(w)}")
        out[block + "attn.qkv.weight"] = torch.cat([w["q"], w["k"], w["v"]], dim=0)
    return out, dropped


def _rename(key: str) -> tuple[str, str | None] | None:
    """-> (official key, None) for a top-level key, (block prefix, HF suffix) inside a layer, None if unknown."""
    for hf, ours in _TOP:
        if key.startswith(hf):
            return ours + key[len(hf):], None
    for pattern, ours in _LAYERS:
        m = re.match(pattern, key)
        if m:
            block, rest = ours.format(m.group(1)), key[m.end():]
            for hf, official in _BLOCK:
                if rest.startswith(hf):
                    return block + official + rest[len(hf):], None
            return block, rest
    if key.startswith(("encoder_to_decoder.", "mask_token", "decoder.norm.", "decoder.head.", "fc_norm.")):
        return key, None
    return None


def official_to_hf(sd: dict[str, torch.Tensor], layout: str = "new", key_bias: bool = False) -> dict[str, torch.Tensor]:
    """Our (official-layout) state dict -> HF keys. layout "new": `{query,value}.bias`; "old": `q_bias`/`v_bias`.
    key_bias: also write `key.bias`, as zeros (the official k bias), for transformers versions whose key Linear has a
    bias parameter.

    A classifier's keys (`patch_embed.*`, `blocks.*`) go to the encoder as in `VideoMAEForVideoClassification`.
    """
    if layout not in ("new", "old"):
        raise ValueError(f"layout must be 'new' or 'old', got {layout!r}")
    if not any(k.startswith("encoder.") for k in sd):
        sd = {(k if k.startswith(("fc_norm.", "head.")) else "encoder." + k): v for k, v in sd.items()}
    out = {}
    for key, value in sd.items():
        m = re.match(r"(encoder|decoder)\.blocks\.(\d+)\.(.*)", key)
        if m is None:
            out[_top_to_hf(key)] = value
            continue
        part, i, rest = m.groups()
        layer = f"videomae.encoder.layer.{i}." if part == "encoder" else f"decoder.decoder_layers.{i}."
        if rest == "attn.qkv.weight":
            for name, w in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{layer}{_ATTN}{name}.weight"] = w.clone()
            if key_bias:
                out[f"{layer}{_ATTN}key.bias"] = value.new_zeros(value.shape[0] // 3)
        elif rest in ("attn.q_bias", "attn.v_bias"):
            name = {"new": {"attn.q_bias": "query.bias", "attn.v_bias": "value.bias"},
                    "old": {"attn.q_bias": "q_bias", "attn.v_bias": "v_bias"}}[layout][rest]
            out[f"{layer}{_ATTN}{name}"] = value
        else:
            for hf, official in _BLOCK:
                if rest.startswith(official):
                    out[layer + hf + rest[len(official):]] = value
                    break
            else:
                raise ValueError(f"{key}: no Hugging Face equivalent (HF VideoMAE has no layer scale)")
    return out


def _top_to_hf(key: str) -> str:
    for hf, ours in _TOP:
        if key.startswith(ours):
            return hf + key[len(ours):]
    if key.startswith(("encoder_to_decoder.", "mask_token", "decoder.norm.", "decoder.head.", "fc_norm.")):
        return key
    raise ValueError(f"{key}: no Hugging Face equivalent")


# --------------------------------------------------------------------------
# config.json


TASKS = {"VideoMAEForPreTraining": "pretrain", "VideoMAEForVideoClassification": "classifier"}
# Sizes that must be positive integers (`image_size` / `patch_size` may also be a square [h, w] pair).
_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_frames", "tubelet_size",
          "num_channels", "decoder_hidden_size", "decoder_num_attention_heads", "decoder_intermediate_size")
_PAIRS = ("image_size", "patch_size")
_FLAGS = ("qkv_bias", "qv_bias", "use_mean_pooling", "norm_pix_loss")
_RATES = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def as_dict(config) -> dict:
    """A `VideoMAEConfig` or a parsed config.json -> a plain dict (anything else is returned for the check to name)."""
    return config.to_dict() if hasattr(config, "to_dict") else config


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_hf_config(config, source: str = "HF config", shapes: Mapping[str, tuple] | None = None) -> dict:
    """-> the config as a dict, or ValueError with one line naming `source` and the field.

    shapes: the weights' tensor shapes by key (either layout), read without loading them; when given, every size
    the weights determine must agree with the config (a huge `hidden_size` is refused here, not allocated)."""
    config = as_dict(config)
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object of settings, got a JSON {_json_kind(config)}")

    def bad(field: str, why: str):
        raise ValueError(f"{source}: {field} {config[field]!r} {why}")

    if config.get("model_type", "videomae") != "videomae":
        bad("model_type", "is not a VideoMAE config (model_type 'videomae')")
    for field in _SIZES:
        if field in config and not (_is_int(config[field]) and config[field] > 0):
            bad(field, "must be a positive integer")
    if "decoder_num_hidden_layers" in config and not (_is_int(config["decoder_num_hidden_layers"])
                                                      and config["decoder_num_hidden_layers"] >= 0):
        bad("decoder_num_hidden_layers", "must be a non-negative integer")
    for field in _PAIRS:
        value = config.get(field)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if not (1 <= len(items) <= 2 and all(_is_int(v) and v > 0 for v in items)):
            bad(field, "must be a positive integer or a [height, width] pair of them")
        if len(set(items)) != 1:
            bad(field, "is not square: only square sizes are supported")
    for field in _FLAGS:
        if field in config and not isinstance(config[field], bool):
            bad(field, "must be true or false")
    for field in _RATES:
        if field in config and not (isinstance(config[field], int | float) and 0 <= config[field] < 1):
            bad(field, "must be a number in [0, 1)")
    if "layer_norm_eps" in config and not (isinstance(config["layer_norm_eps"], int | float)
                                           and 0 < config["layer_norm_eps"] < 1):
        bad("layer_norm_eps", "must be a number in (0, 1)")
    if config.get("hidden_act", "gelu") != "gelu":
        bad("hidden_act", "is not supported: only exact GELU ('gelu')")
    archs = config.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        bad("architectures", "must be a list of class names")
    labels = config.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        bad("id2label", "must be a mapping of class index to name")
    if "num_labels" in config and not (_is_int(config["num_labels"]) and config["num_labels"] >= 0):
        bad("num_labels", "must be a non-negative integer")
    c = _Sizes(config)
    for field, value, divisor, by in (
        ("hidden_size", c.hidden, c.heads, "num_attention_heads"), ("image_size", c.image, c.patch, "patch_size"),
        ("num_frames", c.frames, c.tubelet, "tubelet_size"),
        ("decoder_hidden_size", c.dec_hidden, c.dec_heads, "decoder_num_attention_heads"),
    ):
        if value % divisor:
            raise ValueError(f"{source}: {field} {value} is not a multiple of {by} {divisor}")
    if shapes is not None:
        _check_shapes(c, shapes, source)
    return config


def _json_kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


class _Sizes:
    """A validated config's sizes, with transformers' defaults for the fields it leaves out."""

    def __init__(self, config: dict):
        def pair(name, default):
            value = config.get(name, default)
            return value[0] if isinstance(value, list) else value

        self.hidden, self.depth = config.get("hidden_size", 768), config.get("num_hidden_layers", 12)
        self.heads, self.inter = config.get("num_attention_heads", 12), config.get("intermediate_size", 3072)
        self.image, self.patch = pair("image_size", 224), pair("patch_size", 16)
        self.frames, self.tubelet = config.get("num_frames", 16), config.get("tubelet_size", 2)
        self.channels = config.get("num_channels", 3)
        self.dec_hidden, self.dec_depth = config.get("decoder_hidden_size", 384), config.get(
            "decoder_num_hidden_layers", 4)
        self.dec_heads, self.dec_inter = config.get("decoder_num_attention_heads", 6), config.get(
            "decoder_intermediate_size", 1536)
        labels = config.get("id2label")
        self.classes = len(labels) if labels else config.get("num_labels", 2)
        self.classifier = "VideoMAEForVideoClassification" in (config.get("architectures") or [])


def _check_shapes(c: _Sizes, shapes: Mapping[str, tuple], source: str) -> None:
    """Every size the weights fix, against the config; a missing tensor is left to the loader's report."""
    meta = {k: torch.empty(tuple(v), device="meta") for k, v in shapes.items()}
    if is_hf_state_dict(meta):
        meta, _ = hf_to_official(meta)
    sd = {k.removeprefix("encoder.") if k.startswith("encoder.") else k: tuple(v.shape) for k, v in meta.items()}

    def expect(key: str, want: tuple, field: str, value) -> None:
        got = sd.get(key)
        if got is not None and got != want:
            raise ValueError(f"{source}: {field} {value} does not match the weights ({key} is {list(got)}, the "
                             f"config implies {list(want)})")

    expect("patch_embed.proj.weight", (c.hidden, c.channels, c.tubelet, c.patch, c.patch), "hidden_size", c.hidden)
    expect("blocks.0.attn.qkv.weight", (3 * c.hidden, c.hidden), "hidden_size", c.hidden)
    expect("blocks.0.mlp.fc1.weight", (c.inter, c.hidden), "intermediate_size", c.inter)
    expect("encoder_to_decoder.weight", (c.dec_hidden, c.hidden), "decoder_hidden_size", c.dec_hidden)
    expect("decoder.blocks.0.mlp.fc1.weight", (c.dec_inter, c.dec_hidden), "decoder_intermediate_size", c.dec_inter)
    expect("decoder.head.weight", (c.channels * c.tubelet * c.patch**2, c.dec_hidden), "patch_size", c.patch)
    if c.classifier:
        expect("head.weight", (c.classes, c.hidden), "id2label/num_labels", c.classes)
    for prefix, field, depth in (("blocks.", "num_hidden_layers", c.depth),
                                 ("decoder.blocks.", "decoder_num_hidden_layers", c.dec_depth)):
        found = {k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)}
        if found and len(found) != depth:
            raise ValueError(f"{source}: {field} {depth} does not match the weights ({len(found)} blocks under "
                             f"{prefix!r})")


def task_of(config, task: str | None = None) -> str:
    """'pretrain' or 'classifier': `task` when given, else from `architectures`."""
    if task is not None:
        if task not in ("pretrain", "classifier"):
            raise ValueError(f"task must be 'pretrain' or 'classifier', got {task!r}")
        return task
    archs = as_dict(config).get("architectures") or []
    found = {TASKS[a] for a in archs if a in TASKS}
    if len(found) != 1:
        raise ValueError(f"cannot tell the task from architectures={archs}: pass task='pretrain' or 'classifier'")
    return found.pop()


def model_kwargs(config, task: str) -> dict:
    """Constructor arguments of our model class for a checked config (`check_hf_config`)."""
    config = as_dict(config)
    c = _Sizes(config)
    common = dict(
        img_size=c.image, patch_size=c.patch, num_frames=c.frames, tubelet_size=c.tubelet, in_chans=c.channels,
        mlp_ratio=c.inter / c.hidden,
        qkv_bias=config.get("qv_bias", config.get("qkv_bias", True)),  # renamed in newer transformers
        norm_eps=config.get("layer_norm_eps", 1e-12), drop_rate=config.get("hidden_dropout_prob", 0.0),
        attn_drop_rate=config.get("attention_probs_dropout_prob", 0.0),
    )
    if task == "pretrain":
        if int(c.dec_hidden * c.inter / c.hidden) != c.dec_inter:
            raise ValueError("HF decoder_intermediate_size / decoder_hidden_size must equal the encoder's MLP ratio")
        return dict(common, encoder_embed_dim=c.hidden, encoder_depth=c.depth, encoder_num_heads=c.heads,
                    decoder_embed_dim=c.dec_hidden, decoder_depth=c.dec_depth, decoder_num_heads=c.dec_heads,
                    decoder_norm_eps=HF_FIXED_NORM_EPS, normalize_target=config.get("norm_pix_loss", True))
    # A pretraining config fine-tuned into a classifier: mean pooling, as official fine-tuning.
    if not config.get("use_mean_pooling", True) and "VideoMAEForPreTraining" not in (config.get("architectures") or []):
        raise ValueError("HF classifier with use_mean_pooling=False pools token 0 of a sequence with no class "
                         "token: not representable (ours mean-pools)")
    return dict(common, embed_dim=c.hidden, depth=c.depth, num_heads=c.heads, num_classes=c.classes,
                fc_norm_eps=HF_FIXED_NORM_EPS)


def model_from_hf_config(config, task: str | None = None, **overrides) -> nn.Module:
    """Our model that reproduces an HF VideoMAE config (a `VideoMAEConfig` or its config.json dict).

    task: "pretrain" (VideoMAEForPreTraining) or "classifier" (VideoMAEForVideoClassification); taken from
    `config.architectures` when not given. Overrides go to the model's constructor."""
    from videomae.models import PretrainVisionTransformer, VisionTransformer

    config = check_hf_config(config)
    task = task_of(config, task)
    kwargs = {**model_kwargs(config, task), **overrides}
    if task == "classifier":
        return VisionTransformer(**kwargs)
    model = PretrainVisionTransformer(**kwargs)
    if config.get("use_mean_pooling", True):  # transformers then builds the encoder without its final LayerNorm
        model.encoder.norm = nn.Identity()
    return model


def hf_config(model: nn.Module, names: list[str] | None = None) -> dict:
    """The transformers VideoMAEConfig (as a config.json dict) of one of our models; `names`: class names."""
    pretraining = hasattr(model, "encoder")
    enc = model.encoder if pretraining else model
    block = enc.blocks[0]
    config = {
        "model_type": "videomae", "image_size": enc.grid[1] * enc.patch_embed.patch_size,
        "patch_size": enc.patch_embed.patch_size, "num_channels": enc.patch_embed.proj.weight.shape[1],
        "num_frames": enc.grid[0] * enc.patch_embed.tubelet_size, "tubelet_size": enc.patch_embed.tubelet_size,
        "hidden_size": enc.patch_embed.proj.weight.shape[0], "num_hidden_layers": len(enc.blocks),
        "num_attention_heads": block.attn.num_heads, "intermediate_size": block.mlp.fc1.out_features,
        "hidden_act": "gelu", "qkv_bias": True, "layer_norm_eps": block.norm1.eps, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    if pretraining:
        dec = model.decoder
        config.update(
            architectures=["VideoMAEForPreTraining"], use_mean_pooling=isinstance(enc.norm, nn.Identity),
            decoder_hidden_size=dec.head.in_features, decoder_num_hidden_layers=len(dec.blocks),
            decoder_num_attention_heads=dec.blocks[0].attn.num_heads if len(dec.blocks) else 1,
            decoder_intermediate_size=dec.blocks[0].mlp.fc1.out_features if len(dec.blocks) else 0,
            norm_pix_loss=bool(model.normalize_target))
    else:
        names = names or [str(i) for i in range(model.num_classes)]
        config.update(architectures=["VideoMAEForVideoClassification"], use_mean_pooling=True,
                      id2label={str(i): n for i, n in enumerate(names)},
                      label2id={n: i for i, n in enumerate(names)})
    return config


def preprocessor_config(size: int, num_frames: int, mean, std) -> dict:
    """`preprocessor_config.json` of a model that takes `num_frames` frames of `size`^2 pixels, normalized with
    `mean`/`std`: the short side resized to `size` (bilinear), a center crop, as `videomae predict` and the official
    evaluation crop. transformers' `VideoMAEImageProcessor` and its video processor read it."""
    return {
        "image_processor_type": "VideoMAEImageProcessor", "video_processor_type": "VideoMAEVideoProcessor",
        "do_resize": True, "size": {"shortest_edge": size}, "resample": 2,
        "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [float(x) for x in mean],
        "image_std": [float(x) for x in std], "num_frames": num_frames,
    }
