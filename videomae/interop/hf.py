"""Hugging Face transformers VideoMAE <-> the official layout (which our models use).

HF splits attention into `query`/`key`/`value` Linears; the official layout fuses them into
`qkv.weight [3D, D]` with `q_bias`/`v_bias` (HF's key has no bias, as the official zero k bias).
Older transformers stored `attention.attention.{q_bias,v_bias}`, newer ones `{query,value}.bias`.

HF model differences that change numbers: blocks use `config.layer_norm_eps` (default 1e-12),
`decoder.norm` and the classifier's `fc_norm` are built with eps 1e-5 whatever the config says;
input is `[B, T, C, H, W]`. `videomae.checkpoint.model_from_hf_config` sets all of these on our models.
Pure state-dict mappings: nothing here builds a model or reads a file.
"""

from __future__ import annotations

import re

import torch

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


def official_to_hf(sd: dict[str, torch.Tensor], layout: str = "new") -> dict[str, torch.Tensor]:
    """Our (official-layout) state dict -> HF keys. layout "new": `{query,value}.bias`; "old": `q_bias`/`v_bias`.

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
