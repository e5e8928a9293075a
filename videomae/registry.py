"""timm-style model registry: `@register_model` factories, `create_model(name, **overrides)`."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    import fnmatch

    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; keyword overrides replace the factory's defaults
    (`num_frames`, `img_size`, `tubelet_size`, `decoder_depth`, `num_classes`, `drop_path_rate`,
    `init_values`, `use_checkpoint`, `use_learnable_pos_emb`, ...)."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; available: {', '.join(list_models())}"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _MODELS[name](**overrides)
