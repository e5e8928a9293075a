"""Registration of our factories with timm's model registry.

Importing timm costs seconds, so `import videomae` never imports it: it registers at once when timm is
already imported, and otherwise leaves a finder on `sys.meta_path` that registers right after timm's
own import completes, whichever comes first. Classifiers register as `videomae_vit_*` because timm's
own image ViTs own the plain `vit_*` names; pretraining models keep their names.

`timm.create_model(name, pretrained=True)` loads the public weights its pretrained cfg names: the transformers
conversions of the official V1 checkpoints on the Hugging Face Hub (`MCG-NJU/videomae-*`), fetched through
huggingface_hub and built from their config.json (`videomae.interop.pretrained`). Tags pick one, e.g.
`videomae_vit_base_patch16_224.ssv2_ft`; `timm.list_pretrained("*videomae*")` lists them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types

from videomae.registry import create_model, list_models

_registered: list[str] = []

# timm name.tag -> (Hub id, classes). Official VideoMAE V1 weights as transformers converted them (MCG-NJU on the
# Hub; "800ep": the shorter 800-epoch pretraining the paper also reports). The first tag of a name is its default.
HUB_WEIGHTS = {
    "pretrain_videomae_base_patch16_224.kinetics400": ("MCG-NJU/videomae-base", 0),
    "pretrain_videomae_base_patch16_224.kinetics400_800ep": ("MCG-NJU/videomae-base-short", 0),
    "pretrain_videomae_base_patch16_224.ssv2": ("MCG-NJU/videomae-base-ssv2", 0),
    "pretrain_videomae_base_patch16_224.ssv2_800ep": ("MCG-NJU/videomae-base-short-ssv2", 0),
    "pretrain_videomae_large_patch16_224.kinetics400": ("MCG-NJU/videomae-large", 0),
    "videomae_vit_small_patch16_224.kinetics400_ft": ("MCG-NJU/videomae-small-finetuned-kinetics", 400),
    "videomae_vit_small_patch16_224.ssv2_ft": ("MCG-NJU/videomae-small-finetuned-ssv2", 174),
    "videomae_vit_base_patch16_224.kinetics400_ft": ("MCG-NJU/videomae-base-finetuned-kinetics", 400),
    "videomae_vit_base_patch16_224.kinetics400_800ep_ft": ("MCG-NJU/videomae-base-short-finetuned-kinetics", 400),
    "videomae_vit_base_patch16_224.ssv2_ft": ("MCG-NJU/videomae-base-finetuned-ssv2", 174),
    "videomae_vit_base_patch16_224.ssv2_800ep_ft": ("MCG-NJU/videomae-base-short-finetuned-ssv2", 174),
    "videomae_vit_large_patch16_224.kinetics400_ft": ("MCG-NJU/videomae-large-finetuned-kinetics", 400),
    "videomae_vit_huge_patch16_224.kinetics400_ft": ("MCG-NJU/videomae-huge-finetuned-kinetics", 400),
}


def timm_name(name: str) -> str:
    return name if name.startswith("pretrain_") else f"videomae_{name}"


def _default_cfgs() -> dict:
    """timm's pretrained cfgs of our models (input: 16 frames of 224 x 224, ImageNet mean and std)."""
    from timm.models import generate_default_cfgs

    return generate_default_cfgs({
        key: {"hf_hub_id": hub_id, "num_classes": classes, "input_size": (3, 16, 224, 224),
              "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "license": "cc-by-nc-4.0"}
        for key, (hub_id, classes) in HUB_WEIGHTS.items()
    })


def _weights_id(name: str, pretrained_cfg, overlay) -> str:
    """The Hub id (or file) of the weights timm resolved for `name` (a tag, a cfg, or None: the default)."""
    from timm.models import get_pretrained_cfg

    cfg = pretrained_cfg
    if cfg is None or isinstance(cfg, str):
        cfg = get_pretrained_cfg(f"{name}.{cfg}" if cfg else name, allow_unregistered=True)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    cfg.update(overlay or {})
    found = cfg.get("hf_hub_id") or cfg.get("file")
    if not found:
        tags = sorted(k for k in HUB_WEIGHTS if k.startswith(name + "."))
        raise ValueError(f"{name}: no public weights" + (f" under that tag; tags: {', '.join(tags)}" if tags else
                                                          "; load a file with videomae.load_checkpoint(model, path)"))
    return found


def _entrypoint(name: str, module_name: str):
    def fn(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **overrides):
        if not pretrained:
            return create_model(name, **overrides)
        from videomae.checkpoint import load_checkpoint
        from videomae.interop.pretrained import build_for_weights

        weights = _weights_id(timm_name(name), pretrained_cfg, pretrained_cfg_overlay)
        if cache_dir is not None:
            from videomae.interop.hub import download

            weights = str(download(weights, cache_dir=cache_dir))
        # The weights' config.json sets the architecture; a given clip size or class count must agree with it /
        # replaces the head (a head of another class count is dropped and left at its initialization).
        model = build_for_weights(weights, name, given=set(overrides) | {"model"}, **overrides)
        load_checkpoint(model, weights)
        return model

    fn.__name__ = fn.__qualname__ = timm_name(name)
    fn.__module__ = module_name
    fn.__doc__ = f"videomae `{name}` (see videomae.create_model)."
    return fn


def register_timm_models() -> list[str]:
    """Register every videomae factory with timm; returns the timm names. Idempotent."""
    if _registered:
        return list(_registered)
    from timm.models import register_model

    # timm files each entrypoint under its defining module's last name: give ours a module of its own.
    module_name = "videomae.timm_models"
    module = sys.modules.setdefault(module_name, types.ModuleType(module_name))
    module.default_cfgs = _default_cfgs()  # read by timm's register_model: our pretrained tags
    for name in list_models():
        register_model(_entrypoint(name, module_name))
        _registered.append(timm_name(name))
    return list(_registered)


class _RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first `import timm` it wraps the real loader so our models are
    registered as soon as timm has finished importing, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)  # the real finders answer from here on (and no recursion into us)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return None
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            register_timm_models()

        spec.loader.exec_module = exec_module
        return spec


def register_if_timm_imported() -> None:
    """Register now if timm is imported, else as soon as it is (see the module docstring)."""
    if "timm" in sys.modules:
        register_timm_models()
    elif not any(isinstance(f, _RegisterAfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTimm())
