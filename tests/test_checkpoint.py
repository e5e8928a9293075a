"""Foreign checkpoint layouts, built here from their documented key names, give the source model's outputs.

The expectation is a plain functional forward over the foreign state dict itself (official VideoMAE or
MAE-ST semantics), never our modules.
"""

import argparse
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F

import videomae
from videomae.dispatch import use_backend
from videomae.layers import sinusoid_table
from videomae.layers.pos_embed import resize_pos_embed
from videomae.masking import tube_mask

D, HEADS, DEPTH, DD, DHEADS = 32, 2, 2, 16, 2  # encoder / decoder width, heads; 1 decoder block
GRID = (2, 2, 2)  # 4 frames of 32x32 in 2x16x16 cubes
TINY = dict(img_size=32, num_frames=4, patch_size=16, encoder_embed_dim=D, encoder_depth=DEPTH,
            encoder_num_heads=HEADS, decoder_embed_dim=DD, decoder_depth=1, decoder_num_heads=DHEADS)
TINY_CLS = dict(img_size=32, num_frames=4, patch_size=16, embed_dim=D, depth=DEPTH, num_heads=HEADS)


# --------------------------------------------------------------------------
# hand-built foreign state dicts (shapes from the documented layouts)


def _rand(g, *shape, center=0.0):
    return torch.randn(*shape, generator=g) * (0.2 if len(shape) == 1 else shape[-1] ** -0.5) + center


def official_block(g, prefix, d):
    return {
        f"{prefix}norm1.weight": _rand(g, d, center=1), f"{prefix}norm1.bias": _rand(g, d),
        f"{prefix}attn.qkv.weight": _rand(g, 3 * d, d), f"{prefix}attn.q_bias": _rand(g, d),
        f"{prefix}attn.v_bias": _rand(g, d), f"{prefix}attn.proj.weight": _rand(g, d, d),
        f"{prefix}attn.proj.bias": _rand(g, d), f"{prefix}norm2.weight": _rand(g, d, center=1),
        f"{prefix}norm2.bias": _rand(g, d), f"{prefix}mlp.fc1.weight": _rand(g, 4 * d, d),
        f"{prefix}mlp.fc1.bias": _rand(g, 4 * d), f"{prefix}mlp.fc2.weight": _rand(g, d, 4 * d),
        f"{prefix}mlp.fc2.bias": _rand(g, d),
    }


def official_pretrain_sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {"encoder.patch_embed.proj.weight": _rand(g, D, 3, 2, 16, 16), "encoder.patch_embed.proj.bias": _rand(g, D)}
    for i in range(DEPTH):
        sd.update(official_block(g, f"encoder.blocks.{i}.", D))
    sd.update({"encoder.norm.weight": _rand(g, D, center=1), "encoder.norm.bias": _rand(g, D),
               "encoder_to_decoder.weight": _rand(g, DD, D), "mask_token": _rand(g, 1, 1, DD)})
    sd.update(official_block(g, "decoder.blocks.0.", DD))
    sd.update({"decoder.norm.weight": _rand(g, DD, center=1), "decoder.norm.bias": _rand(g, DD),
               "decoder.head.weight": _rand(g, 1536, DD), "decoder.head.bias": _rand(g, 1536)})
    return sd


def official_finetune_sd(seed=1, classes=5):
    g = torch.Generator().manual_seed(seed)
    sd = {"patch_embed.proj.weight": _rand(g, D, 3, 2, 16, 16), "patch_embed.proj.bias": _rand(g, D)}
    for i in range(DEPTH):
        sd.update(official_block(g, f"blocks.{i}.", D))
    sd.update({"fc_norm.weight": _rand(g, D, center=1), "fc_norm.bias": _rand(g, D),
               "head.weight": _rand(g, classes, D), "head.bias": _rand(g, classes)})
    return sd


# --------------------------------------------------------------------------
# reference forwards over those dicts


def ref_attention(x, q, k, v, heads):
    b, n, d = x.shape
    q, k, v = (t.reshape(b, n, heads, -1).transpose(1, 2) for t in (q, k, v))
    attn = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    return (attn @ v).transpose(1, 2).reshape(b, n, d)


def ref_block(x, sd, p, heads, qkv=None):
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
    if qkv is None:  # official: fused weight, bias (q_bias, 0, v_bias)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(d), sd[p + "attn.v_bias"]])
        q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], bias).chunk(3, dim=-1)
    else:
        q, k, v = qkv(h)
    x = x + F.linear(ref_attention(h, q, k, v, heads), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
    h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
    return x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])


def ref_embed(videos, sd, p):
    return F.conv3d(videos, sd[p + "proj.weight"], sd[p + "proj.bias"], stride=(2, 16, 16)).flatten(2).transpose(1, 2)


def ref_pretrain(videos, mask, sd):
    """Official PretrainVisionTransformer.forward, written from its documented token flow."""
    x = ref_embed(videos, sd, "encoder.patch_embed.") + sinusoid_table(8, D)
    b = x.shape[0]
    x = x[~mask].reshape(b, -1, D)
    for i in range(DEPTH):
        x = ref_block(x, sd, f"encoder.blocks.{i}.", HEADS)
    x = F.linear(F.layer_norm(x, (D,), sd["encoder.norm.weight"], sd["encoder.norm.bias"], 1e-6),
                 sd["encoder_to_decoder.weight"])
    pos = sinusoid_table(8, DD).expand(b, -1, -1)
    x = torch.cat([x + pos[~mask].reshape(b, -1, DD), sd["mask_token"] + pos[mask].reshape(b, -1, DD)], dim=1)
    x = ref_block(x, sd, "decoder.blocks.0.", DHEADS)[:, -int(mask[0].sum()):]
    x = F.layer_norm(x, (DD,), sd["decoder.norm.weight"], sd["decoder.norm.bias"], 1e-6)
    return F.linear(x, sd["decoder.head.weight"], sd["decoder.head.bias"])


def ref_classifier(videos, sd):
    x = ref_embed(videos, sd, "patch_embed.") + sinusoid_table(8, D)
    for i in range(DEPTH):
        x = ref_block(x, sd, f"blocks.{i}.", HEADS)
    x = F.layer_norm(x.mean(1), (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], 1e-6)
    return F.linear(x, sd["head.weight"], sd["head.bias"])


def _clips(seed=0, batch=2):
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def _mask(batch=2):
    return tube_mask(batch, GRID, 0.5, generator=torch.Generator().manual_seed(1))


def pretrain(**kw):
    return videomae.PretrainVisionTransformer(**{**TINY, **kw})


def classifier(**kw):
    return videomae.VisionTransformer(**{**TINY_CLS, "num_classes": 5, **kw})


# --------------------------------------------------------------------------
# official layouts


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("backend", ["torch", "auto"])  # the eager reference ops and the fused ones
def test_official_pretraining_file_gives_official_outputs(tmp_path, prefix, suffix, backend):
    sd = official_pretrain_sd()
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pth":
        # Official runs pickle their argparse.Namespace next to the weights: must still load.
        torch.save({"model": {prefix + k: v for k, v in sd.items()}, "epoch": 3, "args": argparse.Namespace(lr=1)},
                   path)
    else:
        from safetensors.torch import save_file

        save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))
    model = pretrain().eval()
    report = videomae.load_checkpoint(model, path, strict=True)
    assert report.exact and len(report.loaded) == len(sd) and str(path) in str(report)
    videos, mask = _clips(), _mask()
    with torch.no_grad(), use_backend(backend):
        torch.testing.assert_close(model(videos, mask), ref_pretrain(videos, mask, sd), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("container", ["module", "model", "state_dict", None])
def test_official_finetuned_file_gives_official_logits(tmp_path, container):
    sd = {"module." + k: v for k, v in official_finetune_sd().items()}
    path = tmp_path / "ft.pt"
    torch.save(sd if container is None else {container: sd}, path)
    model = classifier().eval()
    videomae.load_checkpoint(model, path, strict=True)
    videos = _clips(2)
    with torch.no_grad():
        torch.testing.assert_close(model(videos), ref_classifier(videos, official_finetune_sd()), rtol=1e-5, atol=1e-5)


def test_pretrained_encoder_into_classifier_as_official_fine_tuning():
    sd = official_pretrain_sd()
    sd["encoder.pos_embed"] = sinusoid_table(8, D)  # some files carry the fixed table: never loaded
    model = classifier()
    report = videomae.load_checkpoint(model, {"model": sd})
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    dropped = dict(report.dropped)
    assert "decoder.head.weight" in dropped and "mask_token" in dropped and "encoder.norm.weight" in dropped
    assert "fixed sinusoid" in dropped["pos_embed"] and report.exact and not report.unexpected
    for k, v in sd.items():
        if k.startswith("encoder.blocks.") or k.startswith("encoder.patch_embed."):
            assert torch.equal(model.state_dict()[k[len("encoder."):]], v), k
    # backbone. (V2 fine-tuning) is stripped the same way.
    backbone = {"backbone." + k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.blocks.")}
    assert not videomae.load_checkpoint(classifier(), backbone).unexpected
    with pytest.raises(RuntimeError, match="strict"):
        videomae.load_checkpoint(classifier(), {"model": sd}, strict=True)


def test_head_with_other_class_count_is_dropped_and_reported():
    model = classifier(num_classes=7)
    before = model.head.weight.clone()
    report = videomae.load_checkpoint(model, {"module": official_finetune_sd(classes=5)})
    assert report.missing == ["head.weight", "head.bias"]
    assert "5 classes, the model has 7" in str(report)
    assert torch.equal(model.head.weight, before)


def test_shape_mismatch_names_the_key_and_file(tmp_path):
    path = tmp_path / "big.pth"
    sd = official_pretrain_sd()
    sd["encoder.norm.weight"] = torch.ones(2 * D)
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match=r"big\.pth: same size, other shapes \(1 tensors differ, e\.g\. "
                       r"encoder\.norm\.weight: checkpoint \[\d+\] vs model \[\d+\]\)$"):
        videomae.load_checkpoint(pretrain(), path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_could_run_code_is_refused_with_the_file_name(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": official_pretrain_sd(), "x": _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match=r"evil\.pth: holds pickled Python objects .* could run code") as err:
        videomae.load_checkpoint(pretrain(), path)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)  # no advice to turn safety off


@pytest.mark.parametrize("keep", [0, 100, 5000])
def test_truncated_file_is_one_line_naming_it(tmp_path, keep):
    whole = tmp_path / "whole.pth"
    torch.save({"model": official_pretrain_sd()}, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:keep])
    with pytest.raises(ValueError) as err:
        videomae.load_checkpoint(pretrain(), cut)
    text = str(err.value)
    assert text.startswith(f"{cut}: ") and "\n" not in text and "weights_only" not in text
    assert "truncated" in text or "corrupt" in text


def test_another_model_size_is_one_line_naming_both():
    small = videomae.create_model("pretrain_videomae_small_patch16_224", img_size=32, num_frames=4)
    with pytest.raises(ValueError, match=r"^<state dict>: a ViT width 384, 12 blocks, patch 16 checkpoint, "
                       r"the model is a ViT width \d+, \d+ blocks, patch 16 \(\d+ tensors differ"):
        videomae.load_checkpoint(pretrain(), {"model": small.state_dict()})


# --------------------------------------------------------------------------
# positional tables


def test_learned_table_into_fixed_model_warns_not_exact():
    sd = official_pretrain_sd()
    sd["encoder.pos_embed"] = torch.randn(1, 8, D)
    with pytest.warns(UserWarning, match="not reproduced"):
        report = videomae.load_checkpoint(pretrain(), sd)
    assert not report.exact and "use_learnable_pos_emb=True" in report.inexact[0]


@pytest.mark.parametrize("src_grid, extra", [((2, 2, 2), 0), ((2, 4, 4), 0), ((4, 2, 2), 0), ((2, 2, 2), 1)])
def test_learnable_table_loaded_resized_or_stripped_of_class_position(src_grid, extra):
    n = math.prod(src_grid)
    table = torch.randn(1, n + extra, D, generator=torch.Generator().manual_seed(5))
    model = classifier(use_learnable_pos_emb=True)
    report = videomae.load_checkpoint(model, {"pos_embed": table})
    want = resize_pos_embed(table[:, extra:], src_grid, GRID)
    torch.testing.assert_close(model.pos_embed.data, want, rtol=0, atol=0)
    assert bool(report.reshaped) == (src_grid != GRID or extra == 1)


# --------------------------------------------------------------------------
# MAE-ST


def mae_st_sd(seed=3, cls=False):
    g = torch.Generator().manual_seed(seed)
    sd = {"patch_embed.proj.weight": _rand(g, D, 3, 2, 16, 16), "patch_embed.proj.bias": _rand(g, D),
          "pos_embed_spatial": _rand(g, 1, 4, D), "pos_embed_temporal": _rand(g, 1, 2, D),
          "norm.weight": _rand(g, D, center=1), "norm.bias": _rand(g, D),
          "decoder_embed.weight": _rand(g, DD, D), "decoder_embed.bias": _rand(g, DD), "mask_token": _rand(g, 1, 1, DD),
          "decoder_pos_embed_spatial": _rand(g, 1, 4, DD), "decoder_pred.weight": _rand(g, 1536, DD)}
    for i in range(DEPTH):
        block = official_block(g, f"blocks.{i}.", D)
        for name in ("attn.qkv.weight", "attn.q_bias", "attn.v_bias"):
            block.pop(f"blocks.{i}.{name}")
        for n in "qkv":
            block[f"blocks.{i}.attn.{n}.weight"] = _rand(g, D, D)
            block[f"blocks.{i}.attn.{n}.bias"] = _rand(g, D)  # a k bias too: it must cancel
        sd.update(block)
    if cls:
        sd["cls_token"] = _rand(g, 1, 1, D)
    return sd


def ref_mae_st_encoder(videos, sd):
    """MAE-ST encoder over all tokens (no class token): separable pos, q/k/v Linears with biases."""
    x = ref_embed(videos, sd, "patch_embed.")
    spatial, temporal = sd["pos_embed_spatial"], sd["pos_embed_temporal"]
    x = x + spatial.repeat(1, 2, 1) + torch.repeat_interleave(temporal, 4, dim=1)
    for i in range(DEPTH):
        p = f"blocks.{i}.attn."

        def qkv(h, p=p):
            return [F.linear(h, sd[f"{p}{n}.weight"], sd[f"{p}{n}.bias"]) for n in "qkv"]

        x = ref_block(x, sd, f"blocks.{i}.", HEADS, qkv=qkv)
    return F.layer_norm(x, (D,), sd["norm.weight"], sd["norm.bias"], 1e-6)


def test_mae_st_encoder_maps_exactly_and_decoder_is_reported():
    sd = mae_st_sd()
    model = pretrain(use_learnable_pos_emb=True).eval()
    with pytest.warns(UserWarning, match="MAE-ST decoder"):
        report = videomae.load_checkpoint(model, {"model_state": sd})
    assert report.layout == "mae_st" and any("k bias" in why for _, why in report.dropped)
    assert all(k.startswith(("decoder.", "encoder_to_decoder", "mask_token")) for k in report.missing)
    videos = _clips(4)
    every_token = torch.arange(8).repeat(2, 1)  # the encoder takes the visible token ids: all of them
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(videos, every_token), ref_mae_st_encoder(videos, sd), rtol=1e-5,
                                   atol=1e-5)


def test_mae_st_class_token_and_pooling_are_reported_not_exact():
    sd = {k: v for k, v in mae_st_sd(cls=True).items() if not k.startswith(("decoder_", "mask_token"))}
    sd["head.weight"], sd["head.bias"] = torch.randn(5, D), torch.randn(5)
    model = classifier(use_learnable_pos_emb=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = videomae.load_checkpoint(model, sd)
    assert len(caught) == 1 and "class token" in str(caught[0].message)
    assert any("pools tokens 1:" in why for why in report.inexact)
    assert torch.equal(model.fc_norm.weight, sd["norm.weight"]) and torch.equal(model.head.weight, sd["head.weight"])


# --------------------------------------------------------------------------
# saving


@pytest.mark.parametrize("fmt, suffix", [("official", ".pth"), ("safetensors", ".safetensors")])
def test_save_writes_official_layout_and_round_trips(tmp_path, fmt, suffix):
    src = pretrain().eval()
    path = tmp_path / f"p{suffix}"
    videomae.save_checkpoint(src, path, format=fmt)
    if fmt == "official":
        assert set(torch.load(path, weights_only=True)) == {"model"}
        cls_path = tmp_path / "c.pth"
        videomae.save_checkpoint(classifier(), cls_path)
        assert set(torch.load(cls_path, weights_only=True)) == {"module"}
    dst = pretrain().eval()
    videomae.load_checkpoint(dst, path, strict=True)
    videos, mask = _clips(6), _mask()
    with torch.no_grad():
        torch.testing.assert_close(dst(videos, mask), src(videos, mask), rtol=0, atol=0)
