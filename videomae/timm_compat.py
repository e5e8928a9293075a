"""Registration of our factories with timm's model registry.

Importing timm costs seconds, so `import videomae` never imports it: it registers at once when timm is
already imported, and otherwise leaves a finder on `sys.meta_path` that registers right after timm's
own import completes, whichever comes first. Classifiers register as `videomae_vit_*` because timm's
own image ViTs own the plain `vit_*` names; pretraining models keep their names.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
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
