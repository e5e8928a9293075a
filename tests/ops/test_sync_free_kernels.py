"""No backend kernel synchronizes with the host. A TorchDispatchMode cannot look inside a custom op (the op is
one call to it), so each backend's Python implementations are run directly here, forward and backward, V1 and
V2, under a mode that fails on every data-dependent aten op."""

import pytest
import torch
from op_helpers import BACKENDS, STATS
from torch.utils._python_dispatch import TorchDispatchMode

from videomae.ops import testing as T

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.nonzero, aten.masked_select, aten.unique_dim,
           aten._unique2, aten.equal}
BOOL_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.offenses = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        bool_index = packet in BOOL_INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ())
        if packet in SYNCING or bool_index:
            self.offenses.append(str(func))
        return func(*args, **(kwargs or {}))


def _impls(backend):
    if backend == "torch":
        from videomae.ops import torch_backend as mod
    else:
        from videomae.ops import triton_backend as mod
    return mod.IMPLS


def _inputs(v2):
    """Made outside the recorder: masks become ids on the CPU, where the loader makes them (that syncs)."""
    case = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)
    k = T.cube_embed_inputs(case, torch.float32, grad=False)
    d = {n: t.detach() for n, t in T.decoder_input_inputs(case, torch.float32, v2=v2).items()}
    p = T.norm_pix_mse_inputs(case, torch.float32, v2=v2)
    return case, k, d, p


def _run_all(impls, case, k, d, p):
    x = impls["cube_embed"](k["videos"], k["weight"], k["bias"], k["pos"], k["visible"], *STATS)
    impls["cube_embed_backward"](torch.ones_like(x), k["videos"], k["weight"], k["visible"], *STATS, [True] * 4)
    y = impls["decoder_input"](d["x_vis"], d["mask_token"], d["pos"], d["visible"], d["decoded"])
    impls["decoder_input_backward"](torch.ones_like(y), d["visible"], d["decoded"], case.tokens, True)
    cfg = (2, 16, True, "videomae", *STATS)
    pred = p["pred"].detach()
    loss = impls["norm_pix_mse"](pred, p["videos"], p["decoded"], p["scored"], *cfg)
    impls["norm_pix_mse_backward"](torch.ones_like(loss), pred, p["videos"], p["decoded"], p["scored"], *cfg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_kernels_never_sync(backend, v2):
    inputs = _inputs(v2)
    with Recorder() as rec:
        _run_all(_impls(backend), *inputs)
    assert rec.offenses == []


def test_recorder_catches_a_planted_sync():
    impls = dict(_impls("torch"))
    plain = impls["decoder_input"]
    impls["decoder_input"] = lambda x, *a: plain(x, *a) * (x.sum() > 0).item()
    inputs = _inputs(False)
    with Recorder() as rec:
        _run_all(impls, *inputs)
    assert rec.offenses
