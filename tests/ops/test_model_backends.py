"""The ops together, as the model runs them: the pretraining model on every backend tracks the eager reference
model (the torch backend) over optimizer steps, compiles with `fullgraph=True` and zero graph breaks with ids as
`TokenIds`, and checks hand-built ids at its boundary (validated ones pass free); a whole autocast step through the
shared autograd glue on the emulated CUDA kernels; on a GPU (`gpu`), the fused model against the reference and a
step of the three ops with no host sync."""

import pytest
import torch
from op_helpers import ALL_BACKENDS, BACKENDS, MEAN, STD, close, emu_inputs, needs_ext, needs_gpu, one_line, to_fp64
from tolerances import TOL

import videomae
from videomae.dispatch import use_backend
from videomae.masking import TokenIds, running_cell_mask, token_ids, tube_mask
from videomae.ops import cube_embed_ref, decoder_input_ref, norm_pix_mse_ref


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
        # aot_eager needs no compiler toolchain: a failure here is ours, never a skip.
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(videos, ids)
        gc = torch.autograd.grad(compiled, list(model.parameters()))
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------- the ids boundary


def _tiny_batch(seed=4):
    g = torch.Generator().manual_seed(seed)
    videos = torch.randn(2, 3, 4, 32, 32, generator=g)
    return videos, token_ids(tube_mask(2, (2, 4, 4), 0.75, g), running_cell_mask(2, (2, 4, 4), 0.5, g))


def test_model_checks_hand_built_ids_and_trusts_validated_ones():
    """A TokenIds built by hand (validated_for None) is validated at the model's boundary and then gives the loss of
    the validated ids; one validated for another grid is refused without reading a value."""
    torch.manual_seed(0)
    model = tiny()
    videos, ids = _tiny_batch()
    assert ids.validated_for == 32 and ids.to("cpu").validated_for == 32
    hand = TokenIds(ids.visible.clone(), ids.decoded.clone(), ids.scored.clone())
    assert hand.validated_for is None and hand.validated(32).validated_for == 32
    with use_backend("torch"):
        assert torch.equal(model.forward_loss(videos, model(videos, hand), hand),
                           model.forward_loss(videos, model(videos, ids), ids))
    other = token_ids(tube_mask(2, (2, 2, 2), 0.5))
    assert one_line(lambda: model(videos, other)) == "ids were validated for 8 tokens, the clip has 32 (2x4x4)"


@pytest.mark.parametrize("spoil,field", [
    (lambda v, d: (v.index_put((torch.tensor([1]), torch.tensor([0])), torch.tensor(32)), d), "visible"),
    (lambda v, d: (v, d.index_put((torch.tensor([0]), torch.tensor([3])), torch.tensor(-1))), "decoded"),
    (lambda v, d: (v.index_put((torch.tensor([0]), torch.tensor([1])), v[0, 0]), d), "visible"),
    (lambda v, d: (v[:1], d), "decoded"),
], ids=["out of range", "negative", "repeated", "batch"])
def test_model_refuses_bad_hand_built_ids_in_one_line_on_every_backend(spoil, field):
    torch.manual_seed(0)
    model = tiny()
    videos, ids = _tiny_batch()
    bad = TokenIds(*spoil(ids.visible, ids.decoded), ids.scored)
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: model(videos, bad)))
    assert len(messages) == 1 and messages.pop().startswith(f"{field} ")


# ------------------------------------------------------------------------------------------------- emulated CUDA


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_autocast_step(cuda_ops_on_cpu, dtype):
    # The first bf16 step of issue 12, forward and backward: fp32 parameters, fp32 clip, the facade's weight cast.
    op = cuda_ops_on_cpu
    videos, weight, bias, pos, ids, grid = emu_inputs((2, 3, 4, 32, 64, 2, 16, 0.75), torch.float32, False)
    ids = token_ids(ids.mask(pos.shape[1]), running_cell_mask(2, grid, 0.5, torch.Generator().manual_seed(5)))
    token = torch.randn(1, 1, 40, generator=torch.Generator().manual_seed(6))
    leaves = [t.requires_grad_() for t in (videos, weight, bias, pos, token)]
    with torch.autocast("cpu", dtype=dtype):
        x = op.cube_embed_cuda(videos, weight.to(dtype), bias, pos, ids.visible, MEAN, STD)
        y = op.decoder_input_cuda(x, token, pos, ids.visible, ids.decoded)
        pred = y[:, ids.visible.shape[1]:].repeat(1, 1, 1536 // 40 + 1)[..., :1536].contiguous()
        loss = op.norm_pix_mse_cuda(pred, videos.detach(), ids.decoded, ids.scored, 2, 16, True, "videomae", MEAN,
                                    STD)
    assert x.dtype == y.dtype == dtype and loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, leaves)
    assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in leaves]
    # The same step on the fp64 oracle, with the weight autocast multiplies: the grads agree to the 16-bit rounding
    # of the activations (x, y, pred and their grads are stored in `dtype`).
    args64 = to_fp64(videos, weight.to(dtype), bias, pos, token, grad=True)
    x64 = cube_embed_ref(*args64[:4], ids.visible, upcast=True)
    y64 = decoder_input_ref(x64, args64[4], args64[3], ids.visible, ids.decoded, upcast=True)
    pred64 = y64[:, ids.visible.shape[1]:].repeat(1, 1, 1536 // 40 + 1)[..., :1536]
    loss64 = norm_pix_mse_ref(pred64, videos, ids.decoded, ids.scored, upcast=True)
    grads64 = torch.autograd.grad(loss64, args64)
    torch.testing.assert_close(loss.double(), loss64, atol=0, rtol=TOL[dtype][0])
    for name, g, o in zip(("videos", "weight", "bias", "pos", "mask_token"), grads, grads64):
        close(g, o, TOL[dtype], f"d {name}")


# ------------------------------------------------------------------------------------------------- GPU


def run_model_steps(backend: str, steps: int = 3, batch: int = 2, seed: int = 0) -> list[float]:
    """Losses of a few AdamW steps of ViT-S pretraining from one seed on one ops backend."""
    torch.manual_seed(seed)
    model = videomae.create_model("pretrain_videomae_small_patch16_224").to("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator("cuda").manual_seed(seed + 1)
    cpu_gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    with use_backend(backend):
        for _ in range(steps):
            videos = torch.randn(batch, 3, 16, 224, 224, generator=gen, device="cuda")
            ids = token_ids(tube_mask(batch, (8, 14, 14), 0.9, cpu_gen)).to("cuda")
            loss = model.forward_loss(videos, model(videos, ids), ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


@pytest.mark.gpu
@needs_gpu
def test_model_fused_matches_reference_on_gpu(no_tf32):
    fused = run_model_steps("auto")
    ref = run_model_steps("torch")
    # fp32 without TF32: the paths differ only in summation order (~1e-6 relative per step).
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(ref), rtol=1e-4, atol=1e-5)


@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_ops_never_sync_on_gpu():
    # No host sync inside an op: token ids carry every count, loss weights are reduced on the device.
    gen = torch.Generator("cuda").manual_seed(0)
    videos = torch.randn(2, 3, 16, 224, 224, generator=gen, device="cuda").bfloat16().requires_grad_()
    weight = (torch.randn(768, 3, 2, 16, 16, generator=gen, device="cuda") * 0.02).bfloat16().requires_grad_()
    bias = torch.zeros(768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    pos = torch.randn(1, 1568, 768, generator=gen, device="cuda").requires_grad_()
    ids = token_ids(tube_mask(2, (8, 14, 14), 0.9, torch.Generator().manual_seed(0)),
                    running_cell_mask(2, (8, 14, 14), 0.5, torch.Generator().manual_seed(1))).to("cuda")
    token = torch.zeros(1, 1, 768, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with use_backend("cuda"):
            x = videomae.ops.cube_embed(videos, weight, bias, pos, ids.visible)
            y = videomae.ops.decoder_input(x, token, pos, ids.visible, ids.decoded)
            pred = y[:, ids.visible.shape[1]:, :].repeat(1, 1, 2)
            loss = videomae.ops.norm_pix_mse(pred, videos.detach(), ids.decoded, ids.scored)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()
