"""Model conventions of the official VideoMAE, each against an independent expectation."""

import math

import pytest
import torch

import videomae
from videomae import ops
from videomae.layers import Attention, Block, sinusoid_table
from videomae.layers.pos_embed import resize_pos_embed
from videomae.masking import token_ids, tube_mask


@pytest.fixture(autouse=True)
def eager_ops():
    """Model conventions, checked on the eager reference: the backends' kernels have their own tests (tests/ops)."""
    with ops.use_backend("torch"):
        yield


def tiny_pretrain(**kw):
    base = dict(img_size=32, num_frames=4, patch_size=16)
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", **{**base, **kw})


@pytest.mark.parametrize(
    "name, overrides, millions",
    [
        # Official factories: ViT-B pretraining with decoder depth 4, ViT-B classifier with 400 classes.
        ("pretrain_videomae_base_patch16_224", {}, 94.21),
        ("vit_base_patch16_224", {"num_classes": 400}, 86.53),
    ],
)
def test_parameter_counts_match_official(name, overrides, millions):
    model = videomae.create_model(name, **overrides)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2) == millions


def test_registry_lists_every_official_factory_and_rejects_unknown():
    names = videomae.list_models()
    for size in ("small", "base", "large", "huge"):
        assert f"pretrain_videomae_{size}_patch16_224" in names
        assert f"vit_{size}_patch16_224" in names
    assert "pretrain_videomae_giant_patch14_224" in names and "vit_giant_patch14_224" in names
    with pytest.raises(ValueError, match="did you mean"):
        videomae.create_model("pretrain_videomae_bsae_patch16_224")


def test_sinusoid_table_matches_closed_form():
    n, d = 7, 6
    table = sinusoid_table(n, d)
    assert table.shape == (1, n, d) and table.dtype == torch.float32
    for pos in range(n):
        for j in range(d):
            angle = pos / 10000 ** (2 * (j // 2) / d)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[0, pos, j].item() == pytest.approx(want, abs=1e-7)


def test_pos_tables_are_not_in_state_dict():
    keys = tiny_pretrain().state_dict().keys()
    assert not any("pos" in k for k in keys)
    assert "mask_token" in keys and "encoder_to_decoder.weight" in keys
    assert "encoder.blocks.0.attn.q_bias" in keys and "encoder.blocks.0.attn.v_bias" in keys
    assert not any(k.endswith("qkv.bias") for k in keys)


def test_cube_embedding_raster_order_and_channels():
    model = tiny_pretrain(img_size=32, num_frames=4)
    pe = model.encoder.patch_embed
    video = torch.randn(1, 3, 4, 32, 48)
    tokens = pe(video)  # [1, N, D]
    grid = pe.grid(video.shape)
    assert grid == (2, 2, 3) and tokens.shape[1] == 12
    w, b = pe.proj.weight, pe.proj.bias
    for t in range(2):
        for h in range(2):
            for ww in range(3):
                cube = video[0, :, 2 * t : 2 * t + 2, 16 * h : 16 * h + 16, 16 * ww : 16 * ww + 16]
                want = (w * cube.unsqueeze(0)).sum(dim=(1, 2, 3, 4)) + b
                n = t * 2 * 3 + h * 3 + ww
                torch.testing.assert_close(tokens[0, n], want, rtol=1e-4, atol=1e-4)


def test_attention_has_zero_key_bias_and_official_scale():
    torch.manual_seed(0)
    attn = Attention(8, num_heads=2).double()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    wq, wk, wv = attn.qkv.weight.chunk(3)
    q, k, v = x @ wq.T + attn.q_bias, x @ wk.T, x @ wv.T + attn.v_bias
    out = torch.empty_like(x)
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        s = (q[..., sl] @ k[..., sl].transpose(1, 2)) / math.sqrt(4)
        out[..., sl] = s.softmax(-1) @ v[..., sl]
    want = out @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), want)


def test_block_is_prenorm_with_eps_1e6_and_exact_gelu():
    torch.manual_seed(0)
    blk = Block(8, 2).double().eval()
    assert blk.norm1.eps == 1e-6 and blk.norm2.eps == 1e-6
    x = torch.randn(2, 5, 8, dtype=torch.float64)

    def ln(y, m):
        mu = y.mean(-1, keepdim=True)
        var = y.var(-1, unbiased=False, keepdim=True)
        return (y - mu) / torch.sqrt(var + 1e-6) * m.weight + m.bias

    y = x + blk.attn(ln(x, blk.norm1))
    hid = ln(y, blk.norm2) @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias
    gelu = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))
    want = y + gelu @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    torch.testing.assert_close(blk(x), want)


def test_stochastic_depth_is_linspace():
    model = videomae.create_model("vit_small_patch16_224", drop_path_rate=0.1)
    rates = [getattr(b.drop_path, "p", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.1 * i / 11 for i in range(12)])


def test_official_init():
    torch.manual_seed(0)
    model = tiny_pretrain()
    fc1 = model.encoder.blocks[0].mlp.fc1
    bound = math.sqrt(6 / (fc1.in_features + fc1.out_features))  # xavier_uniform
    assert fc1.weight.abs().max() <= bound and fc1.weight.abs().max() > 0.9 * bound
    assert torch.all(fc1.bias == 0) and torch.all(model.decoder.head.bias == 0)
    assert model.mask_token.abs().max() <= 0.02 and model.mask_token.std() > 0.005  # ±1 std truncation
    e2d = model.encoder_to_decoder
    assert e2d.weight.abs().max() <= 1 / math.sqrt(e2d.in_features)  # PyTorch default (kaiming a=sqrt 5)
    clf = videomae.create_model("vit_tiny_patch16_224", num_classes=5)
    assert clf.head.weight.abs().max() <= 0.02 * 0.001 and clf.head.weight.abs().max() > 0
    assert clf.blocks[0].mlp.fc1.weight.abs().max() <= 0.02


def test_decoder_input_order_visible_then_masked_in_raster_order():
    model = tiny_pretrain(img_size=32, num_frames=2)  # grid (1, 2, 2): 4 tokens
    d = model.mask_token.shape[-1]
    x_vis = torch.randn(1, 2, d)
    mask = torch.tensor([[False, True, False, True]])
    pos = sinusoid_table(4, d)[0]
    out = ops.decoder_input(x_vis, model.mask_token, pos, *token_ids(mask)[:2])
    m = model.mask_token[0, 0]
    want = torch.stack([x_vis[0, 0] + pos[0], x_vis[0, 1] + pos[2], m + pos[1], m + pos[3]])
    torch.testing.assert_close(out[0], want)
    # V2 dual masking: decoded = ~decode_mask, which may include visible tokens.
    decode_mask = torch.tensor([[True, False, False, True]])
    out = ops.decoder_input(x_vis, model.mask_token, pos, *token_ids(mask, decode_mask)[:2])
    want = torch.stack([x_vis[0, 0] + pos[0], x_vis[0, 1] + pos[2], m + pos[1], m + pos[2]])
    torch.testing.assert_close(out[0], want)


def test_forward_shapes_and_encoder_sees_only_visible_tokens():
    model = tiny_pretrain(img_size=64, num_frames=4).eval()
    video = torch.randn(2, 3, 4, 64, 64)
    mask = tube_mask(2, (2, 4, 4), 0.75, torch.Generator().manual_seed(0))
    seen = {}
    model.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.update(n=o.shape[1]))
    pred = model(video, mask)
    assert seen["n"] == 2 * 4  # 4 visible per frame x 2 temporal slices
    assert pred.shape == (2, 24, 3 * 2 * 16 * 16)


def test_encoder_output_does_not_depend_on_masked_pixels():
    model = tiny_pretrain(img_size=32, num_frames=2).eval()
    mask = torch.tensor([[True, False, True, False]])
    video = torch.randn(1, 3, 2, 32, 32)
    other = video.clone()
    other[..., :16, :16] = 5.0  # cube 0 (masked)
    other[..., 16:, :16] = -3.0  # cube 2 (masked)
    visible = token_ids(mask).visible
    torch.testing.assert_close(model.encoder(video, visible), model.encoder(other, visible))


def test_other_clip_sizes_regenerate_the_fixed_tables():
    model = tiny_pretrain(img_size=32, num_frames=4)
    assert model.encoder.pos((4, 2, 2)).shape == (1, 16, 192)
    torch.testing.assert_close(model.encoder.pos((4, 2, 2)), sinusoid_table(16, 192))
    pred = model(torch.randn(1, 3, 8, 32, 32), tube_mask(1, (4, 2, 2), 0.5))
    assert pred.shape == (1, 8, 1536)


def test_resize_learnable_pos_embed():
    # A table that is constant within each frame and linear in t stays so after resizing.
    t, h, w, d = 4, 2, 2, 3
    base = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, h, w, d).reshape(1, -1, d)
    out = resize_pos_embed(base, (t, h, w), (t, 3, 3))
    assert out.shape == (1, t * 9, d)
    torch.testing.assert_close(out.view(t, 9, d), torch.arange(t, dtype=torch.float32).view(t, 1, 1).expand(t, 9, d))
    assert resize_pos_embed(base, (t, h, w), (t, h, w)) is base
    model = tiny_pretrain(use_learnable_pos_emb=True)
    assert "encoder.pos_embed" in model.state_dict()
    assert model.encoder.pos((4, 2, 2)).shape == (1, 16, 192)


def test_classifier_forward_and_mean_pooling():
    clf = videomae.create_model("vit_tiny_patch16_224", num_classes=7, img_size=32, num_frames=4).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    assert clf(video).shape == (2, 7)
    grid = clf.patch_embed.grid(video.shape)
    x = clf.patch_embed(video) + clf.pos(grid)
    for blk in clf.blocks:
        x = blk(x)
    torch.testing.assert_close(clf.forward_features(video), clf.fc_norm(x.mean(1)))
    assert not hasattr(clf, "norm") or not list(clf.norm.parameters())


def test_activation_checkpointing_gives_same_grads():
    torch.manual_seed(0)
    a = tiny_pretrain()
    b = tiny_pretrain(use_checkpoint=True)
    b.load_state_dict(a.state_dict())
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, (2, 2, 2), 0.5, torch.Generator().manual_seed(1))
    for m in (a, b):
        m.forward_loss(video, m(video, mask), mask).backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_bad_inputs_name_the_argument():
    model = tiny_pretrain()
    video = torch.randn(1, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="mask"):
        model(video, torch.zeros(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a torch.bool"):
        model(video, torch.zeros(1, 8))
    uneven = torch.zeros(2, 8, dtype=torch.bool)
    uneven[0, :4] = True
    uneven[1, :3] = True
    with pytest.raises(ValueError, match="same number"):
        model(torch.randn(2, 3, 4, 32, 32), uneven)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, 5, 32, 32), torch.zeros(1, 8, dtype=torch.bool))


def test_seeded_training_is_deterministic_and_loss_falls():
    def run(seed):
        torch.manual_seed(seed)
        model = tiny_pretrain(img_size=32, num_frames=4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
        g = torch.Generator().manual_seed(seed)
        # A fixed small set of smooth clips: learnable structure, so the loss must fall.
        base = torch.linspace(-1, 1, 32)
        videos = torch.stack([
            (torch.sin(3 * base + i).view(1, 1, 1, 32) + torch.cos(2 * base - i).view(1, 1, 32, 1))
            .expand(3, 4, 32, 32) for i in range(4)
        ])
        losses = []
        for _ in range(30):
            mask = tube_mask(4, (2, 2, 2), 0.5, g)
            loss = model.forward_loss(videos, model(videos, mask), mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    a, b = run(0), run(0)
    assert a == b  # bitwise
    assert sum(a[-5:]) / 5 < 0.7 * sum(a[:5]) / 5
