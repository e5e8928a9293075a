"""MAE-ST (facebookresearch/mae_st) -> the official VideoMAE layout, as far as it maps exactly.

What maps exactly: the cube embedding, every encoder block (`q`/`k`/`v` fused into `qkv`; the k bias is
dropped, which is exact because it adds the same score to every key of a query and cancels in softmax),
the encoder norm, and the positional embedding (a full table, or the separable spatial + temporal
tables summed into one: `spatial.repeat(T) + temporal.repeat_interleave(H*W)`, as MAE-ST adds them).
A fine-tuned model's `norm` (applied after pooling) becomes `fc_norm` and its `head` is kept.

What cannot be represented, and is reported as such: a class token (it takes part in attention),
MAE-ST's classifier pooling (it averages tokens `1:`, i.e. without the class token or, when there is
none, without the first patch), and the MAE-ST decoder (biased `decoder_embed`, learnable decoder
positions, unshuffled token order, optional class token).
"""

from __future__ import annotations

import re

import torch

_DECODER = ("decoder_", "mask_token")


def is_mae_st_state_dict(sd: dict) -> bool:
    return any(
        k.startswith(("pos_embed_spatial", "decoder_embed.", "decoder_blocks.", "decoder_pred."))
        or re.fullmatch(r"blocks\.\d+\.attn\.q\.weight", k)
        for k in sd
    )


def mae_st_to_official(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]], list[str]]:
    """-> (official-layout state dict, [(dropped key, why)], [why the source's outputs are not reproduced])"""
    classifier = "head.weight" in sd and not any(k.startswith(_DECODER) for k in sd)
    out: dict[str, torch.Tensor] = {}
    dropped: list[tuple[str, str]] = []
    inexact: list[str] = []
    for key, value in sd.items():
        m = re.fullmatch(r"blocks\.(\d+)\.attn\.([qkv])\.(weight|bias)", key)
        if m:
            if m.group(2) == "k" and m.group(3) == "bias":
                dropped.append((key, "k bias cancels in softmax (exact)"))
            elif m.group(3) == "bias":
                out[f"encoder.blocks.{m.group(1)}.attn.{m.group(2)}_bias"] = value
            continue  # weights are fused below
        if key.startswith(("patch_embed.", "blocks.")):
            out["encoder." + key] = value
        elif key.startswith("norm."):
            out[("fc_norm." if classifier else "encoder.norm.") + key[len("norm."):]] = value
        elif key.startswith("head."):
            out[key] = value
        elif key == "pos_embed":
            out["encoder.pos_embed"] = value  # a leading class position is removed by the loader
        elif key in ("pos_embed_spatial", "pos_embed_temporal"):
            continue
        elif key in ("cls_token", "pos_embed_class"):
            dropped.append((key, "class token: not representable"))
            if key == "cls_token":
                inexact.append("MAE-ST class token dropped: it takes part in attention, so features differ")
        elif key.startswith(_DECODER):
            dropped.append((key, "MAE-ST decoder: not representable"))
        else:
            out[key] = value  # reported as unexpected by the loader
    if "pos_embed_spatial" in sd:
        spatial, temporal = sd["pos_embed_spatial"], sd["pos_embed_temporal"]
        out["encoder.pos_embed"] = spatial.repeat(1, temporal.shape[1], 1) + torch.repeat_interleave(
            temporal, spatial.shape[1], dim=1
        )
    for i in sorted({int(k.split(".")[1]) for k in sd if re.fullmatch(r"blocks\.\d+\.attn\.q\.weight", k)}):
        w = [sd[f"blocks.{i}.attn.{n}.weight"] for n in "qkv"]
        out[f"encoder.blocks.{i}.attn.qkv.weight"] = torch.cat(w, dim=0)
    if any(k.startswith(_DECODER) for k in sd):
        inexact.append("MAE-ST decoder not loaded (biased decoder_embed, learnable decoder positions, unshuffled "
                       "order): pretraining predictions differ; the encoder maps exactly")
    if classifier:
        inexact.append("MAE-ST classifier pools tokens 1: (not the first patch / class token); ours averages "
                       "all tokens: logits differ")
    return out, dropped, inexact
