"""The analytic FLOP count of bench/flops.py against the GUIDE's figures, a hand count, torch's own
FlopCounterMode on a real forward+backward, and the tube-mask token counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import videomae  # noqa: E402
from bench.flops import PretrainShape, clip_flops, pretrain_flops, shape_for, tokens  # noqa: E402
from videomae.dispatch import use_backend  # noqa: E402


def test_vit_b_matches_guide():
    """GUIDE: ViT-B 16x224x224, ratio 0.9, decoder depth 4: ~71 GFLOP forward, ~209 forward+backward."""
    f = clip_flops("B")
    assert (f["tokens"], f["visible"], f["decoded"]) == (1568, 160, 1408)
    assert f["fwd"] / 1e9 == pytest.approx(70.9, abs=0.05)
    assert f["fwd_bwd"] / 1e9 == pytest.approx(209.0, abs=0.1)
    # 209 is not 3 x 70.9: the cube embedding needs no input gradient.
    assert f["fwd_bwd"] == pytest.approx(3 * f["fwd"] - f["embed"])
    dec = f["decoder_linear"] + f["decoder_attention"] + f["head"]
    assert 0.5 < dec / f["fwd"] < 0.6  # "the 1568-token decoder is about half"


def test_hand_count_vit_b():
    n, nv, nd, d, dd = 1568, 160, 1408, 768, 384
    macs = (n * 1536 * d                                     # conv over every cube
            + 12 * (12 * nv * d * d + 2 * nv * nv * d)       # encoder: linears + q k^T, attn v
            + nv * d * dd                                    # encoder_to_decoder
            + 4 * (12 * n * dd * dd + 2 * n * n * dd)        # decoder over N_vis + N_dec = N tokens
            + nd * dd * 1536)                                # head on the masked tokens
    assert clip_flops("B")["fwd"] == 2 * macs
    assert clip_flops("B", embed_all=False)["embed"] == 2 * nv * 1536 * d


def test_giant_reads_its_own_sizes():
    s = shape_for("pretrain_videomae_giant_patch14_224")
    assert (s.patch_size, s.embed_dim, s.depth, s.mlp_hidden, s.decoder_dim) == (14, 1408, 40, 6144, 512)
    assert tokens(s) == (8 * 256, 8 * 26, 8 * 230)


@pytest.mark.parametrize("ratio", [0.75, 0.9, 0.95])
def test_tokens_match_tube_mask(ratio):
    s = shape_for("pretrain_videomae_small_patch16_224")
    n, nv, nd = tokens(s, 16, 224, ratio)
    mask = videomae.masking.tube_mask(2, (8, 14, 14), ratio)
    assert mask.shape[1] == n and int((~mask[0]).sum()) == nv and int(mask[0].sum()) == nd


def test_quadratic_term_scales_with_tokens():
    s = shape_for("pretrain_videomae_base_patch16_224")
    f16, f32 = pretrain_flops(s, 16), pretrain_flops(s, 32)
    assert f32["decoder_attention"] == 4 * f16["decoder_attention"]
    assert f32["decoder_linear"] == 2 * f16["decoder_linear"]


def _cube_embed_flops(videos, weight, bias, pos, visible, *args, out_shape=None, **kwargs) -> int:
    """The fused cube_embed is a custom op, opaque to FlopCounterMode: its matmul, one K-long dot per visible
    cube and output channel."""
    return 2 * visible[0] * visible[1] * weight[0] * weight[1] * weight[2] * weight[3] * weight[4]


def _cube_embed_backward_flops(grad, videos, weight, visible, mean, std, needs, *args, out_shape=None, **kwargs):
    """d weight and, when asked for, d videos: each as many MACs as the forward."""
    return sum(needs[:2]) * _cube_embed_flops(videos, weight, None, None, visible)


def test_matches_torch_flop_counter_forward_and_backward():
    """Count a real step of a tiny model (torch backend, eager attention) with torch's FlopCounterMode: equal,
    not approximate. The fused cube_embed embeds only the visible cubes (`embed_all=False`)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = videomae.create_model("pretrain_videomae_tiny_patch16_224", num_frames=4, img_size=64)
    s = PretrainShape(192, 2, 768, 96, 1, 384, 16, 2, 3)
    assert s == shape_for("pretrain_videomae_tiny_patch16_224", num_frames=4, img_size=64)
    videos = torch.randn(2, 3, 4, 64, 64)
    ids = videomae.masking.token_ids(videomae.masking.tube_mask(2, (2, 4, 4), 0.75))
    custom = {torch.ops.videomae.cube_embed_torch: _cube_embed_flops,
              torch.ops.videomae.cube_embed_torch_backward: _cube_embed_backward_flops}
    with use_backend("torch", attention="eager"):
        with FlopCounterMode(display=False, custom_mapping=custom) as fwd_count:
            pred = model(videos, ids)
        with FlopCounterMode(display=False, custom_mapping=custom) as all_count:
            pred = model(videos, ids)
            pred.float().pow(2).mean().backward()
    f = pretrain_flops(s, frames=4, size=64, ratio=0.75, embed_all=False)
    assert fwd_count.get_total_flops() == 2 * f["fwd"]  # batch of 2 clips
    assert all_count.get_total_flops() == 2 * f["fwd_bwd"]
