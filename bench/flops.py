"""Analytic FLOPs per clip of a VideoMAE pretraining step, counted from the model's own layers.

Convention (matmul FLOPs only, as MFU counts them; LayerNorm, softmax, GELU, bias and the loss are
left out, each well under 1%):
- a block over n tokens of width D with MLP width F: qkv 3nD^2 + proj nD^2 + MLP 2nDF MACs, plus the
  two attention products q k^T and attn v, 2 n^2 D MACs (the quadratic term);
- encoder on the visible tokens, decoder on N_vis + N_dec tokens, head on the N_dec decoded tokens;
- forward FLOPs = 2 x MACs; forward+backward = 3 x forward, except the cube embedding, whose input is
  data and needs no gradient: its backward is the weight gradient only (2 x instead of 3 x);
- `embed_all=True` (default) embeds every cube, as the official code does before dropping the masked
  ones; our fused `cube_embed` embeds only the visible ones (`embed_all=False`: the work it must do).

ViT-B, 16x224x224, ratio 0.9, decoder depth 4: 70.9 GFLOP forward and 209.0 GFLOP forward+backward per
clip (the GUIDE's 71 / 209; 3 x 70.9 = 212.7 less the 3.7 GFLOP data gradient the conv never computes).

    python bench/flops.py                 # table for S/B/L/H/g at 16x224, ratio 0.9
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PretrainShape:
    """The sizes that set the cost of a pretraining step (read off a model by `shape_of`)."""

    embed_dim: int
    depth: int
    mlp_hidden: int
    decoder_dim: int
    decoder_depth: int
    decoder_mlp_hidden: int
    patch_size: int
    tubelet_size: int
    in_chans: int


def shape_of(model) -> PretrainShape:
    """Read the sizes from a `PretrainVisionTransformer` (any device, `meta` included)."""
    enc, dec = model.encoder, model.decoder
    proj = enc.patch_embed.proj
    return PretrainShape(
        embed_dim=proj.out_channels, depth=len(enc.blocks), mlp_hidden=enc.blocks[0].mlp.fc1.out_features,
        decoder_dim=dec.head.in_features, decoder_depth=len(dec.blocks),
        decoder_mlp_hidden=dec.blocks[0].mlp.fc1.out_features if len(dec.blocks) else 0,
        patch_size=proj.kernel_size[1], tubelet_size=proj.kernel_size[0], in_chans=proj.in_channels,
    )


class _ScalarsOnCpu(torch.overrides.TorchFunctionMode):
    """Inside `torch.device("meta")`: keep `linspace` (the drop-path schedule, read with `.item()`) on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def shape_for(name: str, **overrides) -> PretrainShape:
    """Build the registered model on the meta device (no memory, no init cost) and read its sizes."""
    import videomae

    with torch.device("meta"), _ScalarsOnCpu():
        return shape_of(videomae.create_model(name, **overrides))


def tokens(s: PretrainShape, frames: int = 16, size: int = 224, ratio: float = 0.9) -> tuple[int, int, int]:
    """(N, N_vis, N_dec) under tube masking: `int(ratio * H'W')` masked per frame, all of them decoded."""
    t, hw = frames // s.tubelet_size, (size // s.patch_size) ** 2
    n_vis = t * (hw - int(ratio * hw))
    return t * hw, n_vis, t * hw - n_vis


def _block_macs(n: int, d: int, hidden: int) -> tuple[int, int]:
    """(linear MACs, attention-product MACs) of one block over n tokens."""
    return 4 * n * d * d + 2 * n * d * hidden, 2 * n * n * d


def pretrain_flops(
    s: PretrainShape, frames: int = 16, size: int = 224, ratio: float = 0.9, embed_all: bool = True
) -> dict[str, float]:
    """FLOPs per clip: each part's forward FLOPs, `fwd`, `fwd_bwd`, and the token counts."""
    n, n_vis, n_dec = tokens(s, frames, size, ratio)
    cube = s.in_chans * s.tubelet_size * s.patch_size**2
    enc_lin, enc_attn = _block_macs(n_vis, s.embed_dim, s.mlp_hidden)
    n_d = n_vis + n_dec
    dec_lin, dec_attn = _block_macs(n_d, s.decoder_dim, s.decoder_mlp_hidden)
    macs = {
        "embed": (n if embed_all else n_vis) * cube * s.embed_dim,
        "encoder_linear": s.depth * enc_lin,
        "encoder_attention": s.depth * enc_attn,
        "encoder_to_decoder": n_vis * s.embed_dim * s.decoder_dim,
        "decoder_linear": s.decoder_depth * dec_lin,
        "decoder_attention": s.decoder_depth * dec_attn,
        "head": n_dec * s.decoder_dim * cube,
    }
    parts = {k: 2.0 * v for k, v in macs.items()}
    fwd = sum(parts.values())
    return {**parts, "fwd": fwd, "fwd_bwd": 3 * fwd - parts["embed"], "tokens": n, "visible": n_vis, "decoded": n_dec}


MODELS = {
    "S": "pretrain_videomae_small_patch16_224",
    "B": "pretrain_videomae_base_patch16_224",
    "L": "pretrain_videomae_large_patch16_224",
    "H": "pretrain_videomae_huge_patch16_224",
    "g": "pretrain_videomae_giant_patch14_224",
}


def clip_flops(model: str, frames: int = 16, size: int = 224, ratio: float = 0.9, decoder_depth: int = 4,
               embed_all: bool = True) -> dict[str, float]:
    """`pretrain_flops` for a size letter (S/B/L/H/g) or a registered model name."""
    s = shape_for(MODELS.get(model, model), decoder_depth=decoder_depth)
    return pretrain_flops(s, frames, size, ratio, embed_all)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--decoder-depth", type=int, default=4)
    a = ap.parse_args()
    print(f"{a.frames}x{a.size}x{a.size}, ratio {a.ratio}, decoder depth {a.decoder_depth}; GFLOP per clip")
    print(f"{'model':6}{'vis/dec':>10}{'fwd':>9}{'fwd+bwd':>9}{'visible-only':>14}{'decoder %':>11}{'attn %':>8}")
    for m in MODELS:
        f = clip_flops(m, a.frames, a.size, a.ratio, a.decoder_depth)
        v = clip_flops(m, a.frames, a.size, a.ratio, a.decoder_depth, embed_all=False)
        dec = f["decoder_linear"] + f["decoder_attention"] + f["head"]
        attn = f["encoder_attention"] + f["decoder_attention"]
        print(f"{m:6}{f['visible']:>5}/{f['decoded']:<4}{f['fwd'] / 1e9:9.1f}{f['fwd_bwd'] / 1e9:9.1f}"
              f"{v['fwd_bwd'] / 1e9:14.1f}{100 * dec / f['fwd']:11.0f}{100 * attn / f['fwd']:8.0f}")


if __name__ == "__main__":
    main()
