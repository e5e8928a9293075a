"""Shared pieces of the per-op tests (`tests/ops/test_<op>.py`): the backends, the cases, the comparison rules,
the GPU marker, and the ids fuzz (bad token ids, canary memory around every buffer)."""

import pytest
import torch
from tolerances import ERROR_FLOOR, ERROR_RATIO
from torch.utils._python_dispatch import TorchDispatchMode

from videomae import _ext
from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.kernels._common import INTERPRET
from videomae.ops import testing as T

BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(
        not INTERPRET, reason="triton on CPU needs TRITON_INTERPRET=1 (GPU runs: the tests marked gpu)")),
]
ALL_BACKENDS = ("torch", "triton", "cuda")  # the public ops validate before dispatch: the same error for each
FUSED = ["triton", "cuda"]  # on a GPU

# Tiny and odd shapes (widths 40/56, 32x48 frames, tubelet 1, patch 8) keep the interpreter quick.
CASES = [
    T.Case(1, 4, 32, 48, tubelet=2, patch=16, dim=40, ratio=0.5),                       # 2x2x3 grid, K = 1536
    T.Case(2, 8, 32, 48, tubelet=2, patch=8, dim=56, ratio=0.75, mask_type="random"),   # 4x4x6, K = 384
    T.Case(3, 5, 32, 48, tubelet=1, patch=16, dim=40, ratio=0.9),                       # tubelet 1, 1 visible/frame
    T.Case(2, 6, 32, 48, tubelet=2, patch=8, dim=40, dec_dim=56, mask_type="frame"),    # whole slices masked
]
V2_CASES = [  # the running-cell decode mask needs an even spatial grid
    T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, ratio=0.75),
    T.Case(3, 8, 32, 32, tubelet=2, patch=8, dim=56, dec_dim=40, ratio=0.9, mask_type="random"),
]
OPCHECK_CASE = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)
FUZZ_CASE = T.Case(2, 4, 8, 8, tubelet=2, patch=4, dim=16, dec_dim=8, ratio=0.5)  # N = 8 tokens, K = 96
LOW = [torch.bfloat16, torch.float16]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
MEAN, STD = list(IMAGENET_MEAN), list(IMAGENET_STD)


# ------------------------------------------------------------------------------------------------ comparisons


def close(out, ref, tol, name: str = ""):
    """assert_close with atol scaled by the reference's largest magnitude (at least 1), see tolerances.py."""
    ref = ref.detach().double()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(out.detach().double(), ref, atol=tol[0] * scale, rtol=tol[1],
                               msg=(lambda m: f"{name}: {m}") if name else None)


def max_err(x, oracle) -> float:
    return (x.detach().double() - oracle.detach().double()).abs().max().item()


def check_2x(name, out, ref, oracle, dtype=None, floor_scale: float = 1.0):
    """flash-attention's rule: error to the fp64 oracle at most ERROR_RATIO x PyTorch's own in the same dtype, plus
    ERROR_FLOOR[dtype] x floor_scale for outputs PyTorch happens to get exact (tests/tolerances.py)."""
    err, ref_err = max_err(out, oracle), max_err(ref, oracle)
    floor = ERROR_FLOOR[dtype or out.dtype] * floor_scale
    assert err <= ERROR_RATIO * ref_err + floor, f"{name}: error {err:.3g} > 2 x PyTorch's {ref_err:.3g} (+{floor:.3g})"


def grads(out, inputs, seed=7):
    """d inputs of <out, g> for a fixed random g (same g for the op, the reference and the oracle); inputs that are
    None or take no grad are left out."""
    g = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(seed), dtype=torch.float64,
                    device=out.device)
    return torch.autograd.grad(out, [t for t in inputs if t is not None and t.requires_grad], g.to(out.dtype))


def to_fp64(*tensors, grad: bool | None = None):
    """Detached fp64 leaf copies (integer and Bool tensors stay as they are); they take a grad as the originals do,
    or all of them when `grad`."""
    return [t if t is None or not t.is_floating_point()
            else t.detach().double().requires_grad_(t.requires_grad if grad is None else grad) for t in tensors]


def unequal(ids: torch.Tensor) -> torch.Tensor:
    return ids[:, :-1].contiguous()


def noncontig(x):
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


# The GPU tests carry `@pytest.mark.gpu` in their own files: bench/gpu.sh runs the files that say `mark.gpu`.
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or INTERPRET,  # interpreted kernels at ViT shapes would take hours
    reason="needs a CUDA device and compiled Triton (run without TRITON_INTERPRET=1)")


def needs_fused(name: str, op: str, inputs: dict):
    """Skip unless backend `name` can run `op` on these inputs (GPU tests)."""
    from videomae import dispatch, ops

    if name not in dispatch.registered():
        pytest.skip(f"backend {name} not registered: {ops.backend_report()[op][name]['reasons']}")
    reasons = dispatch.registered()[name].not_supported_reasons(op, inputs)
    if reasons:
        pytest.skip(f"backend {name} cannot run {op}: {reasons}")


needs_ext = pytest.mark.skipif(not _ext.available(), reason=f"videomae._C unavailable: {_ext.reason()}")


# ------------------------------------------------------------------------------------------------ emulated CUDA

EMU_CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),  # 16-byte accesses
    (3, 3, 4, 28, 28, 2, 14, 0.5),  # scalar path: rows of 14 pixels
    (1, 1, 2, 16, 32, 2, 16, 0.5),  # one channel
]


def emu_inputs(case, dtype, uint8, d=40, seed=0):
    """-> videos, weight, bias, pos (fp32), ids (V1 TokenIds of a tube mask), grid"""
    from videomae.masking import token_ids, tube_mask

    b, c, t, h, w, tub, p, ratio = case
    gen = torch.Generator().manual_seed(seed)
    grid = (t // tub, h // p, w // p)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, dtype=torch.uint8)
    else:
        videos = torch.randn(b, c, t, h, w, generator=gen).to(dtype)
    weight = (torch.randn(d, c, tub, p, p, generator=gen) / (c * tub * p * p) ** 0.5).to(dtype)
    bias = torch.randn(d, generator=gen).to(dtype)
    pos = torch.randn(1, grid[0] * grid[1] * grid[2], d, generator=gen)
    ids = token_ids(tube_mask(b, grid, ratio, gen))
    return videos, weight, bias, pos, ids, grid


# ------------------------------------------------------------------------------------------------ the ids fuzz

BAD_IDS = ("above", "negative", "huge", "duplicate")  # values; the public ops also see wrong shapes and dtypes


def spoil(ids: torch.Tensor, num_tokens: int, kind: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, K] -> (a spoiled copy, Bool [B, K]: entries outside [0, N)). A third of the entries (at least one)
    become ids >= N, < 0 or about +-2^40; `duplicate` copies one id of each row onto another place of the row."""
    bad = ids.clone()
    b, k = ids.shape
    if kind == "duplicate":
        for row in range(b):
            src, dst = torch.randperm(k, generator=gen)[:2].tolist()
            bad[row, dst] = bad[row, src]
        return bad, torch.zeros_like(ids, dtype=torch.bool)
    where = torch.rand(b, k, generator=gen) < 1 / 3
    where.view(-1)[torch.randint(b * k, (1,), generator=gen)] = True
    lo, hi = {"above": (num_tokens, num_tokens + 50), "negative": (-50, 0), "huge": (2**40, 2**40 + 9)}[kind]
    values = torch.randint(lo, hi, (b, k), generator=gen)
    if kind == "huge":
        values = torch.where(torch.rand(b, k, generator=gen) < 0.5, values, -values)
    bad[where] = values[where]
    return bad, where


def repaired(ids: torch.Tensor, out: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """ids whose entries `out` are replaced by tokens absent from their row (so rows stay free of repeats)."""
    fixed = ids.clone()
    for row in range(ids.shape[0]):
        free = [n for n in range(num_tokens) if n not in set(ids[row][~out[row]].tolist())]
        fixed[row, out[row]] = torch.tensor(free[: int(out[row].sum())], dtype=ids.dtype)
    return fixed


def one_line(fn) -> str:
    """Run fn, which must raise ValueError with a one-line message; -> the message."""
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg


class Canaries:
    """Buffers carved from the middle of larger ones whose margins hold a fill pattern (NaN for floats): a write
    outside a buffer changes a margin (`touched`), a read outside one brings NaN into the result."""

    PAD = 256  # elements each side

    def __init__(self):
        self.buffers: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def carve(self, shape, dtype, device="cpu", name: str = "buffer") -> torch.Tensor:
        n = 1
        for s in shape:
            n *= s
        fill = float("nan") if dtype.is_floating_point else (True if dtype == torch.bool else 0x5A)
        flat = torch.full((n + 2 * self.PAD,), fill, dtype=dtype, device=device)
        self.buffers.append((name, flat, flat.view(torch.uint8).clone()))
        return flat[self.PAD:self.PAD + n].view(shape)

    def put(self, t: torch.Tensor | None, name: str = "input") -> torch.Tensor | None:
        """A copy of t inside a carved buffer (contiguous, at a storage offset)."""
        if t is None:
            return None
        out = self.carve(t.shape, t.dtype, t.device, name)
        return out.copy_(t.detach())

    def touched(self) -> list[str]:
        hits = []
        for name, flat, before in self.buffers:
            now, pad = flat.view(torch.uint8), self.PAD * flat.element_size()
            if not (torch.equal(now[:pad], before[:pad]) and torch.equal(now[-pad:], before[-pad:])):
                hits.append(name)
        return hits


class CanaryTorch:
    """Stands in for `torch` inside the Triton launchers' modules: every buffer they allocate (outputs, scratch,
    gradients) is carved by `Canaries`, so a kernel's store past its output changes a margin."""

    def __init__(self, canaries: Canaries):
        self._canaries = canaries

    def __getattr__(self, name):
        return getattr(torch, name)

    def empty(self, *size, dtype=None, device=None, **_):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        return self._canaries.carve(shape, dtype or torch.get_default_dtype(), device or "cpu", "kernel output")

    def zeros(self, *size, **kw):
        return self.empty(*size, **kw).zero_()

    def empty_like(self, t, dtype=None, **_):
        return self.empty(t.shape, dtype=dtype or t.dtype, device=t.device)

    def zeros_like(self, t, dtype=None, **_):
        return self.empty_like(t, dtype=dtype).zero_()


def kernel_impls(backend: str, emu=None, monkeypatch=None, canaries: Canaries | None = None) -> dict:
    """The backend's six op implementations, called with validation bypassed: {op or op_backward: fn}. Triton's
    launchers allocate through `CanaryTorch` (needs monkeypatch and canaries); cuda is the CPU emulation."""
    from videomae.ops import library

    if backend == "cuda":
        return {op: getattr(emu, library.qualname(op, "cuda").split("::")[1]) for op in library.SCHEMAS}
    if backend == "triton":
        import videomae.kernels._common
        import videomae.kernels.cube_embed
        import videomae.kernels.decoder_input
        import videomae.kernels.norm_pix_mse

        for kernel_module in (videomae.kernels._common, videomae.kernels.cube_embed, videomae.kernels.decoder_input,
                              videomae.kernels.norm_pix_mse):
            monkeypatch.setattr(kernel_module, "torch", CanaryTorch(canaries))
    return python_impls(backend)


# ------------------------------------------------------------------------------------------------ no host sync


aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.nonzero, aten.masked_select, aten.unique_dim,
           aten._unique2, aten.equal}
BOOL_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class SyncRecorder(TorchDispatchMode):
    """Records every data-dependent aten op (each one a device -> host wait on a GPU). A dispatch mode cannot look
    inside a custom op (one call to it), so the tests run each backend's Python implementations directly under it."""

    def __init__(self):
        super().__init__()
        self.offenses = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        bool_index = packet in BOOL_INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ())
        if packet in SYNCING or bool_index:
            self.offenses.append(str(func))
        return func(*args, **(kwargs or {}))


def python_impls(backend: str) -> dict:
    """The Python kernels of a backend (torch, triton): {op or op_backward: fn}."""
    if backend == "torch":
        from videomae.ops import torch_backend as mod
    else:
        from videomae.ops import triton_backend as mod
    return mod.IMPLS
