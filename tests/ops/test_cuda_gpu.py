"""The CUDA kernels on a GPU (`-m gpu`): every op against the fp64 oracle (error at most 2x PyTorch's own in the same
dtype) on small, odd and grid-striding shapes, uint8 clips, optional bias / pos, the videos grad, autocast's dtype
mix; bitwise reruns; no host sync; bad inputs. Inputs are made on the GPU (token ids on the CPU, as the collate).
"""

from __future__ import annotations

import pytest
import torch
from test_cuda_emu import MEAN, STD, check_2x, fp64_leaves

import videomae.ops as ops
from videomae import _ext
from videomae.masking import TokenIds, running_cell_mask, token_ids, tube_mask
from videomae.ops import cube_embed_ref, decoder_input_ref, norm_pix_mse_ref


def gpu_test(fn):
    """Marked `gpu`; skipped without a CUDA device or without the extension."""
    fn = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(fn)
    fn = pytest.mark.skipif(not _ext.available(), reason=f"videomae._C unavailable: {_ext.reason()}")(fn)
    return pytest.mark.gpu(fn)


CUBE_CASES = [  # B, C, T, H, W, tubelet, patch, D, ratio
    (2, 3, 4, 32, 48, 2, 16, 40, 0.75),
    (3, 3, 8, 32, 32, 2, 16, 56, 0.5),
    (1, 3, 6, 28, 42, 2, 14, 64, 0.9),  # p=14: rows of 14 pixels take the scalar path
    (2, 3, 16, 224, 224, 2, 16, 768, 0.9),  # ViT-B
    (64, 3, 16, 256, 32, 2, 16, 64, 0.75),  # > 65535 row blocks: the kernels' grid-stride loops
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def grads_of(out, inputs, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(seed), device=out.device)
    return torch.autograd.grad(out, [t for t in inputs if t is not None and t.requires_grad], g.to(out.dtype))


def gpu_ids(mask, decode_mask=None) -> TokenIds:
    """Token ids made on the CPU, as the collate makes them, then moved."""
    return token_ids(mask, decode_mask).to("cuda")


def cube_inputs(case, dtype, uint8=False, seed=0):
    b, c, t, h, w, tub, p, d, ratio = case
    gen = torch.Generator("cuda").manual_seed(seed)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, device="cuda", dtype=torch.uint8)
    else:
        videos = torch.randn(b, c, t, h, w, generator=gen, device="cuda").to(dtype).requires_grad_()
    weight = (torch.randn(d, c, tub, p, p, generator=gen, device="cuda") * 0.02).to(dtype).requires_grad_()
    bias = (torch.randn(d, generator=gen, device="cuda") * 0.02).to(dtype).requires_grad_()
    grid = (t // tub, h // p, w // p)
    pos = torch.randn(1, grid[0] * grid[1] * grid[2], d, generator=gen, device="cuda").requires_grad_()
    ids = gpu_ids(tube_mask(b, grid, ratio, torch.Generator().manual_seed(seed)))
    return videos, weight, bias, pos, ids.visible


@pytest.mark.parametrize("case", CUBE_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("with_bias_pos", [True, False])
@gpu_test
def test_cube_embed_gpu(case, dtype, uint8, with_bias_pos, no_tf32):
    videos, weight, bias, pos, visible = cube_inputs(case, dtype, uint8)
    if not with_bias_pos:
        bias = pos = None
    args = (videos, weight, bias, pos, visible)
    with ops.use_backend("cuda"):
        out = ops.cube_embed(*args)
        grads = grads_of(out, args)
        out2 = ops.cube_embed(*args)
        grads2 = grads_of(out2, args)
    ref = cube_embed_ref(*args)
    ref_grads = grads_of(ref, args)
    oracle_args = fp64_leaves(*args[:4]) + [visible]
    oracle = cube_embed_ref(*oracle_args, upcast=True)
    oracle_grads = grads_of(oracle, oracle_args)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    check_2x("out", out, ref, oracle)
    names = [n for n, t in zip(("videos", "weight", "bias", "pos"), args[:4]) if t is not None and t.requires_grad]
    for name, g, r, o in zip(names, grads, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        check_2x(f"d {name}", g, r, o)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(grads, grads2)), "not bitwise"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("uint8", [False, True])
@gpu_test
def test_cube_embed_autocast_gpu(dtype, uint8, no_tf32):
    # A training step's mix: fp32 parameters and clip under autocast; the facade casts only the weight.
    videos, weight, bias, pos, visible = cube_inputs(CUBE_CASES[3], torch.float32, uint8)
    args = (videos, weight, bias, pos, visible)
    with torch.autocast("cuda", dtype=dtype), ops.use_backend("cuda"):
        out = ops.cube_embed(*args)
    grads = grads_of(out, args)
    ref = cube_embed_ref(videos, weight.to(dtype), bias, pos, visible)  # what autocast's conv3d computes
    ref_grads = grads_of(ref, args)
    oracle_args = fp64_leaves(videos, weight.to(dtype), bias, pos) + [visible]  # the weight autocast multiplies
    oracle = cube_embed_ref(*oracle_args, upcast=True)
    oracle_grads = grads_of(oracle, oracle_args)
    assert out.dtype == dtype
    check_2x("out", out, ref, oracle)
    for g, r, o in zip(grads, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape
        check_2x("grad", g, r, o)


DEC_CASES = [  # B, T', H', W', D, ratio
    (2, 2, 2, 3, 40, 0.75),
    (3, 4, 2, 2, 56, 0.5),
    (32, 8, 14, 14, 384, 0.9),  # ViT-B decoder
]


@pytest.mark.parametrize("case", DEC_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v2", [False, True])
@gpu_test
def test_decoder_input_gpu(case, dtype, v2, no_tf32):
    b, t, h, w, d, ratio = case
    gen = torch.Generator("cuda").manual_seed(0)
    mask = tube_mask(b, (t, h, w), ratio, torch.Generator().manual_seed(0))
    ids = gpu_ids(mask, running_cell_mask(b, (t, h, w), 0.5, torch.Generator().manual_seed(1)) if v2 else None)
    n, nv = t * h * w, ids.visible.shape[1]
    x_vis = torch.randn(b, nv, d, generator=gen, device="cuda").to(dtype).requires_grad_()
    token = (torch.randn(1, 1, d, generator=gen, device="cuda") * 0.02).requires_grad_()
    pos = torch.randn(1, n, d, generator=gen, device="cuda").requires_grad_()
    args = (x_vis, token, pos, ids.visible, ids.decoded)
    with ops.use_backend("cuda"):
        out = ops.decoder_input(*args)
        grads = grads_of(out, args)
        out2 = ops.decoder_input(*args)
        grads2 = grads_of(out2, args)
    # PyTorch's own in x_vis' dtype: the promoted (fp32) sum rounded once, which is what the kernel stores.
    ref = decoder_input_ref(*args).to(dtype)
    ref_grads = grads_of(ref, args)
    oracle_args = fp64_leaves(*args[:3]) + list(args[3:])
    oracle = decoder_input_ref(*oracle_args, upcast=True)
    oracle_grads = grads_of(oracle, oracle_args)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    check_2x("out", out, ref, oracle)
    for name, g, r, o in zip(("x_vis", "mask_token", "pos"), grads, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        check_2x(f"d {name}", g, r, o)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(grads, grads2)), "not bitwise"


LOSS_CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),
    (3, 3, 8, 28, 28, 2, 14, 0.5),  # scalar path
    (8, 3, 16, 224, 224, 2, 16, 0.9),  # ViT-B shapes, smaller batch
]


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", ["videomae", "mae_st"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("uint8", [False, True])
@gpu_test
def test_norm_pix_mse_gpu(case, dtype, style, normalize, v2, uint8, no_tf32):
    b, c, t, h, w, tub, p, ratio = case
    grid = (t // tub, h // p, w // p)
    gen = torch.Generator("cuda").manual_seed(0)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, device="cuda", dtype=torch.uint8)
    else:  # float clips are normalized; the reference targets are fp32 whatever the clip's dtype
        videos = torch.randn(b, c, t, h, w, generator=gen, device="cuda").to(dtype)
    mask = tube_mask(b, grid, ratio, torch.Generator().manual_seed(0))
    ids = gpu_ids(mask, running_cell_mask(b, grid, 0.5, torch.Generator().manual_seed(1)) if v2 else None)
    pred = torch.randn(b, ids.decoded.shape[1], c * tub * p * p, generator=gen, device="cuda").to(dtype)
    pred.requires_grad_()
    kw = dict(tubelet_size=tub, patch_size=p, normalize_target=normalize, style=style)
    with ops.use_backend("cuda"):
        loss = ops.norm_pix_mse(pred, videos, ids.decoded, ids.scored, **kw)
        (grad,) = torch.autograd.grad(loss, [pred])
        loss2 = ops.norm_pix_mse(pred, videos, ids.decoded, ids.scored, **kw)
        (grad2,) = torch.autograd.grad(loss2, [pred])
    ref = norm_pix_mse_ref(pred, videos, ids.decoded, ids.scored, **kw)
    (ref_grad,) = torch.autograd.grad(ref, [pred])
    pred64 = pred.detach().double().requires_grad_()  # an fp64 leaf: its grad is not rounded to pred's dtype
    oracle = norm_pix_mse_ref(pred64, videos, ids.decoded, ids.scored, **kw, upcast=True)
    (oracle_grad,) = torch.autograd.grad(oracle, [pred64])
    assert loss.dtype == torch.float32 and loss.shape == () and grad.dtype == dtype
    check_2x("loss", loss, ref, oracle)
    check_2x("d pred", grad, ref_grad.to(dtype), oracle_grad)
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2), "not bitwise"


@gpu_test
def test_ops_never_sync_gpu():
    # No host sync inside an op: token ids carry every count, loss weights are reduced on the device.
    videos, weight, bias, pos, visible = cube_inputs(CUBE_CASES[3], torch.bfloat16)
    n = pos.shape[1]
    ids = gpu_ids(tube_mask(2, (8, 14, 14), 0.9, torch.Generator().manual_seed(0)),
                  running_cell_mask(2, (8, 14, 14), 0.5, torch.Generator().manual_seed(1)))
    token = torch.zeros(1, 1, 768, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with ops.use_backend("cuda"):
            x = ops.cube_embed(videos, weight, bias, pos, ids.visible)
            y = ops.decoder_input(x, token, pos, ids.visible, ids.decoded)
            pred = y[:, ids.visible.shape[1]:, :].repeat(1, 1, 2)
            loss = ops.norm_pix_mse(pred, videos.detach(), ids.decoded, ids.scored)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert n == 1568 and torch.isfinite(loss).item()


@gpu_test
def test_bad_inputs_gpu():
    videos, weight, bias, pos, visible = cube_inputs(CUBE_CASES[0], torch.float32)
    videos, weight = videos.detach(), weight.detach()
    op = torch.ops.videomae
    decoded = torch.zeros(2, 8, dtype=torch.long, device="cuda")
    # The kernels' own checks (TORCH_CHECK_VALUE -> ValueError naming the argument), below the public validation.
    with pytest.raises(ValueError, match="videos must be contiguous"):
        op.cube_embed_cuda(videos.transpose(3, 4), weight, None, None, visible, MEAN, STD)
    with pytest.raises(ValueError, match="visible must be int64 token ids"):
        op.cube_embed_cuda(videos, weight, None, None, visible.int(), MEAN, STD)
    with pytest.raises(ValueError, match="videos T=3, H=32, W=48 must be divisible"):
        op.cube_embed_cuda(videos[:, :, :3].contiguous(), weight, None, None, visible, MEAN, STD)
    with pytest.raises(ValueError, match="mean and std must have one value per channel"):
        op.cube_embed_cuda((videos * 0).to(torch.uint8), weight, None, None, visible, MEAN[:2], STD)
    with pytest.raises(ValueError, match="pos must be"):
        op.decoder_input_cuda(torch.randn(2, 4, 40, device="cuda"), torch.randn(40, device="cuda"),
                              torch.randn(11, 39, device="cuda"), visible, decoded)
    with pytest.raises(ValueError, match="mask_token must have 40 values"):
        op.decoder_input_cuda(torch.randn(2, 4, 40, device="cuda"), torch.randn(39, device="cuda"),
                              torch.randn(12, 40, device="cuda"), visible, decoded)
    with pytest.raises(ValueError, match="style must be"):
        op.norm_pix_mse_cuda(torch.randn(2, 8, 1536, device="cuda"), videos, decoded, None, 2, 16, True, "mae", MEAN,
                             STD)
    with pytest.raises(ValueError, match="pred must be"):
        op.norm_pix_mse_cuda(torch.randn(2, 8, 1535, device="cuda"), videos, decoded, None, 2, 16, True, "videomae",
                             MEAN, STD)
    with pytest.raises(ValueError, match="videos must be a CUDA tensor"):
        op.norm_pix_mse_cuda(torch.randn(2, 8, 1536, device="cuda"), videos.cpu(), decoded, None, 2, 16, True,
                             "videomae", MEAN, STD)
