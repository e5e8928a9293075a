"""The fast pretraining step on the CPU: each switch computes the same step as the eager reference
(within its precision), and the config refuses what cannot work."""

from __future__ import annotations

import pytest
import torch

import videomae
from videomae import attention, fastpath
from videomae.fastpath import FastPathConfig


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", num_frames=4, img_size=64, **kw)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    videos = torch.randn(2, 3, 4, 64, 64, generator=g)
    return videos, videomae.masking.tube_mask(2, (2, 4, 4), 0.75, generator=g)


def one_step(config, seed=0, **model_kw):
    model = tiny(seed, **model_kw)
    opt = fastpath.make_optimizer(model, lr=1e-3, config=config)
    step = fastpath.build_train_step(model, opt, config)
    loss = step(*inputs())
    # The step leaves this step's gradients in .grad (it zeroes them at the start of the next one).
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads_close(grads, ref, tol):
    """Per tensor, relative to its norm: Adam's first update is ~lr*sign(g), so parameters after one step
    amplify rounding of near-zero gradients; the gradients themselves are the well-conditioned check."""
    for n, g in grads.items():
        err = ((g.double() - ref[n].double()).norm() / ref[n].double().norm().clamp_min(1e-12)).item()
        assert err < tol, f"{n}: relative gradient error {err:.2e}"


@pytest.fixture(autouse=True)
def _restore_attention():
    prev = attention.get_attention_backend()
    yield
    attention.set_attention_backend(prev)


def test_fast_fp32_step_equals_eager_reference():
    ref_loss, ref = one_step(FastPathConfig.eager_reference("fp32"))
    loss, grads = one_step(FastPathConfig(precision="fp32"))
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert_grads_close(grads, ref, 1e-4)  # fused ops and SDPA vs eager: fp32 summation order only


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_step_close_to_fp32(precision):
    ref_loss, ref = one_step(FastPathConfig(precision="fp32"))
    loss, grads = one_step(FastPathConfig(precision=precision))
    assert loss == pytest.approx(ref_loss, rel=3e-2)  # bf16/fp16 matmul inputs: ~1e-2 relative
    assert_grads_close(grads, ref, 0.1)  # gradients through ~5 low-precision matmuls in a row


def test_checkpointing_changes_memory_not_math():
    ref_loss, ref = one_step(FastPathConfig(precision="fp32"))
    loss, grads = one_step(FastPathConfig(precision="fp32", checkpoint=True))
    assert loss == ref_loss
    assert_grads_close(grads, ref, 1e-6)  # recomputation runs the same kernels on the same inputs


@pytest.mark.slow  # ~10 s of tracing on one core
def test_compile_switch_same_step():
    ref_loss, ref = one_step(FastPathConfig(precision="fp32"))
    loss, grads = one_step(FastPathConfig(precision="fp32", compile=True, compile_backend="aot_eager"))
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert_grads_close(grads, ref, 1e-4)


def test_switches_reach_model_and_optimizer():
    model = tiny()
    cfg = FastPathConfig.for_model("pretrain_videomae_large_patch16_224", fused_ops=False, attention="eager")
    assert cfg.checkpoint and not FastPathConfig.for_model("pretrain_videomae_base_patch16_224").checkpoint
    opt = fastpath.make_optimizer(model, lr=1e-3, config=cfg)
    fastpath.build_train_step(model, opt, cfg)
    assert model.fused is False and model.encoder.fused is False
    assert model.encoder.use_checkpoint and model.decoder.use_checkpoint
    assert attention.get_attention_backend() == "eager"
    assert opt.defaults["fused"] is True
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}
    assert fastpath.make_optimizer(model, 1e-3, config=cfg.replace(fused_adamw=False)).defaults["fused"] is None


def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="precision"):
        FastPathConfig(precision="fp8")
    with pytest.raises(ValueError, match="attention"):
        FastPathConfig(attention="nope")
    with pytest.raises(ValueError, match="GradScaler"):
        FastPathConfig(precision="fp16", cuda_graphs=True)
    model = tiny()
    cfg = FastPathConfig(precision="fp32", cuda_graphs=True)
    step = fastpath.build_train_step(model, fastpath.make_optimizer(model, 1e-3, config=cfg), cfg)
    with pytest.raises(ValueError, match="needs CUDA"):
        step(*inputs())


def test_report_shows_every_switch():
    r = fastpath.fastpath_report()
    assert set(FastPathConfig.__dataclass_fields__) == set(r["config"])
    assert "backends" in r["attention"]
