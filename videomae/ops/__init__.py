"""Fused VideoMAE ops with per-call backend dispatch: `cube_embed`, `decoder_input`, `norm_pix_mse`.

One module per op (`videomae/ops/<op>.py`): the public function, its reference `<op>_ref`, fake kernel and
autograd glue. Backends supply only kernels; which one runs is `videomae.dispatch` (the one dispatcher, shared
with attention; its docstring says how to force one: `with use_backend(name):` or `VIDEOMAE_BACKEND`):
- `torch`:  eager torch, any device (`torch_backend.py`): the ops' references, the unfused path.
- `triton`: the Triton kernels of `kernels/`, installed as `videomae.kernels` (CUDA; CPU under `TRITON_INTERPRET=1`).
- `cuda`:   the compiled extension `videomae._C`, registered by `cuda_backend.py` when present.

The ops take masks in index form (`videomae.masking.TokenIds`: int64 ids, made and validated on the CPU by
`masking.token_ids`), so every shape is static and a step never waits on the host. Bad input is one ValueError
naming the argument, raised before dispatch by `_checks.py` (the same for every backend); every kernel stays
inside its buffers whatever the ids hold.

Torch op names: backend `X` owns `videomae::{op}_X` and `videomae::{op}_X_backward` for each op, e.g.
`videomae::cube_embed_torch`, `videomae::norm_pix_mse_triton_backward`, `videomae::decoder_input_cuda`;
schemas in `library.SCHEMAS` (the one table), fake kernels and autograd registered by
`library.register_fakes_and_autograd`.

Adding a backend `X` (how `cuda_backend.py` plugs in): define the six ops `videomae::{op}_X[_backward]` with
the schemas of `library.SCHEMAS` (Python: `library.define_ops("X", impls)`; C++: kernels under
`TORCH_LIBRARY_IMPL` only, the schemas defined from `SCHEMAS` by `cuda_backend.define_schemas()`, then
`library.register_fakes_and_autograd("X")`), subclass `videomae.dispatch.Backend` (name, devices, dtypes,
min_compute_capability, `not_supported_reasons`) and call `register_backend(XBackend())`; this package imports
`videomae/ops/X_backend.py` for X in (triton, cuda), and an import error becomes a reason in `backend_report()`.
"""

from __future__ import annotations

import importlib
import importlib.util

from videomae.dispatch import (
    Backend,
    NotSupportedError,
    TorchBackend,
    backend_report,
    mark_broken,
    register_backend,
    select,
    use_backend,
)

from .add_layer_norm import add_layer_norm, add_layer_norm_ref
from .cube_embed import cube_embed, cube_embed_ref
from .decoder_input import decoder_input, decoder_input_ref
from .norm_pix_mse import norm_pix_mse, norm_pix_mse_ref, pixel_loss, pixel_targets

__all__ = [
    "Backend",
    "NotSupportedError",
    "add_layer_norm",
    "add_layer_norm_ref",
    "backend_report",
    "cube_embed",
    "cube_embed_ref",
    "decoder_input",
    "decoder_input_ref",
    "norm_pix_mse",
    "norm_pix_mse_ref",
    "pixel_loss",
    "pixel_targets",
    "register_backend",
    "select",
    "use_backend",
]

importlib.import_module("videomae.ops.torch_backend")  # defines the videomae::*_torch ops
register_backend(TorchBackend())

for _name in ("triton", "cuda"):
    if importlib.util.find_spec(f"videomae.ops.{_name}_backend") is None:
        mark_broken(_name, f"videomae.ops.{_name}_backend not installed")
        continue
    try:  # the module calls register_backend itself
        importlib.import_module(f"videomae.ops.{_name}_backend")
    except Exception as e:  # noqa: BLE001  (any import failure is a reason, not a crash)
        mark_broken(_name, f"import failed: {type(e).__name__}: {e}")
