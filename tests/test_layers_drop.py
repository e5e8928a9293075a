"""DropPath draws as the official recipes do (timm 0.4.12's drop_path, which the official code calls): a sample
survives when floor(keep + U) = 1, U ~ rand in x's dtype, and survivors are x / keep."""

import pytest
import torch

from videomae.layers import DropPath


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_official_draw_and_scaling(p, dtype):
    x = torch.randn(64, 7, 5).to(dtype).requires_grad_()
    layer = DropPath(p).train()
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    keep = (1 - p + torch.rand(64, 1, 1, dtype=dtype)).floor()  # the official formula, written out
    assert torch.equal(out, x.div(1 - p) * keep)
    (g,) = torch.autograd.grad(out.float().sum(), x)
    assert torch.equal(g, (torch.ones_like(x) / (1 - p) * keep).to(dtype))


def test_drop_rate_per_sample_and_identity_when_off():
    x = torch.ones(20000, 3)
    out = DropPath(0.25).train()(x)
    assert torch.all((out == 0) | (out == 1 / 0.75)) and torch.all(out == out[:, :1])  # whole samples
    dropped = (out[:, 0] == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.015  # 5 binomial standard deviations at n = 20000
    assert DropPath(0.25).eval()(x) is x and DropPath(0.0).train()(x) is x


def test_timm_drop_path_is_the_same_law_but_another_stream():
    """Why ours stays (videomae/layers/drop.py): timm >= 0.5 draws bernoulli_, so one seed drops other samples."""
    from timm.layers import DropPath as TimmDropPath

    x = torch.ones(4000, 1)
    torch.manual_seed(0)
    ours = DropPath(0.1).train()(x)
    torch.manual_seed(0)
    theirs = TimmDropPath(0.1).train()(x)
    disagree = ((ours == 0) != (theirs == 0)).float().mean().item()
    assert 0.14 < disagree < 0.22  # independent draws: 2 p (1 - p) = 0.18
