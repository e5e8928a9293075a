"""The whole pretraining model on fused ops tracks the eager reference model over optimizer steps
(every backend that can run here: torch, and Triton under TRITON_INTERPRET=1)."""

import pytest
import torch

import videomae
from videomae.kernels import INTERPRET
from videomae.masking import running_cell_mask, tube_mask
from videomae.ops import use_backend

BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(not INTERPRET, reason="triton on CPU needs TRITON_INTERPRET=1")),
]


def train(fused: bool, backend: str, v2: bool, steps: int = 3):
    torch.manual_seed(0)
    model = videomae.create_model("pretrain_videomae_tiny_patch16_224", img_size=32, num_frames=4, patch_size=8,
                                  fused=fused)
    # SGD, not AdamW: Adam divides each gradient by its own magnitude, which turns rounding-level
    # differences in near-zero gradients into lr-sized parameter differences.
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses, first_grads = [], None
    with use_backend(backend if fused else "auto"):
        for _ in range(steps):
            videos = torch.randn(2, 3, 4, 32, 32, generator=g)
            mask = tube_mask(2, (2, 4, 4), 0.75, g)
            decode_mask = running_cell_mask(2, (2, 4, 4), 0.5, g) if v2 else None
            loss = model.forward_loss(videos, model(videos, mask, decode_mask), mask, decode_mask)
            opt.zero_grad()
            loss.backward()
            first_grads = first_grads or [p.grad.clone() for p in model.parameters()]
            opt.step()
            losses.append(loss.item())
    return losses, first_grads, model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_fused_model_tracks_reference(backend, v2):
    ref_losses, ref_grads, ref = train(False, "torch", v2)
    losses, grads, model = train(True, backend, v2)
    names = [n for n, _ in model.named_parameters()]
    # fp32 throughout; the fused ops sum in another order, so results agree to rounding, which the
    # steps may grow by a few ulps.
    for name, g, r in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * r.abs().max().item(), msg=name)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    for name, p, q in zip(names, model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
