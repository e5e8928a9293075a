"""AdamW with the official parameter groups: weight-decay exclusions and fine-tuning layer decay.

Layer decay is timm's `param_groups_layer_decay` over the model's `group_matcher` (the classifier's gives the
official ids: embedding 0, block i i + 1, the rest L + 1, so lr scale `ld ** (L + 1 - id)`); its groups equal the
official ones, scales, weight-decay sets and order (tests/test_train_units.py checks a hand-computed table).
Without layer decay the groups are ours: the official two groups in order of first appearance (pretraining
models: no-decay first, the mask token being their first parameter; classifiers: decay first). timm's
`param_groups_weight_decay` always puts no-decay first, and an optimizer state indexes its groups by position:
a classifier's state written in the official order would not load.
"""

from __future__ import annotations

import torch
from torch import nn


def skip_weight_decay(name: str, param: torch.Tensor, skip: set[str]) -> bool:
    """Official rule: no decay on 1-D params (norms, q/v biases), `.bias`, and the model's skip list
    (mask token, learnable position embeddings)."""
    return param.ndim <= 1 or name.endswith(".bias") or name in skip


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Groups of `params` (and their `names`), each with `weight_decay` and the `lr_scale` the schedule
    multiplies in. layer_decay (fine-tuning) needs a model with `group_matcher`; None or 1.0: one scale."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if layer_decay is not None and layer_decay != 1.0:
        if not hasattr(model, "group_matcher"):
            raise ValueError(f"layer decay {layer_decay} needs a model with layer ids (group_matcher); "
                             f"{type(model).__name__} has none")
        from timm.optim import param_groups_layer_decay

        groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=sorted(skip),
                                          layer_decay=layer_decay)
        name_of = {id(p): n for n, p in model.named_parameters()}
        return [{**g, "names": [name_of[id(p)] for p in g["params"]]} for g in groups]
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = "no_decay" if skip_weight_decay(name, p, skip) else "decay"
        group = groups.setdefault(decay, {"params": [], "names": [], "lr_scale": 1.0,
                                          "weight_decay": 0.0 if decay == "no_decay" else weight_decay})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())

