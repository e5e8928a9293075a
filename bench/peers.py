"""The peers `bench/train_step.py` measures our step against, each run the way its own code runs it.

- `hf`:       transformers `VideoMAEForPreTraining`, `attn_implementation="sdpa"`, bf16 autocast (fp32 on the CPU
              rehearsal), fused AdamW; its input is `[B, T, C, H, W]` (a permuted copy made before timing).
- `official`: MCG-NJU/VideoMAE `modeling_pretrain.py` from a git-ignored checkout (`VIDEOMAE_OFFICIAL`), run as
              `engine_for_pretraining.train_one_epoch` runs it: fp32 targets, fp16 autocast, `loss.item()`,
              GradScaler with unscale + grad norm, `torch.cuda.synchronize()` every step; 16 frames only.

Each builder returns `step(videos, mask_bool, hf_videos) -> loss`; the sizes are read off our model of the same
name (built on the meta device), so every peer computes the same architecture.
"""

from __future__ import annotations

import importlib
import sys
from functools import partial
from pathlib import Path

import torch

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.train.optim import param_groups

ROOT = Path(__file__).resolve().parents[1]


def sizes(reference) -> dict:
    """The architecture of one of our pretraining models (meta device is fine)."""
    enc, dec = reference.encoder, reference.decoder
    proj = enc.patch_embed.proj
    return dict(embed_dim=proj.out_channels, depth=len(enc.blocks), heads=enc.blocks[0].attn.num_heads,
                mlp_hidden=enc.blocks[0].mlp.fc1.out_features, decoder_dim=dec.head.in_features,
                decoder_depth=len(dec.blocks), decoder_heads=dec.blocks[0].attn.num_heads,
                decoder_mlp_hidden=dec.blocks[0].mlp.fc1.out_features, patch_size=proj.kernel_size[1],
                tubelet_size=proj.kernel_size[0])


def _adamw(net: torch.nn.Module, fused: bool) -> torch.optim.AdamW:
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(net, 0.05)]
    return torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95), fused=fused or None)


def import_transformers():
    """transformers, with PyPI's `kernels` package (which it imports when installed) resolved before the
    checkout's top-level `kernels/` folder can shadow it (a checkout on sys.path has both names)."""
    if "transformers" not in sys.modules and "kernels" not in sys.modules:
        here = [p for p in sys.path if Path(p or ".").resolve() == ROOT]
        for p in here:
            sys.path.remove(p)
        try:
            importlib.import_module("kernels")
        except ImportError:
            pass
        finally:
            sys.path[:0] = here
    return importlib.import_module("transformers")


def hf_net(reference, frames: int, size: int) -> torch.nn.Module:
    """transformers' `VideoMAEForPreTraining` with `reference`'s architecture, sdpa attention, on the CPU (or
    wherever the caller's default device is)."""
    tf = import_transformers()
    s = sizes(reference)
    cfg = tf.VideoMAEConfig(
        image_size=size, patch_size=s["patch_size"], num_channels=3, num_frames=frames,
        tubelet_size=s["tubelet_size"], hidden_size=s["embed_dim"], num_hidden_layers=s["depth"],
        num_attention_heads=s["heads"], intermediate_size=s["mlp_hidden"], hidden_act="gelu", qv_bias=True,
        layer_norm_eps=1e-6, use_mean_pooling=False, decoder_num_attention_heads=s["decoder_heads"],
        decoder_hidden_size=s["decoder_dim"], decoder_num_hidden_layers=s["decoder_depth"],
        decoder_intermediate_size=s["decoder_mlp_hidden"], norm_pix_loss=True,
    )
    cfg._attn_implementation = "sdpa"
    return tf.VideoMAEForPreTraining(cfg)


def build_hf(reference, frames: int, size: int, device: torch.device):
    net = hf_net(reference, frames, size).to(device).train()
    if net.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers picked attention {net.config._attn_implementation!r}, not sdpa")
    opt = _adamw(net, fused=True)
    cuda = device.type == "cuda"

    def step(videos, mask, hf_videos):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = net(pixel_values=hf_videos, bool_masked_pos=mask).loss
        loss.backward()
        opt.step()
        return loss.detach()

    return net, step


def official_path(path: str | None) -> Path | None:
    """The checkout holding `modeling_pretrain.py`, or None when `path` is unset."""
    if not path:
        return None
    root = Path(path).resolve()
    if not (root / "modeling_pretrain.py").is_file():
        raise FileNotFoundError(f"VIDEOMAE_OFFICIAL={path}: no modeling_pretrain.py there "
                                "(want a MCG-NJU/VideoMAE checkout)")
    return root


def load_official(root: Path):
    """Import `modeling_pretrain` from the checkout (it needs timm and einops)."""
    sys.path.insert(0, str(root))
    try:
        import modeling_pretrain  # noqa: PLC0415  (the checkout's module, by design)
    finally:
        sys.path.remove(str(root))
    return modeling_pretrain


def official_net(mp, reference, size: int) -> torch.nn.Module:
    """`modeling_pretrain.PretrainVisionTransformer` (module `mp`) with `reference`'s architecture."""
    s = sizes(reference)
    p, t = s["patch_size"], s["tubelet_size"]
    return mp.PretrainVisionTransformer(
        img_size=size, patch_size=p, encoder_embed_dim=s["embed_dim"], encoder_depth=s["depth"],
        encoder_num_heads=s["heads"], encoder_num_classes=0, decoder_num_classes=3 * t * p * p,
        decoder_embed_dim=s["decoder_dim"], decoder_depth=s["decoder_depth"], decoder_num_heads=s["decoder_heads"],
        mlp_ratio=s["mlp_hidden"] / s["embed_dim"], qkv_bias=True, tubelet_size=t,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )


def official_targets(videos: torch.Tensor, tubelet: int = 2, patch: int = 16) -> torch.Tensor:
    """engine_for_pretraining.train_one_epoch's normalized target of every cube, no grad:
    [B, 3, T, H, W] (ImageNet-normalized) -> [B, N, tubelet*patch*patch*3] (per cube and channel:
    (x - mean) / (std_unbiased + 1e-6), channel fastest)."""
    from einops import rearrange

    mean = torch.as_tensor(IMAGENET_MEAN, device=videos.device, dtype=videos.dtype)[None, :, None, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=videos.device, dtype=videos.dtype)[None, :, None, None, None]
    with torch.no_grad():
        sq = rearrange(videos * std + mean, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c",
                       p0=tubelet, p1=patch, p2=patch)
        norm = (sq - sq.mean(dim=-2, keepdim=True)) / (sq.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
        return rearrange(norm, "b n p c -> b n (p c)")


def build_official(reference, frames: int, size: int, device: torch.device, root: Path):
    if frames != 16:
        raise ValueError("the official PatchEmbed fixes num_frames=16")
    net = official_net(load_official(root), reference, size).to(device)
    s = sizes(reference)
    p, t = s["patch_size"], s["tubelet_size"]
    opt = _adamw(net, fused=False)  # optim_factory: plain torch AdamW
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=cuda)

    def step(videos, mask, hf_videos):  # engine_for_pretraining.train_one_epoch, one iteration
        patch = official_targets(videos, t, p)
        labels = patch[mask].reshape(videos.shape[0], -1, patch.shape[-1])
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = torch.nn.functional.mse_loss(net(videos, mask), labels)
        loss.item()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.norm(torch.stack([torch.norm(q.grad.detach(), 2.0) for q in net.parameters() if q.grad is not None]))
        scaler.step(opt)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()
        return loss.detach()

    return net, step
