"""timm-style model registry: `@register_model` factories, `create_model(name, **overrides)`.

The factories register when `videomae.models` is imported; `list_models` and `create_model` import it on first use,
so that importing the registry (the command line does, for its checks) costs nothing.
"""

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


def _registered() -> dict[str, Callable[..., nn.Module]]:
    import videomae.models  # noqa: F401 - registers the factories

    return _MODELS


def list_models(pattern: str = "*") -> list[str]:
    import fnmatch

    _registered()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; keyword overrides replace the factory's defaults
    (`num_frames`, `img_size`, `tubelet_size`, `decoder_depth`, `num_classes`, `drop_path_rate`,
    `init_values`, `use_checkpoint`, `use_learnable_pos_emb`, ...)."""
    if name not in _registered():
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; available: {', '.join(list_models())}"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _MODELS[name](**overrides)
