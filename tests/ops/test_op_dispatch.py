"""Dispatch of the ops: a forced backend lists every reason it cannot run a call, auto falls back quietly."""

import pytest
import torch

import videomae.ops as ops
from videomae.kernels._common import INTERPRET
from videomae.ops import dispatch
from videomae.ops import testing as T

CASE = T.Case(2, 4, 32, 48, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)


# ------------------------------------------------------------------------------------------------- dispatch


def test_forced_backend_lists_reasons():
    kw = T.cube_embed_inputs(CASE, torch.float64, grad=False)
    with ops.use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="'cuda' cannot run cube_embed"):
        ops.cube_embed(**kw)
    if "triton" in dispatch.registered():
        with ops.use_backend("triton"), pytest.raises(ops.NotSupportedError, match="dtype torch.float64"):
            ops.cube_embed(**kw)


def test_auto_falls_back_quietly():
    kw = T.cube_embed_inputs(CASE, torch.float64, grad=False)  # fp64: only the torch backend takes it
    assert dispatch.select("cube_embed", kw).name == "torch"
    assert ops.cube_embed(**kw).dtype == torch.float64
    fast = T.cube_embed_inputs(CASE, torch.float32, grad=False)
    assert dispatch.select("cube_embed", fast).name == ("triton" if INTERPRET else "torch")


def test_env_var_and_context(monkeypatch):
    kw = T.cube_embed_inputs(CASE, torch.float32, grad=False)
    monkeypatch.setenv(dispatch.ENV, "torch")
    assert dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(dispatch.ENV, "cuda")
    with pytest.raises(ops.NotSupportedError):
        ops.cube_embed(**kw)
    with ops.use_backend("torch"):  # the context manager wins over the environment
        assert dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(dispatch.ENV, "fast")
    with pytest.raises(ValueError, match=dispatch.ENV):
        ops.cube_embed(**kw)
    with pytest.raises(ValueError, match="backend must be one of"), ops.use_backend("fast"):
        pass
