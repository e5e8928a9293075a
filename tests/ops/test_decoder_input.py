"""decoder_input on every backend: torch and Triton (under TRITON_INTERPRET=1) against the fp64 oracle
(`decoder_input_ref(upcast=True)`), the CUDA kernels in their CPU emulation (csrc/emu) and, marked `gpu`, the fused
backends on a GPU; the torch backend's official dtype promotion; bad input (one line, the same for every backend),
the ids fuzz (canary memory around every buffer), degenerate shapes, opcheck, bitwise reruns."""

import pytest
import torch
from op_helpers import (
    ALL_BACKENDS,
    BACKENDS,
    BAD_IDS,
    CASES,
    DTYPES,
    FUSED,
    FUZZ_CASE,
    LOW,
    OPCHECK_CASE,
    V2_CASES,
    Canaries,
    SyncRecorder,
    check_2x,
    close,
    grads,
    kernel_impls,
    needs_ext,
    needs_fused,
    needs_gpu,
    noncontig,
    one_line,
    python_impls,
    repaired,
    spoil,
    to_fp64,
)
from tolerances import TOL

import videomae.ops as ops
from videomae.dispatch import use_backend
from videomae.masking import running_cell_mask, token_ids, tube_mask
from videomae.ops import testing as T
from videomae.ops.decoder_input import decoder_input_ref
from videomae.ops.library import torch_op

DEC_PARAMS = (
    [(c, torch.float32, False) for c in CASES]
    + [(c, torch.float32, True) for c in V2_CASES]
    + [(V2_CASES[0], d, v2) for d in LOW for v2 in (False, True)]
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,dtype,v2", DEC_PARAMS, ids=lambda p: str(p))
def test_decoder_input(backend, case, dtype, v2):
    kw = T.decoder_input_inputs(case, dtype, v2=v2, pos_grad=True)
    with use_backend(backend):
        out = ops.decoder_input(**kw)
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    ref = decoder_input_ref(**kw64, upcast=True)
    # The torch backend promotes as the official code (16-bit x_vis + fp32 pos -> fp32); fused ones keep x_vis'.
    assert out.dtype == (torch.float32 if backend == "torch" else dtype) and out.shape == ref.shape
    close(out.to(dtype), ref, TOL[dtype])
    names = ["x_vis", "mask_token", "pos"]
    for name, g, r in zip(names, grads(out, [kw[k] for k in names]), grads(ref, [kw64[k] for k in names])):
        assert g.dtype == kw[name].dtype and g.shape == kw[name].shape, name
        close(g, r, TOL[dtype], name)


def test_torch_backend_is_the_official_promotion():
    """bf16 x_vis with the fp32 table: the official sums are fp32, bit for bit."""
    kw = T.decoder_input_inputs(V2_CASES[0], torch.bfloat16, v2=True)
    with use_backend("torch"):
        out = ops.decoder_input(**kw)
    b, d = kw["x_vis"].shape[0], kw["x_vis"].shape[2]
    pos = kw["pos"].expand(b, -1, -1)
    mask = torch.ones(b, pos.shape[1], dtype=torch.bool).scatter_(1, kw["visible"], False)
    decoded = torch.zeros_like(mask).scatter_(1, kw["decoded"], True)
    want = torch.cat([kw["x_vis"] + pos[~mask].reshape(b, -1, d),
                      kw["mask_token"] + pos[decoded].reshape(b, -1, d)], dim=1)
    assert out.dtype == want.dtype == torch.float32
    assert torch.equal(out, want)


def test_decoder_input_without_pos_grad():
    kw = T.decoder_input_inputs(CASES[0], torch.float32)
    out = ops.decoder_input(**kw)
    gx, gm = torch.autograd.grad(out.sum(), [kw["x_vis"], kw["mask_token"]])
    assert torch.equal(gx, torch.ones_like(gx))
    assert torch.equal(gm, torch.full_like(gm, out.shape[0] * (out.shape[1] - gx.shape[1])))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_rerun(backend):
    def run():
        kw = T.decoder_input_inputs(CASES[1], torch.float32, pos_grad=True)
        with use_backend(backend):
            out = ops.decoder_input(**kw)
        return [out.detach(), *grads(out, [kw[k] for k in ("x_vis", "mask_token", "pos")])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True])
def test_opcheck(backend, v2):
    k = T.decoder_input_inputs(OPCHECK_CASE, torch.float32, v2=v2, pos_grad=True)
    torch.library.opcheck(torch_op("decoder_input", backend),
                          (k["x_vis"], k["mask_token"], k["pos"], k["visible"], k["decoded"]))


def _run_kernels(impls, v2):
    d = {n: t.detach() for n, t in T.decoder_input_inputs(OPCHECK_CASE, torch.float32, v2=v2).items()}
    with SyncRecorder() as rec:
        y = impls["decoder_input"](d["x_vis"], d["mask_token"], d["pos"], d["visible"], d["decoded"])
        impls["decoder_input_backward"](torch.ones_like(y), d["visible"], d["decoded"], OPCHECK_CASE.tokens, True)
    return rec.offenses


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_kernels_never_sync(backend, v2):
    """No data-dependent op in the backend's kernels, forward and backward (the ids made outside, on the CPU)."""
    assert _run_kernels(python_impls(backend), v2) == []


def test_the_sync_check_catches_a_planted_sync():
    impls = dict(python_impls("torch"))
    plain = impls["decoder_input"]
    impls["decoder_input"] = lambda x, *a: plain(x, *a) * (x.sum() > 0).item()
    assert _run_kernels(impls, False)


# ------------------------------------------------------------------------------------------------- emulated CUDA


@pytest.mark.parametrize("dtype,v2,d", [(torch.float32, False, 40), (torch.bfloat16, True, 56),
                                        (torch.float32, True, 13), (torch.bfloat16, False, 13)])  # 13: scalar path
def test_emulated_decoder_input(emu, dtype, v2, d):
    b, grid = 3, (2, 2, 4)
    gen = torch.Generator().manual_seed(0)
    mask = tube_mask(b, grid, 0.75, gen)
    ids = token_ids(mask, running_cell_mask(b, grid, 0.5, gen) if v2 else None)
    n, nv = mask.shape[1], ids.visible.shape[1]
    x_vis = torch.randn(b, nv, d, generator=gen).to(dtype)
    token = torch.randn(1, 1, d, generator=gen)
    pos = torch.randn(n, d, generator=gen)
    out = emu.decoder_input_cuda(x_vis, token, pos, ids.visible, ids.decoded)
    args64 = to_fp64(x_vis, token, pos, grad=True)
    oracle = decoder_input_ref(*args64, ids.visible, ids.decoded, upcast=True)
    assert out.dtype == dtype and out.shape == oracle.shape
    close(out, oracle, TOL[dtype], "out")
    grad = torch.randn(out.shape, generator=gen).to(dtype)
    gx, gm, gp = emu.decoder_input_cuda_backward(grad, ids.visible, ids.decoded, n, True)
    ox, om, op = torch.autograd.grad(oracle, args64, grad.double())
    assert gx.dtype == dtype and gm.dtype == gp.dtype == torch.float32
    close(gx, ox, TOL[dtype], "d x_vis")
    close(gm, om.view(-1), TOL[torch.float32], "d mask_token")
    close(gp, op, TOL[torch.float32], "d pos")
    _, _, none = emu.decoder_input_cuda_backward(grad, ids.visible, ids.decoded, n, False)
    assert none.numel() == 0


def test_emulated_opcheck(cuda_ops_on_cpu):
    grid = (2, 2, 4)
    ids = token_ids(tube_mask(2, grid, 0.75, torch.Generator().manual_seed(4)),
                    running_cell_mask(2, grid, 0.5, torch.Generator().manual_seed(5)))
    x_vis = torch.randn(2, ids.visible.shape[1], 40, requires_grad=True)
    token = torch.randn(1, 1, 40, requires_grad=True)
    pos = torch.randn(1, 16, 40, requires_grad=True)
    torch.library.opcheck(cuda_ops_on_cpu.decoder_input_cuda, (x_vis, token, pos, ids.visible, ids.decoded))


def test_emulated_kernel_checks(emu):
    ids = token_ids(tube_mask(2, (2, 2, 3), 0.75, torch.Generator().manual_seed(0)))
    vis, dec = ids.visible, ids.decoded
    x_vis = torch.randn(2, 4, 40)
    with pytest.raises(ValueError, match="pos must be"):
        emu.decoder_input_cuda(x_vis, torch.randn(40), torch.randn(11, 39), vis, dec)
    with pytest.raises(ValueError, match="mask_token must have 40 values"):
        emu.decoder_input_cuda(x_vis, torch.randn(39), torch.randn(12, 40), vis, dec)
    with pytest.raises(ValueError, match="x_vis must be float32, float16 or bfloat16"):
        emu.decoder_input_cuda(x_vis.double(), torch.randn(40), torch.randn(12, 40), vis, dec)
    with pytest.raises(ValueError, match="visible must list x_vis' 3 tokens"):
        emu.decoder_input_cuda(x_vis[:, :3].contiguous(), torch.randn(40), torch.randn(12, 40), vis, dec)
    with pytest.raises(ValueError, match="decoded must be \\[2, K\\] with K <= 12"):
        emu.decoder_input_cuda(x_vis, torch.randn(40), torch.randn(12, 40), vis, torch.zeros(2, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="grad must have N_vis \\+ N_dec = 12 rows"):
        emu.decoder_input_cuda_backward(torch.randn(2, 11, 40), vis, dec, 12, True)


# ------------------------------------------------------------------------------------------------- bad input

BAD = {
    "x_vis rows": ("x_vis", lambda k: k.update(x_vis=k["x_vis"][:, :-1].contiguous())),
    "x_vis dtype": ("x_vis", lambda k: k.update(x_vis=k["x_vis"].long())),
    "mask_token width": ("mask_token", lambda k: k.update(mask_token=k["mask_token"][..., :-1])),
    "pos width": ("pos", lambda k: k.update(pos=k["pos"][..., :-1].contiguous())),
    "pos layout": ("pos", lambda k: k.update(pos=noncontig(k["pos"][0]))),
    "visible batch": ("visible", lambda k: k.update(visible=k["visible"][:1])),
    "visible dtype": ("visible", lambda k: k.update(visible=k["visible"].int())),
    "visible out of range": ("visible", lambda k: k["visible"].__setitem__((1, 1), 16)),
    "decoded negative": ("decoded", lambda k: k["decoded"].__setitem__((0, 0), -3)),
    "decoded repeated": ("decoded", lambda k: k["decoded"].__setitem__((1, 2), k["decoded"][1, 0])),
    "decoded more ids than tokens": ("decoded", lambda k: k.update(decoded=k["decoded"].repeat(1, 3))),
    "decoded rank": ("decoded", lambda k: k.update(decoded=k["decoded"][0])),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input_is_one_line_naming_it_on_every_backend(what):
    name, spoil_kw = BAD[what]
    kw = T.decoder_input_inputs(V2_CASES[0], torch.float32, v2=True)
    spoil_kw(kw)
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: ops.decoder_input(**kw)))
    assert len(messages) == 1 and messages.pop().startswith(f"{name} ")


# ------------------------------------------------------------------------------------------------- the ids fuzz

SHAPES = {"rank 1": lambda ids: ids[0], "batch": lambda ids: ids[:1], "int32": lambda ids: ids.int(),
          "more than N": lambda ids: torch.arange(FUZZ_CASE.tokens + 1).expand(ids.shape[0], -1).contiguous(),
          "layout": lambda ids: noncontig(ids)}


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_public_op_refuses_bad_ids_in_one_line(seed):
    gen = torch.Generator().manual_seed(seed)
    kinds = [*BAD_IDS, *SHAPES]
    kind, which = kinds[seed % len(kinds)], ("visible", "decoded")[seed % 2]
    canaries = Canaries()
    kw = T.decoder_input_inputs(FUZZ_CASE, torch.float32, seed=seed, v2=True)
    kw = {k: canaries.put(v, k) for k, v in kw.items()}
    ids = kw[which]
    kw[which] = SHAPES[kind](ids) if kind in SHAPES else spoil(ids, FUZZ_CASE.tokens, kind, gen)[0]
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: ops.decoder_input(**kw)))
    # visible's count is x_vis' rows: a visible of the wrong width is reported on x_vis
    assert len(messages) == 1 and messages.pop().split()[0] in (which, "x_vis"), messages
    assert canaries.touched() == []


@pytest.mark.parametrize("backend", [*BACKENDS, "cuda"])
@pytest.mark.parametrize("which", ["visible", "decoded"])
@pytest.mark.parametrize("kind", BAD_IDS)
def test_fuzz_kernels_stay_inside_their_buffers(backend, which, kind, request, monkeypatch):
    """Validation bypassed, inside canary memory: Triton and CUDA add no pos row for an id outside [0, N) (its row is
    x_vis' or the mask token alone, and no pos gradient); torch refuses it (aten's bounds check). A repeated id: an
    exact forward, d x_vis and d mask_token everywhere; the fused d pos keeps one of its rows (torch sums both)."""
    emu = request.getfixturevalue("emu") if backend == "cuda" else None
    canaries = Canaries()
    impl = kernel_impls(backend, emu, monkeypatch, canaries)
    seed = 10 * BAD_IDS.index(kind) + (which == "decoded")
    gen = torch.Generator().manual_seed(seed)
    kw = T.decoder_input_inputs(FUZZ_CASE, torch.float32, seed=seed, v2=True)
    n = FUZZ_CASE.tokens
    spoiled, out_of_range = spoil(kw[which], n, kind, gen)
    kw[which] = spoiled
    x_vis, token, pos, visible, decoded = (canaries.put(kw[k], k) for k in
                                           ("x_vis", "mask_token", "pos", "visible", "decoded"))
    b, nv, d = x_vis.shape
    grad = canaries.put(torch.randn(b, nv + decoded.shape[1], d, generator=gen), "grad")

    def run():
        return (impl["decoder_input"](x_vis, token, pos, visible, decoded),
                impl["decoder_input_backward"](grad, visible, decoded, n, True))

    if backend == "torch" and out_of_range.any():
        with pytest.raises(RuntimeError, match="out of bounds"):
            run()
    else:
        out, got = run()
        x64, t64, p64 = to_fp64(x_vis, token, pos, grad=True)
        fixed = {k: kw[k] for k in ("visible", "decoded")}
        fixed[which] = repaired(spoiled, out_of_range, n)
        absent = torch.zeros(b, nv + decoded.shape[1], dtype=torch.bool)
        absent[:, slice(0, nv) if which == "visible" else slice(nv, None)] = out_of_range
        rows = torch.cat([x64, t64.expand(b, decoded.shape[1], d)], dim=1)
        ref = rows + torch.where(absent[..., None], 0.0, p64[0][torch.cat([fixed["visible"], fixed["decoded"]], 1)])
        close(out, ref, TOL[torch.float32], "out")
        alone = torch.cat([x_vis, token.expand(b, decoded.shape[1], d)], dim=1)
        assert torch.equal(out[absent], alone[absent])  # bit for bit: no pos term
        exact = kind != "duplicate" or backend == "torch"
        for name, g, r in zip(("d x_vis", "d mask_token", "d pos"), got,
                              torch.autograd.grad(ref, [x64, t64, p64], grad.double())):
            if exact or name != "d pos":
                close(g.view(r.shape), r, TOL[torch.float32], name)
            assert torch.isfinite(g).all(), name
    assert canaries.touched() == []


# ------------------------------------------------------------------------------------------------- degenerate shapes


@pytest.mark.parametrize("backend", [*BACKENDS, "cuda"])
@pytest.mark.parametrize("batch,visible", [(0, 4), (2, 0)], ids=["empty batch", "no visible cube"])
def test_empty_batch_or_no_visible_cube(backend, batch, visible, request):
    """[0, ...] out for an empty batch; with no visible cube the rows are the mask tokens alone: every backend."""
    n, d = 8, 16
    ids = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(i)) for i in range(batch)]
                      ) if batch else torch.zeros(0, n, dtype=torch.int64)
    vis, dec = ids[:, :visible].contiguous(), ids[:, visible:].contiguous()
    x_vis = torch.randn(batch, visible, d, requires_grad=True)
    token = torch.randn(1, 1, d, requires_grad=True)
    pos = torch.randn(1, n, d, requires_grad=True)
    if backend == "cuda":
        emu = request.getfixturevalue("emu")
        out = emu.decoder_input_cuda(x_vis, token, pos, vis, dec)
        got = emu.decoder_input_cuda_backward(torch.ones(out.shape), vis, dec, n, True)
    else:
        with use_backend(backend):
            out = ops.decoder_input(x_vis, token, pos, vis, dec)
        got = torch.autograd.grad(out.sum(), [x_vis, token, pos])
    assert out.shape == (batch, n, d)
    torch.testing.assert_close(out, decoder_input_ref(x_vis, token, pos, vis, dec))
    assert got[0].shape == x_vis.shape
    assert torch.equal(got[1].view(-1), torch.full((d,), float(batch * dec.shape[1])))
    assert torch.equal(got[2].view(n, d), torch.full((n, d), float(batch)))


# ------------------------------------------------------------------------------------------------- GPU

GPU_CASES = [  # B, T', H', W', D, ratio
    (2, 2, 2, 3, 40, 0.75),
    (3, 4, 2, 2, 56, 0.5),
    (32, 8, 14, 14, 384, 0.9),  # ViT-B decoder
]


@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v2", [False, True])
@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_on_gpu(case, dtype, v2, no_tf32):
    b, t, h, w, d, ratio = case
    gen = torch.Generator("cuda").manual_seed(0)
    mask = tube_mask(b, (t, h, w), ratio, torch.Generator().manual_seed(0))
    ids = token_ids(mask, running_cell_mask(b, (t, h, w), 0.5, torch.Generator().manual_seed(1)) if v2 else None)
    ids = ids.to("cuda")  # made on the CPU, as the collate makes them
    n, nv = t * h * w, ids.visible.shape[1]
    x_vis = torch.randn(b, nv, d, generator=gen, device="cuda").to(dtype).requires_grad_()
    token = (torch.randn(1, 1, d, generator=gen, device="cuda") * 0.02).requires_grad_()
    pos = torch.randn(1, n, d, generator=gen, device="cuda").requires_grad_()
    args = (x_vis, token, pos, ids.visible, ids.decoded)
    with use_backend("cuda"):
        out = ops.decoder_input(*args)
        got = grads(out, args)
        out2 = ops.decoder_input(*args)
        got2 = grads(out2, args)
    # PyTorch's own in x_vis' dtype: the promoted (fp32) sum rounded once, which is what the kernel stores.
    ref = decoder_input_ref(*args).to(dtype)
    ref_grads = grads(ref, args)
    oracle_args = [*to_fp64(*args[:3]), *args[3:]]
    oracle = decoder_input_ref(*oracle_args, upcast=True)
    oracle_grads = grads(oracle, oracle_args)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    check_2x("out", out, ref, oracle)
    for name, g, r, o in zip(("x_vis", "mask_token", "pos"), got, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        check_2x(f"d {name}", g, r, o)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(got, got2)), "not bitwise"


@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_kernel_checks_on_gpu():
    ids = token_ids(tube_mask(2, (2, 2, 3), 0.75, torch.Generator().manual_seed(0))).to("cuda")
    op = torch.ops.videomae
    x_vis = torch.randn(2, 3, 40, device="cuda")
    with pytest.raises(ValueError, match="pos must be"):
        op.decoder_input_cuda(x_vis, torch.randn(40, device="cuda"), torch.randn(11, 39, device="cuda"), ids.visible,
                              ids.decoded)
    with pytest.raises(ValueError, match="mask_token must have 40 values"):
        op.decoder_input_cuda(x_vis, torch.randn(39, device="cuda"), torch.randn(12, 40, device="cuda"), ids.visible,
                              ids.decoded)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", list(T.VIT))
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.gpu
@needs_gpu
def test_fused_at_vit_shapes_on_gpu(backend, dtype, size, v2, no_tf32):
    kw = T.decoder_input_inputs(T.VIT[size], dtype, "cuda", v2=v2, pos_grad=True)
    needs_fused(backend, "decoder_input", kw)
    names = ["x_vis", "mask_token", "pos"]
    with use_backend(backend):
        out = ops.decoder_input(**kw)
    eager = decoder_input_ref(**kw).to(dtype)  # PyTorch's sums (promoted) rounded to the fused output's dtype
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    oracle = decoder_input_ref(**kw64, upcast=True)
    check_2x("out", out, eager, oracle, dtype, oracle.abs().max().item())
    for name, gk, ge, go in zip(names, grads(out, [kw[k] for k in names]), grads(eager, [kw[k] for k in names]),
                                grads(oracle, [kw64[k] for k in names])):
        check_2x(f"d {name}", gk, ge, go, dtype, go.abs().max().item())
    with use_backend(backend):
        again = ops.decoder_input(**kw)
    assert torch.equal(out, again)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.gpu
@needs_gpu
def test_opcheck_on_gpu(backend):
    d = T.decoder_input_inputs(OPCHECK_CASE, torch.float32, "cuda", v2=True, pos_grad=True)
    needs_fused(backend, "decoder_input", d)
    torch.library.opcheck(torch_op("decoder_input", backend),
                          (d["x_vis"], d["mask_token"], d["pos"], d["visible"], d["decoded"]))
