"""bench/cost_kernels.py counts FLOPs and bytes per kernel and fuses the glue the way inductor does, and
bench/cost_model.py prices them: checked on small graphs whose kernels are worked out by hand (no timings)."""

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from bench import cost_kernels as K
from bench import cost_measure as M
from bench import cost_model as C

BF16, FP32 = 2, 4


def trace(fn, *shapes, dtype=torch.float32):
    return make_fx(fn, tracing_mode="fake")(*[torch.empty(s, dtype=dtype) for s in shapes])


def by_class(ks):
    out = {}
    for k in ks:
        out.setdefault(k.cls, []).append(k)
    return out


def test_matmul_flops_and_bytes():
    m, k, n = 64, 32, 48
    ks = K.kernels(trace(lambda a, b: a @ b, (m, k), (k, n), dtype=torch.bfloat16), "forward")
    (mm,) = ks
    assert mm.cls == "matmul" and mm.flops == 2 * m * n * k
    assert mm.bytes == (m * k + k * n + m * n) * BF16


def test_addmm_reads_the_bias():
    ks = K.kernels(trace(lambda x, w, b: F.linear(x, w, b), (10, 8), (6, 8), (6,)), "forward")
    (mm,) = [k for k in ks if k.cls == "matmul"]
    assert mm.flops == 2 * 10 * 6 * 8 and mm.bytes == (10 * 8 + 6 * 8 + 6 + 10 * 6) * FP32


def test_pointwise_chain_is_one_kernel():
    # y = exp(2x + 1): one kernel reading x once and writing y once.
    ks = K.kernels(trace(lambda x: (x * 2 + 1).exp(), (100, 30)), "forward")
    assert [k.cls for k in ks] == ["pointwise"] and ks[0].bytes == 2 * 100 * 30 * FP32


def test_no_fusion_across_a_matmul():
    # a = sin(x); m = a @ w; out = m + cos(a): sin and cos fuse (both read x's kernel output), the add cannot join
    # them (it waits for the matmul, which waits for sin): kernels {sin, cos} -> mm -> {add}.
    def fn(x, w):
        a = x.sin()
        return a @ w + a.cos()

    n, d = 16, 8
    ks = by_class(K.kernels(trace(fn, (n, d), (d, d)), "forward"))
    assert len(ks["matmul"]) == 1 and len(ks["pointwise"]) == 2
    first, second = sorted(ks["pointwise"], key=lambda k: k.bytes)
    # {sin, cos}: reads x, writes sin (for the matmul) and cos (for the add); {add}: reads m and cos, writes out.
    assert first.bytes == 3 * n * d * FP32 and second.bytes == 3 * n * d * FP32


def test_views_are_free_and_reduction_over_rows_fuses():
    # LayerNorm-like: mean over the last dim, subtract, transpose (a view) -> one reduction kernel.
    def fn(x):
        return (x - x.mean(-1, keepdim=True)).transpose(0, 1) * 3

    ks = K.kernels(trace(fn, (12, 20)), "forward")
    assert [k.cls for k in ks] == ["reduction"] and ks[0].bytes == 2 * 12 * 20 * FP32


def test_column_sum_is_its_own_kernel():
    # A bias gradient: sum over rows of a pointwise product -> the product's kernel writes it, the sum reads it.
    ks = K.kernels(trace(lambda g, x: (g * x).sum(0), (30, 10), (30, 10)), "forward")
    kinds = sorted((k.cls, k.bytes) for k in ks)
    assert kinds == [("pointwise", 3 * 30 * 10 * FP32), ("reduction", 30 * 10 * FP32 + 10 * FP32)]


def test_attention_flops():
    b, h, n, d = 2, 3, 16, 8

    def fn(q, k, v):
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=0.3)[0]

    ks = [k for k in K.kernels(trace(fn, *[(b, h, n, d)] * 3, dtype=torch.bfloat16), "forward")
          if k.cls == "attention"]
    assert len(ks) == 1 and ks[0].flops == 4 * b * h * n * n * d and ks[0].attention_kernel == "flash"


def test_attention_flops_with_fewer_queries_than_keys_forward_and_backward():
    """The decoder's last block: 5 queries over 16 keys. Backward takes (grad_out, q, k, v, ...): its FLOPs are
    2.5x the forward's 4 * b * h * n_q * n_k * d, not a product of grad_out's and q's lengths."""
    b, h, nq, nk, d = 2, 3, 5, 16, 8

    def fn(q, k, v, g):
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=0.3)[0]
        return torch.autograd.grad(out, (q, k, v), g)

    shapes = [(b, h, nq, d), (b, h, nk, d), (b, h, nk, d), (b, h, nq, d)]
    ks = [k for k in K.kernels(trace(fn, *shapes, dtype=torch.bfloat16), "forward") if k.cls == "attention"]
    assert [k.flops for k in ks] == [4 * b * h * nq * nk * d, 10 * b * h * nq * nk * d]
    assert ks[0].shape == "B2 H3 N5x16 d8"


def test_roofline_time():
    eff = C.Efficiency()
    mem = K.Kernel("copy", "pointwise", "x", "forward", 0, 4.3e9)
    mm = K.Kernel("mm", "matmul", "x", "forward", 790e12, 0, shape="1x4096x4096x4096")
    t_mem, t_mm = (k.time_s for k in C.predict([mem, mm], eff, launch_s=0.0))
    assert t_mem == pytest.approx(1e-3 / eff.pointwise)
    assert t_mm == pytest.approx(1.0 / eff.gemm(4096, 4096, 4096))


def test_optimizer_bytes():
    adam, norm = K.optimizer_kernels(1000)
    assert adam.bytes == 28 * 1000 and norm.bytes == 4 * 1000


def test_correction_factor():
    assert C.correct(C.Efficiency(), {"matmul": 2.0, "attention": 1.0}, {"matmul": 3.0}) == {"matmul": 1.5}


def test_target_budget_by_hand():
    """19 clips at 1,900 clips/s is a 10 ms step: 3.16 TFLOP in 10 ms is 316 TFLOP/s, 0.4 of the 790 peak; the
    matmul and attention classes (4 + 6 ms) use all of it, and the 10 ms of pointwise is what would not fit."""
    headline = dict(by_class_ms={"matmul (encoder)": 4.0, "attention (decoder)": 6.0, "pointwise": 10.0},
                    tflop=3.16, step_ms=20.0)
    got = C.target_budget(headline, batch=19)
    want = dict(step_ms=10.0, tflops_needed=316.0, peak_fraction=0.4, compute_ms=10.0, left_ms=0.0,
                memory_bound_ms=10.0)
    assert got == pytest.approx(want)


def test_classify_profiler_kernel_names():
    assert M.classify_kernel("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert M.classify_kernel("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert M.classify_kernel("triton_per_fused_native_layer_norm_0") == "reduction"
    assert M.classify_kernel("triton_poi_fused_gelu_1") == "pointwise"
    # bench/train_step.py's profile row uses the same classifier: the side-stream copy and CPU ops (rehearsal)
    assert M.classify_kernel("Memcpy HtoD (Pinned -> Device)") == "copy to device"
    assert M.classify_kernel("aten::addmm") == "matmul"
    assert M.classify_kernel("videomae::cube_embed_triton") == "fused-op"
    assert M.classify_kernel("Memcpy DtoD (Device -> Device)") == "pointwise"


def test_inductor_traffic_counts_launches_not_kernels():
    """Trace.traffic: each kernel's estimate once per launch in the wrappers, one entry per name (configs repeat)."""
    from bench.trace import Kernel, Trace

    def k(name, gb, graph):
        return Kernel(name=name, source="", ptx=None, shared=None, num_warps=4, num_stages=1, graph=graph, num_gb=gb)

    t = Trace(kernels=[k("triton_poi_fused_add_0", 0.5, "forward"), k("triton_poi_fused_add_0", 0.5, "forward"),
                       k("triton_per_fused_native_layer_norm_1", 2.0, "backward"), k("triton_red_fused_sum_2", 1.0,
                                                                                    "backward")],
              wrappers=["triton_poi_fused_add_0.run(buf0, stream=s)\ntriton_poi_fused_add_0.run(buf1, stream=s)\n"
                        "triton_poi_fused_add_0.run(buf2, stream=s)",
                        "triton_per_fused_native_layer_norm_1.run(a, b)\n# triton_red_fused_sum_2 never launched\n"
                        "    triton_poi_fused_add_0.run(*args, stream=raw_stream0)  # benchmark harness"])
    got = t.traffic()
    assert got["launches"] == 4 and got["kernels"] == 3
    assert got["gb"] == {"backward": 2.0, "forward": 1.5, "per": 2.0, "poi": 1.5, "red": 0.0}
    assert got["total_gb"] == 3.5
    assert [(r["kernel"], r["launches"], r["gb"]) for r in got["top"]] == [
        ("triton_per_fused_native_layer_norm_1", 1, 2.0), ("triton_poi_fused_add_0", 3, 1.5),
        ("triton_red_fused_sum_2", 0, 0.0)]


def test_history_of_changes_survives_plain_runs(tmp_path, monkeypatch):
    """`--label` appends the headline (a relabelled run replaces its row); a run without it keeps the history."""
    import json

    step = {"git_sha": "abc", "headline": {"step_ms": 20.0, "clips_per_s": 1600.0, "bytes_gb": 30.0, "tflop": 6.0,
                                           "by_class_ms": {"pointwise": 1.0, "reduction": 2.0, "cast": 0.5,
                                                           "matmul (encoder)": 9.0}}}
    monkeypatch.setattr(C, "run", lambda *a, **k: json.loads(json.dumps(step)))
    monkeypatch.setattr(C, "markdown", lambda r: "")
    out = ["--out", str(tmp_path)]
    for argv in (["--label", "a"], [], ["--label", "b"], ["--label", "a"], []):
        assert C.main(out + argv) == 0
    history = json.loads((tmp_path / "cost_model.json").read_text())["history"]
    assert [c["label"] for c in history] == ["b", "a"]
    assert history[0]["glue_ms"] == 3.5 and history[0]["clips_per_s"] == 1600.0
    with pytest.raises(SystemExit, match="--label records the headline"):
        C.main(out + ["--label", "c", "--batch", "16"])
