"""AdamW with the official parameter groups: weight-decay exclusions and fine-tuning layer decay."""

from __future__ import annotations

import torch
from torch import nn


def skip_weight_decay(name: str, param: torch.Tensor, skip: set[str]) -> bool:
    """Official rule: no decay on 1-D params (norms, q/v biases), `.bias`, and the model's skip list
    (mask token, learnable position embeddings)."""
    return param.ndim <= 1 or name.endswith(".bias") or name in skip


def vit_layer_id(name: str, num_layers: int) -> int:
    """Official `get_layer_id_for_vit` for a depth-`num_layers` classifier: tokens and patch embedding
    0, block i -> i + 1, everything else (fc_norm, head) -> num_layers + 1."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def layer_scales(layer_decay: float, num_layers: int) -> list[float]:
    """`ld ** (L + 1 - id)` for id in 0..L+1."""
    return [layer_decay ** (num_layers + 1 - i) for i in range(num_layers + 2)]


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Groups keyed by (decay, layer id); each group carries `lr_scale` that the schedule multiplies in.

    layer_decay applies to classifiers with `blocks` (fine-tuning); None or 1.0 gives one scale."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    use_ld = layer_decay is not None and layer_decay != 1.0
    num_layers = len(model.blocks) if use_ld else 0
    scales = layer_scales(layer_decay, num_layers) if use_ld else None
    groups: dict[tuple[str, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = "no_decay" if skip_weight_decay(name, p, skip) else "decay"
        layer = vit_layer_id(name, num_layers) if use_ld else 0
        group = groups.setdefault((decay, layer), {
            "params": [], "names": [], "weight_decay": 0.0 if decay == "no_decay" else weight_decay,
            "lr_scale": scales[layer] if use_ld else 1.0,
        })
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8,
                    layer_decay: float | None = None, device: str = "cpu") -> torch.optim.Optimizer:
    """AdamW over `param_groups`; the fused kernel on CUDA (one launch for all parameters)."""
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g.pop("names")  # optimizer state dicts must stay plain tensors and numbers
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)
