"""add_layer_norm on every backend that runs here (and, marked `gpu`, Triton on a GPU at ViT shapes), forward and
backward, against the fp64 oracle (`add_layer_norm_ref(upcast=True)`), by the flash-attention rule: a backend's
error is at most ERROR_RATIO times PyTorch's own error in the same dtypes (the official add + fp32 LayerNorm + cast)
plus ERROR_FLOOR; what backward keeps; opcheck; bad input; reruns; the compiled path."""

import pytest
import torch
from op_helpers import BACKENDS, check_2x, grads, needs_fused, needs_gpu

import videomae.ops as ops
from videomae.ops.add_layer_norm import add_layer_norm_ref
from videomae.ops.library import torch_op

# (shape, stream dtype, branch dtype or None, out dtype): odd widths and row counts; the encoder under bf16
# autocast (bf16 stream and branch, bf16 out), the decoder (fp32 stream + bf16 branch, bf16 out), fp16, fp32.
CASES = [
    ((2, 5, 40), torch.float32, torch.float32, torch.float32),
    ((3, 7, 56), torch.float32, None, torch.float32),
    ((2, 9, 24), torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ((1, 13, 40), torch.float32, torch.bfloat16, torch.bfloat16),
    ((2, 6, 48), torch.float16, torch.float16, torch.float16),
    ((4, 3, 40), torch.bfloat16, None, torch.bfloat16),
]


def inputs(shape, dtype, rdtype, seed=0, device="cpu"):
    g = torch.Generator(device).manual_seed(seed)
    d = shape[-1]
    x = (torch.randn(shape, generator=g, device=device) * 2 + 0.5).to(dtype).requires_grad_()
    r = None if rdtype is None else torch.randn(shape, generator=g, device=device).to(rdtype).requires_grad_()
    w = (torch.randn(d, generator=g, device=device) * 0.5 + 1).requires_grad_()
    b = (torch.randn(d, generator=g, device=device) * 0.2).requires_grad_()
    return x, r, w, b


def pytorch_own(x, r, w, b, out_dtype):
    """The official computation in the given dtypes: torch's add, fp32 LayerNorm (autocast's), cast for the Linear."""
    s, y = add_layer_norm_ref(x, r, w, b, 1e-6)
    return s, y.to(out_dtype)


def check(backend, x, r, w, b, out_dtype):
    """Outputs and gradients (through both outputs: the stream goes on past the block) of `backend` against the
    oracle, by the 2x rule against PyTorch's own computation in the same dtypes."""
    with ops.use_backend(backend):
        s, y = ops.add_layer_norm(x, r, w, b, 1e-6, out_dtype=out_dtype)
    ps, py = pytorch_own(x, r, w, b, out_dtype)
    x64 = [None if t is None else t.detach().double().requires_grad_() for t in (x, r, w, b)]
    os_, oy = add_layer_norm_ref(*x64, 1e-6, upcast=True)
    assert y.dtype == out_dtype and y.shape == x.shape and s.dtype == ps.dtype
    check_2x("y", y, py, oy, floor_scale=max(1.0, oy.abs().max().item()))
    if r is None:
        assert s is x
    else:  # the sum is rounded once to the stream dtype, as torch's add (the interpreter rounds toward zero)
        check_2x("sum", s, ps, os_, floor_scale=max(1.0, os_.abs().max().item()))
    names = ["x", "residual", "weight", "bias"] if r is not None else ["x", "weight", "bias"]
    mine = grads(torch.cat([y.double().flatten(), s.double().flatten()]), [x, r, w, b])
    own = grads(torch.cat([py.double().flatten(), ps.double().flatten()]), [x, r, w, b])
    oracle = grads(torch.cat([oy.flatten(), os_.flatten()]), x64)
    for name, m, p, o in zip(names, mine, own, oracle):
        assert m.dtype == p.dtype and m.shape == p.shape, name
        check_2x(name, m, p, o, dtype=m.dtype, floor_scale=max(1.0, o.abs().max().item()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,dtype,rdtype,out_dtype", CASES, ids=str)
def test_add_layer_norm(backend, shape, dtype, rdtype, out_dtype):
    check(backend, *inputs(shape, dtype, rdtype), out_dtype)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("width", [384, 768, 1024])
@pytest.mark.parametrize("stream", [torch.bfloat16, torch.float32])
def test_triton_at_vit_shapes_on_gpu(width, stream):
    """Decoder rows of ViT-S/B/L (B=8, 1568 tokens), a bf16 branch, bf16 out; bf16 and fp32 streams."""
    args = inputs((8, 1568, width), stream, torch.bfloat16, device="cuda")
    needs_fused("triton", "add_layer_norm", dict(zip(("x", "residual", "weight", "bias"), args)))
    check("triton", *args, torch.bfloat16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_keeps_the_stream_dtype(backend):
    """bf16 stream and branch: backward keeps the bf16 sum (no fp32 copy of it, unlike autocast's LayerNorm) and
    fp32 per-row statistics."""
    x, r, w, b = inputs((2, 8, 40), torch.bfloat16, torch.bfloat16)
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with ops.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s, _ = ops.add_layer_norm(x, r, w, b, out_dtype=torch.bfloat16)
    rows = [t for t in kept if t.shape == x.shape]
    assert len(rows) == 1 and rows[0].dtype == torch.bfloat16 and rows[0].untyped_storage()._cdata == \
        s.untyped_storage()._cdata
    assert all(t.numel() in (16, 40) for t in kept if t is not rows[0])  # mean, rstd [M]; weight, bias [D]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_rerun(backend):
    def run():
        x, r, w, b = inputs((3, 11, 56), torch.float32, torch.bfloat16, seed=3)
        with ops.use_backend(backend):
            s, y = ops.add_layer_norm(x, r, w, b, out_dtype=torch.bfloat16)
        return [s.detach(), y.detach(), *grads(torch.cat([y.float().flatten(), s.flatten()]), [x, r, w, b])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("residual", [True, False])
def test_opcheck(backend, residual):
    x, r, w, b = inputs((2, 5, 24), torch.float32, torch.float32 if residual else None)
    torch.library.opcheck(torch_op("add_layer_norm", backend), (x, r, w, b, 1e-6, torch.float32))


def test_compiled_is_the_reference():
    """Under torch.compile the op is the reference (inductor fuses it): same values as the eager op."""
    x, r, w, b = inputs((2, 5, 40), torch.float32, torch.float32)
    fn = torch.compile(lambda *a: ops.add_layer_norm(*a), backend="aot_eager", fullgraph=True)
    s, y = fn(x, r, w, b)
    s0, y0 = ops.add_layer_norm(x, r, w, b)
    torch.testing.assert_close(y, y0, atol=1e-6, rtol=1e-6)
    assert torch.equal(s, s0)


BAD = {
    "residual shape": ("residual", lambda a: a.__setitem__(1, a[1][:, :-1].contiguous())),
    "weight width": ("weight", lambda a: a.__setitem__(2, a[2][:-1])),
    "bias rank": ("bias", lambda a: a.__setitem__(3, a[3][None])),
    "x dtype": ("x", lambda a: a.__setitem__(0, a[0].long())),
    "x layout": ("x", lambda a: a.__setitem__(0, a[0].transpose(0, 1))),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input(what):
    name, spoil = BAD[what]
    args = [t.detach() for t in inputs((2, 5, 24), torch.float32, torch.float32)]
    spoil(args)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.add_layer_norm(*args)
