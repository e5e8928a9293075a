"""Registration of our factories with timm's model registry.

Importing timm costs seconds, so `import videomae` registers only when timm is already imported;
otherwise call `videomae.register_timm_models()`. Classifiers register as `videomae_vit_*` because
timm's own image ViTs own the plain `vit_*` names; pretraining models keep their names.
"""

from __future__ import annotations

import sys
import types

from videomae.registry import create_model, list_models

_registered: list[str] = []


def timm_name(name: str) -> str:
    return name if name.startswith("pretrain_") else f"videomae_{name}"


def _entrypoint(name: str, module_name: str):
    def fn(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **overrides):
        if pretrained:
            raise ValueError(
                f"{timm_name(name)}: pretrained=True is not supported (no hub downloads); build the model and "
                "load official weights with videomae.load_checkpoint(model, path)"
            )
        return create_model(name, **overrides)

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
    sys.modules.setdefault(module_name, types.ModuleType(module_name))
    for name in list_models():
        register_model(_entrypoint(name, module_name))
        _registered.append(timm_name(name))
    return list(_registered)


def register_if_timm_imported() -> None:
    if "timm" in sys.modules:
        register_timm_models()
