"""Attention backends on the CPU: agreement with an fp64 reference, dispatch and its explanations, the switch
(`use_backend(attention=...)` and VIDEOMAE_ATTN), the per-shape choice cache, dropout, determinism, torch.compile.
CUDA-only backends (flash-attn, cuDNN, efficient, xformers) are checked for their refusal reasons here and
timed by `videomae.attention_tune` from the benchmark."""

from __future__ import annotations

import importlib

import pytest
import torch

import videomae.attention as A
from videomae import attention_tune, dispatch
from videomae.dispatch import use_backend
from videomae.layers.attention import Attention
from videomae.layers.block import Block

CPU_BACKENDS = ("eager", "sdpa-math", "sdpa-flash", "sdpa-default")


@pytest.fixture(autouse=True)
def _restore_switch():
    """The switch as it was (None: the env var decides) and the table, with no cached choice left behind."""
    prev, table = dispatch._SWITCH["attention"], dict(A.PRIORITY)
    yield
    dispatch._SWITCH["attention"] = prev
    A.PRIORITY.clear()
    A.PRIORITY.update(table)
    dispatch.clear_cache()


def qkv(b, h, n, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


def rel(x, ref):
    """||x - ref|| / ||ref||; an all-zero ref (q, k grads when N = 1: softmax over one key) must be met to 1e-6."""
    return ((x.double() - ref).norm() / ref.norm().clamp_min(1e-1)).item()


@pytest.mark.parametrize("shape", [(2, 3, 37, 64), (1, 2, 160, 32), (2, 1, 1, 16), (1, 6, 300, 64)])
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_fp32_forward_backward_match_fp64_reference(name, shape):
    torch.manual_seed(0)  # the output gradient below: the same draw whatever ran before
    q, k, v = (t.requires_grad_() for t in qkv(*shape))
    scale = shape[-1] ** -0.5
    out = A.BACKENDS[name](q, k, v, scale, 0.0)
    grad = torch.randn_like(out)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = A.eager_attention(q64, k64, v64, scale)
    ref.backward(grad.double())
    assert out.shape == shape and out.dtype == torch.float32
    # fp32 softmax-attention lands near 1e-7; 1e-5 leaves room for the backends' different summation orders.
    assert rel(out, ref) < 1e-5
    for t, t64 in ((q, q64), (k, k64), (v, v64)):
        assert rel(t.grad, t64.grad) < 1e-5


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_fewer_queries_than_keys(name):
    """The decoder's last block asks only for the decoded tokens' rows: a query's output and its share of the k, v
    gradients do not depend on the other queries, so they are the last rows of full attention (fp64 reference)."""
    torch.manual_seed(0)
    q, k, v = (t.requires_grad_() for t in qkv(2, 3, 37, 64))
    scale = 64**-0.5
    out = A.BACKENDS[name](q[:, :, -29:], k, v, scale, 0.0)
    grad = torch.randn_like(out)
    out.backward(grad)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = A.eager_attention(q64, k64, v64, scale)
    ref.backward(torch.cat((torch.zeros(2, 3, 8, 64, dtype=torch.float64), grad.double()), 2))
    assert out.shape == (2, 3, 29, 64)
    assert rel(out, ref[:, :, -29:]) < 1e-5
    for t, t64 in ((q, q64), (k, k64), (v, v64)):
        assert rel(t.grad, t64.grad) < 1e-5
    assert not q.grad[:, :, :8].any()


@pytest.mark.parametrize("name", ["sdpa-math", "sdpa-flash", "sdpa-default"])
def test_bf16_error_at_most_twice_eager_error(name):
    """flash-attention's rule: a backend's error against fp64 is at most 2x PyTorch eager's in the same dtype."""
    q, k, v = qkv(2, 4, 200, 64, torch.bfloat16, seed=1)
    scale = 64**-0.5
    ref = A.eager_attention(q.double(), k.double(), v.double(), scale)
    err_eager = rel(A.eager_attention(q, k, v, scale), ref)
    err = rel(A.BACKENDS[name](q, k, v, scale, 0.0), ref)
    assert 1e-4 < err_eager < 2e-2  # really bf16 arithmetic, and sane
    assert err <= 2 * err_eager + 1e-6


def test_dispatch_picks_per_device_dtype_and_dropout():
    q, k, v = qkv(1, 2, 16, 64)
    assert A.select_backend(q, k, v, name="auto").name == "sdpa-flash"  # CPU table: the tiled kernel first
    # The CPU flash kernel has no dropout: auto falls back to math, a forced flash explains itself.
    assert A.select_backend(q, k, v, 0.1, name="auto").name == "sdpa-math"
    with pytest.raises(A.AttentionNotSupported, match="dropout"):
        A.select_backend(q, k, v, 0.1, name="sdpa-flash")
    # Head dim not a multiple of 8: flash refuses, auto still runs something exact.
    q5, k5, v5 = qkv(1, 2, 16, 20)
    assert "head dim 20" in " ".join(A.BACKENDS["sdpa-flash"].reasons(q5, k5, v5))
    assert A.select_backend(q5, k5, v5, name="auto").name == "sdpa-math"
    assert A.select_backend(q, k, v, name="sdpa").name.startswith("sdpa")


@pytest.mark.parametrize("name", ["flash-attn", "sdpa-cudnn", "sdpa-efficient", "xformers"])
def test_forced_cuda_backend_on_cpu_raises_listing_reasons(name):
    q, k, v = qkv(1, 2, 16, 64)
    with use_backend(attention=name), pytest.raises(A.AttentionNotSupported, match=f"'{name}' cannot run") as e:
        A.scaled_dot_product_attention(q, k, v, 0.125)
    assert "device cpu not in ['cuda']" in str(e.value)


def test_package_backends_report_missing_packages():
    b = A.BACKENDS["flash-attn"]
    if b._fa2 is None and b._fa3 is None:
        assert "flash_attn" in b.unavailable_reasons()[0]
    if A.BACKENDS["xformers"]._fn is None:
        assert "xformers" in A.BACKENDS["xformers"].unavailable_reasons()[0]


def test_wrong_dtype_and_mixed_dtypes_are_reasons():
    q, k, v = qkv(1, 2, 16, 64)
    reasons = A.BACKENDS["sdpa-flash"].reasons(q, k.double(), v)
    assert any("dtypes differ" in r for r in reasons)
    with pytest.raises(ValueError, match="attention must be one of"), use_backend(attention="flash3000"):
        pass


def test_switch_by_context_manager(monkeypatch):
    monkeypatch.delenv(A.ENV, raising=False)
    q, k, v = qkv(1, 2, 16, 64)
    with use_backend(attention="eager"):
        assert dispatch.forced("attention") == "eager"
        assert A.select_backend(q, k, v).name == "eager"
        with use_backend(attention="sdpa_math"):  # underscores accepted; a block inside a block
            assert A.select_backend(q, k, v).name == "sdpa-math"
        assert dispatch.forced("attention") == "eager"
    assert dispatch.forced("attention") == "auto" and A.select_backend(q, k, v).name == "sdpa-flash"
    with pytest.raises(RuntimeError, match="boom"), use_backend(attention="eager"):
        raise RuntimeError("boom")
    assert dispatch.forced("attention") == "auto"  # restored when the block raises too


def test_switch_by_env_var(monkeypatch):
    monkeypatch.setenv(A.ENV, "sdpa-math")
    try:
        mod = importlib.reload(A)
        assert dispatch.forced("attention") == "sdpa-math"
        q, k, v = qkv(1, 2, 16, 64)
        assert mod.select_backend(q, k, v).name == "sdpa-math"
        # The layers hold the old module's function object; the switch lives in videomae.dispatch, so it
        # dispatches the same way.
        from videomae.layers import attention as layer_mod

        assert layer_mod.scaled_dot_product_attention.__globals__["select_backend"](q, k, v).name == "sdpa-math"
    finally:
        monkeypatch.delenv(A.ENV)
        importlib.reload(A)
    assert dispatch.forced("attention") == "auto"


def test_dropout_path_shapes_and_randomness():
    q, k, v = qkv(2, 3, 50, 32)
    for name in ("eager", "sdpa-math", "auto"):
        with use_backend(attention=name):
            torch.manual_seed(0)
            a = A.scaled_dot_product_attention(q, k, v, 0.2, dropout_p=0.5)
            torch.manual_seed(1)
            b = A.scaled_dot_product_attention(q, k, v, 0.2, dropout_p=0.5)
        assert a.shape == q.shape and torch.isfinite(a).all()
        assert not torch.equal(a, b)  # different seeds drop different weights
    # Expected value is preserved: the mean over many dropout draws approaches the no-dropout output.
    torch.manual_seed(0)
    q, k, v = (t[:1, :1, :20] for t in (q, k, v))
    with use_backend(attention="sdpa-math"):
        mean = torch.stack([A.scaled_dot_product_attention(q, k, v, 0.2, dropout_p=0.3) for _ in range(400)]).mean(0)
    assert rel(mean, A.eager_attention(q, k, v, 0.2).double()) < 0.05


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_bitwise_deterministic(name):
    q, k, v = qkv(2, 3, 77, 64, seed=3)
    assert torch.equal(A.BACKENDS[name](q, k, v, 0.1, 0.0), A.BACKENDS[name](q, k, v, 0.1, 0.0))


def test_attention_layer_same_under_every_backend():
    """The official fused qkv (q_bias, zero k bias, v_bias) feeds every backend the same q, k, v."""
    torch.manual_seed(0)
    layer = Attention(64, 4).eval()
    torch.nn.init.normal_(layer.q_bias)
    torch.nn.init.normal_(layer.v_bias)
    x = torch.randn(2, 33, 64)
    with use_backend(attention="eager"):
        ref = layer(x)
    for name in ("sdpa-math", "sdpa-flash", "auto", "sdpa"):
        with use_backend(attention=name):
            torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-6)


def test_torch_compile_fullgraph():
    """Dispatch is plain Python on shapes and dtypes, and sdpa_kernel is traceable: no graph break."""
    torch.manual_seed(0)
    layer = Attention(64, 4).eval()
    x = torch.randn(2, 40, 64)
    with use_backend(attention="eager"):
        ref = layer(x)
    with use_backend(attention="auto"):
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), ref, rtol=1e-5, atol=1e-6)


def test_block_compiles_fullgraph_with_zero_graph_breaks():
    """Under `auto` the choice is made at trace time on static shapes: one graph, no break, eager's output."""
    torch.manual_seed(0)
    block = Block(64, 4).eval()
    x = torch.randn(2, 40, 64)
    ref = block(x)
    torch._dynamo.reset()
    explain = torch._dynamo.explain(block)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ref, rtol=1e-5, atol=1e-6)


def test_compiled_choice_is_a_constant_until_the_switch_changes():
    """One graph for repeated calls (no guard on the dispatcher's caches); a new switch recompiles, and runs."""
    torch.manual_seed(0)
    block = Block(64, 4).eval()
    x = torch.randn(2, 40, 64)
    graphs = []

    def count(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=count)
    for _ in range(3):
        compiled(x)
    assert len(graphs) == 1
    ran = lambda gm: {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}  # noqa: E731
    assert any("scaled_dot_product" in t for t in ran(graphs[0]))  # auto on CPU: the SDPA flash kernel
    with use_backend(attention="eager"):
        torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-6)
    assert len(graphs) == 2 and not any("scaled_dot_product" in t for t in ran(graphs[1]))


def _misses():
    return dispatch.cache_info()["misses"]


def test_auto_choice_is_cached_per_shape_dtype_and_dropout():
    q, k, v = qkv(1, 2, 16, 64)
    dispatch.clear_cache()
    before = _misses()
    for _ in range(5):
        assert A.select_backend(q, k, v).name == "sdpa-flash"
    assert _misses() == before + 1  # one walk of the table, then hits
    hits = dispatch.cache_info()["hits"]
    A.scaled_dot_product_attention(q, k, v, 0.125)
    assert dispatch.cache_info()["hits"] == hits + 1 and _misses() == before + 1
    # New shape, new dtype, dropout on: each walks once; the dropout value itself does not matter.
    q2, k2, v2 = qkv(1, 2, 24, 64)
    assert A.select_backend(q2, k2, v2).name == "sdpa-flash"
    assert A.select_backend(q.double(), k.double(), v.double()).name == "sdpa-flash"
    assert A.select_backend(q, k, v, 0.1).name == "sdpa-math"
    assert A.select_backend(q, k, v, 0.3).name == "sdpa-math"
    assert _misses() == before + 4
    # A non-contiguous last dim is its own key: flash refuses it.
    qt = q.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert A.select_backend(qt, k, v).name == "sdpa-math"


def test_cache_is_invalidated_by_the_switch_and_the_table():
    q, k, v = qkv(1, 2, 16, 64)
    assert A.select_backend(q, k, v).name == "sdpa-flash"
    with use_backend(attention="eager"):
        assert dispatch.cache_info()["size"] == 0
        assert A.select_backend(q, k, v).name == "eager"
        with use_backend(attention="sdpa-math"):
            assert dispatch.cache_info()["size"] == 0
            assert A.select_backend(q, k, v).name == "sdpa-math"
        assert dispatch.cache_info()["size"] == 0
        assert A.select_backend(q, k, v).name == "eager"
    assert A.select_backend(q, k, v).name == "sdpa-flash"
    dispatch.set_priority(dispatch.priority_key("attention", {"q": q}), ["eager", "sdpa-flash"])
    assert A.select_backend(q, k, v).name == "eager"  # a freshly installed order takes effect at once


def test_env_var_read_at_each_call_and_explicit_switch_wins(monkeypatch):
    q, k, v = qkv(1, 2, 16, 64)
    monkeypatch.setenv(A.ENV, "eager")
    assert dispatch.forced("attention") == "eager" and A.select_backend(q, k, v).name == "eager"
    monkeypatch.setenv(A.ENV, "SDPA_Math")
    assert A.select_backend(q, k, v).name == "sdpa-math"
    with use_backend(attention="sdpa-flash"):
        assert A.select_backend(q, k, v).name == "sdpa-flash"
    assert A.select_backend(q, k, v).name == "sdpa-math"
    monkeypatch.setenv(A.ENV, "flash3000")
    with pytest.raises(ValueError, match=A.ENV):
        A.select_backend(q, k, v)


def test_auto_with_no_runnable_backend_lists_every_reason():
    q = torch.randn(2, 16, 64)  # not [B, H, N, d]
    with pytest.raises(A.AttentionNotSupported, match="no attention backend can run attention") as e:
        A.select_backend(q, q, q)
    for name in A.priority(q):
        assert f"{name}: " in str(e.value) and "not [B, H, N, d]" in str(e.value)
    assert A.AttentionNotSupported is dispatch.NotSupportedError


def test_forward_path_does_not_import_the_tuner():
    """The timing helpers live in videomae.attention_tune; importing the model's attention never loads it."""
    import subprocess
    import sys

    code = ("import sys, torch, videomae.attention as A; from videomae.layers.block import Block;"
            "Block(32, 2)(torch.randn(1, 5, 32)); print('videomae.attention_tune' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert not hasattr(A, "tune")  # no forwarding shim: the timers live in attention_tune only


def test_tune_installs_measured_order():
    q, k, v = qkv(1, 2, 64, 32)
    ms = attention_tune.tune(q, k, v, reps=2)
    assert set(ms) == {"eager", "sdpa-math", "sdpa-flash"}  # what can run here (sdpa-default excluded)
    assert all(t > 0 for t in ms.values())
    order = A.priority(q)
    assert order[:3] == sorted(ms, key=ms.get)


def test_reference_errors_rehearse_the_gpu_check():
    """The GPU test's helper on CPU: fp32 backends against fp64 (output and q/k/v grads), bf16 eager visibly worse."""
    q, k, v = qkv(2, 3, 40, 32, seed=4)
    for name in ("eager", "sdpa-math", "sdpa-flash"):
        err = attention_tune.reference_errors(name, q, k, v, 32**-0.5)
        assert set(err) == {"out", "dq", "dk", "dv"} and max(err.values()) < 1e-5, (name, err)
    bf16 = attention_tune.reference_errors("eager", *(t.bfloat16() for t in (q, k, v)), 32**-0.5)
    assert 1e-4 < bf16["out"] < 2e-2


def test_backend_report_lists_every_backend():
    r = A.backend_report("cpu", torch.float32)
    assert set(r["backends"]) == set(A.BACKENDS)
    assert r["auto"] == {"encoder": "sdpa-flash", "decoder": "sdpa-flash"}
    assert r["backends"]["sdpa-cudnn"]["decoder"]["available"] is False
    assert r["backends"]["eager"]["encoder"] == {"available": True, "reasons": []}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(4, 12, 160, 64), (2, 6, 1568, 64), (2, 16, 208, 88), (1, 3, 37, 64)])
def test_cuda_backends_within_twice_eager_error(shape, dtype):
    """Every backend that can run here: output and gradients within 2x eager's own error (flash-attn rule)."""
    q, k, v = (t.cuda() for t in qkv(*shape, dtype=dtype))
    scale = shape[-1] ** -0.5
    eager = attention_tune.reference_errors("eager", q, k, v, scale)
    ran = []
    for name, b in A.BACKENDS.items():
        if b.reasons(q, k, v):
            continue
        err = attention_tune.reference_errors(name, q, k, v, scale)
        for key, e in err.items():
            assert e <= 2 * eager[key] + 1e-4, f"{name} {key}: {e:.2e} vs eager {eager[key]:.2e}"
        ran.append(name)
    assert {"sdpa-math", "sdpa-efficient"} <= set(ran)
