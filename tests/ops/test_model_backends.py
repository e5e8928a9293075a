"""The whole pretraining model on every backend tracks the eager reference model (the torch backend) over
optimizer steps, and compiles with `fullgraph=True` and zero graph breaks with ids as `TokenIds`."""

import pytest
import torch
from op_helpers import BACKENDS

import videomae
from videomae.masking import running_cell_mask, token_ids, tube_mask
from videomae.ops import use_backend


def tiny():
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", img_size=32, num_frames=4, patch_size=8)


def train(backend: str, v2: bool, steps: int = 3):
    torch.manual_seed(0)
    model = tiny()
    # SGD, not AdamW: Adam divides each gradient by its own magnitude, which turns rounding-level
    # differences in near-zero gradients into lr-sized parameter differences.
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses, first_grads = [], None
    with use_backend(backend):
        for _ in range(steps):
            videos = torch.randn(2, 3, 4, 32, 32, generator=g)
            mask = tube_mask(2, (2, 4, 4), 0.75, g)
            ids = token_ids(mask, running_cell_mask(2, (2, 4, 4), 0.5, g) if v2 else None)
            loss = model.forward_loss(videos, model(videos, ids), ids)
            opt.zero_grad()
            loss.backward()
            first_grads = first_grads or [p.grad.clone() for p in model.parameters()]
            opt.step()
            losses.append(loss.item())
    return losses, first_grads, model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_model_tracks_reference(backend, v2):
    ref_losses, ref_grads, ref = train("torch", v2)
    losses, grads, model = train(backend, v2)
    names = [n for n, _ in model.named_parameters()]
    # fp32 throughout; the fused ops sum in another order, so results agree to rounding, which the
    # steps may grow by a few ulps.
    for name, g, r in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * r.abs().max().item(), msg=name)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for name, p, q in zip(names, model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_bool_masks_and_token_ids_give_the_same_loss():
    torch.manual_seed(0)
    model = tiny()
    g = torch.Generator().manual_seed(3)
    videos = torch.randn(2, 3, 4, 32, 32, generator=g)
    mask, dm = tube_mask(2, (2, 4, 4), 0.75, g), running_cell_mask(2, (2, 4, 4), 0.5, g)
    ids = token_ids(mask, dm)
    with use_backend("torch"):
        a = model.forward_loss(videos, model(videos, mask, dm), mask, dm)
        b = model.forward_loss(videos, model(videos, ids), ids)
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_compile_fullgraph_forward_loss(backend, v2):
    """`forward_loss(videos, model(videos, ids), ids)` traces as one graph (no host sync, no data-dependent
    shape); under TRITON_INTERPRET the triton ops are opaque custom ops, which is fine. The compiled loss and
    grads equal eager's."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = tiny()
    g = torch.Generator().manual_seed(2)
    videos = torch.randn(2, 3, 4, 32, 32, generator=g)
    ids = token_ids(tube_mask(2, (2, 4, 4), 0.75, g), running_cell_mask(2, (2, 4, 4), 0.5, g) if v2 else None)

    def step(videos, ids):
        return model.forward_loss(videos, model(videos, ids), ids)

    with use_backend(backend):
        explain = torch._dynamo.explain(step)(videos, ids)
        assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons
        eager = step(videos, ids)
        ge = torch.autograd.grad(eager, list(model.parameters()))
        try:
            compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(videos, ids)
        except torch._dynamo.exc.BackendCompilerFailed as e:  # no working toolchain on this machine
            pytest.skip(f"torch.compile unavailable: {e}")
        gc = torch.autograd.grad(compiled, list(model.parameters()))
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b)
