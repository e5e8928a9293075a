"""videomae.layers.recompute: recomputing a block's cheap ops changes what is kept, never the numbers (gradients
bitwise those of keeping everything), and the switch resolves as documented."""

import pytest
import torch

import videomae
from videomae.layers import recompute
from videomae.masking import token_ids, tube_mask


def _grads(net, videos, ids, mode, autocast):
    net.zero_grad(set_to_none=True)
    with recompute.use_recompute(mode), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = net.forward_loss(videos, net(videos, ids), ids)
    loss.backward()
    return [loss.detach()] + [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("mode", ["cheap", "full"])
def test_recomputation_gives_the_same_gradients_bitwise(mode, autocast):
    torch.manual_seed(0)
    net = videomae.create_model("pretrain_videomae_tiny_patch16_224", num_frames=4, img_size=32)
    videos = torch.randn(2, 3, 4, 32, 32)
    ids = token_ids(tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(1)))
    want = _grads(net, videos, ids, "none", autocast)
    got = _grads(net, videos, ids, mode, autocast)
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_resolve():
    x = torch.zeros(2, requires_grad=True)
    assert recompute.resolve(x.detach()) == "none"  # nothing needs gradients
    assert recompute.resolve(x, grad_checkpointing=True) == "full"
    assert recompute.resolve(x) == "none"  # auto on the CPU
    with recompute.use_recompute("cheap"):
        assert recompute.resolve(x) == "cheap"
    with torch.no_grad():
        assert recompute.resolve(x) == "none"


def test_bad_switch(monkeypatch):
    with pytest.raises(ValueError, match="^recompute must be one of"):
        recompute.set_recompute("sometimes")
    monkeypatch.setenv(recompute.ENV, "never")
    with pytest.raises(ValueError, match=f"^{recompute.ENV} must be one of"):
        recompute.get_recompute()


def test_policy_keeps_matmuls_but_not_the_narrowing_one():
    aten = torch.ops.aten
    a, w_up, w_down = torch.zeros(4, 8), torch.zeros(8, 32), torch.zeros(32, 8)
    keep, drop = torch.utils.checkpoint.CheckpointPolicy.MUST_SAVE, torch.utils.checkpoint.CheckpointPolicy
    assert recompute._policy(None, aten.mm.default, a, w_up) == keep  # fc1-like: 8 -> 32
    assert recompute._policy(None, aten.mm.default, torch.zeros(4, 32), w_down) == drop.PREFER_RECOMPUTE  # fc2
    assert recompute._policy(None, aten.gelu.default, a) == drop.PREFER_RECOMPUTE
    assert recompute._policy(None, aten._scaled_dot_product_cudnn_attention.default, a) == keep


def test_compile_settings_follow_the_switch():
    """`none` compiles with the partitioner settings as they were before ours (torch's); the others with ours."""
    import torch._functorch.config as functorch_config

    from videomae.layers.recompute import COMPILE_SETTINGS, apply_compile_settings

    (name, ours), = COMPILE_SETTINGS.items()
    before = getattr(functorch_config, name)
    torch_default = functorch_config._config[name].default  # what `none` must compile with
    assert ours != torch_default
    try:
        for mode, want in (("cheap", ours), ("none", torch_default), ("auto", ours), ("full", ours),
                           ("none", torch_default)):
            apply_compile_settings(mode)
            assert getattr(functorch_config, name) == want, mode
        with pytest.raises(ValueError, match="recompute must be one of"):
            apply_compile_settings("some")
    finally:
        setattr(functorch_config, name, before)


def test_step_config_carries_the_switch_into_the_step():
    from types import SimpleNamespace

    from videomae.layers.recompute import get_recompute
    from videomae.train.step import StepConfig, ops_context

    config = StepConfig.from_args(SimpleNamespace(recompute="none"))
    assert config.recompute == "none"
    with ops_context(config):
        assert get_recompute() == "none"
    with pytest.raises(ValueError, match="recompute must be one of"):
        StepConfig(recompute="some")
