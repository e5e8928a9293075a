"""Visible-only cube embedding: a GEMM whose A operand is gathered straight from the clip.

The clip is read as it is (fp32, 16-bit or uint8) and converted to the weight's dtype in registers, so a
fp32 clip under autocast is never copied to bf16; bias and pos may be of any float dtype.

out[m] = cube(video, tokens[m]) @ weight^T + bias + pos[tokens[m]], m over the B*N_vis visible cubes;
masked cubes are never read. Backward: gather the visible cubes once (d weight = g^T A by torch.mm),
scatter g W back into the clip (each pixel belongs to one cube: no races), and sum d pos per token.
A token id outside [0, N) reads and writes nothing: its row is the bias alone, its cube gets no gradient.
"""

import torch
import triton
import triton.language as tl

from videomae.ops._index import channel_constants

from ._common import INTERPRET, cube_offsets, launcher, pixel_offsets, valid_tokens


@triton.jit
def _load_cubes(video, scale, shift, base, rk, m_ok, k_ok, sC, sT, sH, sW,
                TUB: tl.constexpr, P: tl.constexpr, IS_UINT8: tl.constexpr, dtype: tl.constexpr):
    """[BLOCK_M, BLOCK_K] tile of cube values in `dtype`; uint8 pixels become (x/255 - mean)/std in fp32 first."""
    off, c = pixel_offsets(rk, sC, sT, sH, sW, TUB, P)
    a = tl.load(video + base[:, None] + off[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0)
    if IS_UINT8:
        sc = tl.load(scale + c, mask=k_ok, other=0.0)
        sh = tl.load(shift + c, mask=k_ok, other=0.0)
        a = a.to(tl.float32) * sc[None, :] + sh[None, :]
    return a.to(dtype)


@triton.jit
def _cube_embed_fwd_kernel(
    video, tokens, weight, bias, pos, scale, shift, out,
    M, D, NV, N, sB, sC, sT, sH, sW, GH, GW,
    K: tl.constexpr, TUB: tl.constexpr, P: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_POS: tl.constexpr,
    IS_UINT8: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # K (C*t*p*p) is a loop bound: constexpr, because triton 3.6's interpreter cannot loop over a runtime scalar.
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < D
    tok, real = valid_tokens(tl.load(tokens + rm, mask=m_ok, other=0), m_ok, N)
    base = cube_offsets(tok, rm // NV, sB, sT, sH, sW, GH, GW, TUB, P)
    dtype = weight.dtype.element_ty
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < K
        a = _load_cubes(video, scale, shift, base, rk, real, k_ok, sC, sT, sH, sW, TUB, P, IS_UINT8, dtype)
        w = tl.load(weight + rn[None, :] * K + rk[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's bf16 dot is wrong; bf16 products are exact in fp32, so this is equivalent
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        # Rounded to the compute dtype first, as conv3d under autocast rounds its bias.
        acc += tl.load(bias + rn, mask=n_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
    ok = m_ok[:, None] & n_ok[None, :]
    if HAS_POS:
        # pos is cast to the output dtype first, like the official `pos_embed.type_as(x)`.
        p = tl.load(pos + tok.to(tl.int64)[:, None] * D + rn[None, :], mask=ok & real[:, None], other=0.0)
        acc += p.to(dtype).to(tl.float32)
    tl.store(out + rm.to(tl.int64)[:, None] * D + rn[None, :], acc.to(dtype), mask=ok)


@triton.jit
def _cube_gather_kernel(
    video, tokens, scale, shift, cubes, M, K, NV, N, sB, sC, sT, sH, sW, GH, GW,
    TUB: tl.constexpr, P: tl.constexpr, IS_UINT8: tl.constexpr, SCATTER: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # cubes[m, k] = video[cube m, value k] (gather, zeros for an id outside [0, N)), or the reverse store
    # (SCATTER, for d video; nothing stored for such an id).
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    m_ok = rm < M
    k_ok = rk < K
    ok = m_ok[:, None] & k_ok[None, :]
    tok, real = valid_tokens(tl.load(tokens + rm, mask=m_ok, other=0), m_ok, N)
    base = cube_offsets(tok, rm // NV, sB, sT, sH, sW, GH, GW, TUB, P)
    dst = cubes + rm.to(tl.int64)[:, None] * K + rk[None, :]
    if SCATTER:
        off, _ = pixel_offsets(rk, sC, sT, sH, sW, TUB, P)
        tl.store(video + base[:, None] + off[None, :], tl.load(dst, mask=ok, other=0.0),
                 mask=real[:, None] & k_ok[None, :])
    else:
        a = _load_cubes(video, scale, shift, base, rk, real, k_ok, sC, sT, sH, sW, TUB, P, IS_UINT8,
                        cubes.dtype.element_ty)
        tl.store(dst, a, mask=ok)


def _geometry(videos: torch.Tensor, weight: torch.Tensor):
    """-> tubelet, patch, token grid (T', H', W'), token count N"""
    _, _, t, p, _ = weight.shape
    grid = (videos.shape[2] // t, videos.shape[3] // p, videos.shape[4] // p)
    return t, p, grid, grid[0] * grid[1] * grid[2]


def _norm(videos: torch.Tensor, mean, std):
    """uint8 clips: per-channel scale 1/(255 std) and shift -mean/std, fp32 [C] (from cached constants)."""
    m, s = channel_constants(mean, std, videos.device)
    return 1.0 / (255.0 * s), -m / s


def _precision(dtype: torch.dtype) -> str | None:
    # fp32 follows torch's matmul setting, so the comparison with the eager reference is like for like;
    # None (Triton's default) for 16-bit inputs, whose products are exact in the fp32 accumulator anyway.
    if dtype != torch.float32:
        return None
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def cube_embed_fwd(videos, weight, bias, pos, tokens, mean, std) -> torch.Tensor:
    """videos [B, C, T, H, W] fp32/16-bit/uint8; weight [D, C, t, p, p]; bias [D] / pos [N, D] any float or None;
    tokens [B, N_vis] int64 visible ids -> [B, N_vis, D] in weight's dtype"""
    t, p, (_, gh, gw), n = _geometry(videos, weight)
    b, nv = tokens.shape
    d, k = weight.shape[0], weight[0].numel()
    out = torch.empty(b, nv, d, dtype=weight.dtype, device=weight.device)
    if out.numel() == 0:
        return out
    scale, shift = _norm(videos, mean, std) if videos.dtype == torch.uint8 else (weight, weight)
    bm, bn, bk = 64, 64, 32
    grid = (triton.cdiv(b * nv, bm), triton.cdiv(d, bn))
    launcher(_cube_embed_fwd_kernel)[grid](
        videos, tokens, weight, weight if bias is None else bias, weight if pos is None else pos, scale, shift, out,
        b * nv, d, nv, n, *videos.stride(), gh, gw,
        K=k, TUB=t, P=p, HAS_BIAS=bias is not None, HAS_POS=pos is not None, IS_UINT8=videos.dtype == torch.uint8,
        PRECISION=_precision(weight.dtype), UPCAST=INTERPRET and weight.dtype == torch.bfloat16,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )
    return out


def _gather_scatter(videos, cubes, tokens, weight, mean, std, scatter: bool) -> None:
    t, p, (_, gh, gw), n = _geometry(videos, weight)
    b, nv = tokens.shape
    k = weight[0].numel()
    if tokens.numel() == 0:
        return
    scale, shift = _norm(videos, mean, std) if videos.dtype == torch.uint8 else (cubes, cubes)
    bm, bk = 32, 128
    grid = (triton.cdiv(b * nv, bm), triton.cdiv(k, bk))
    launcher(_cube_gather_kernel)[grid](
        videos, tokens, scale, shift, cubes, b * nv, k, nv, n, *videos.stride(), gh, gw,
        TUB=t, P=p, IS_UINT8=videos.dtype == torch.uint8, SCATTER=scatter, BLOCK_M=bm, BLOCK_K=bk,
    )


def gather_cubes(videos, weight, tokens, mean, std) -> torch.Tensor:
    """-> visible cubes [B*N_vis, C*t*p*p] in weight's dtype (conv3d weight order)."""
    cubes = torch.empty(tokens.numel(), weight[0].numel(), dtype=weight.dtype, device=weight.device)
    _gather_scatter(videos, cubes, tokens, weight, mean, std, scatter=False)
    return cubes


def scatter_cubes(cubes, videos_like, weight, tokens) -> torch.Tensor:
    """cubes [B*N_vis, C*t*p*p] -> clip-shaped tensor in videos_like's dtype, zero outside the listed cubes."""
    out = torch.zeros_like(videos_like)
    _gather_scatter(out, cubes, tokens, weight, (0.0,), (1.0,), scatter=True)
    return out
