"""Training parity with the official VideoMAE engine (CPU, fp32), optimizer step for optimizer step.

    git clone https://github.com/MCG-NJU/VideoMAE third_party/VideoMAE          # git-ignored; run at 14ef8d8
    git clone https://github.com/OpenGVLab/VideoMAEv2 third_party/VideoMAEv2    # optional: the V2 sequence
    git -C third_party/VideoMAE rev-parse HEAD > third_party/VideoMAE/.git_sha  # recorded in the results
    python -m experiments.train_parity [--official DIR] [--official_v2 DIR] [--epochs 10] [--out bench/results]

The official code (MCG-NJU/VideoMAE, read from a git-ignored checkout, never committed) and ours start from the
same weights (the official model's, loaded into ours), see the same clips in the same order with the same tube
masks (drawn by the official `TubeMaskingGenerator`), and follow the official recipe: AdamW betas (0.9, 0.95),
eps 1e-8, weight decay 0.05 except 1-D params, biases and the mask token; lr scaled by batch / 256, linear warmup
from 0 then per-step cosine; no clipping.
- official: `engine_for_pretraining.train_one_epoch` itself, one call per epoch, with its `create_optimizer`
  and `utils.cosine_scheduler`;
- ours: `Trainer.fit` on `videomae pretrain`'s recipe (its loss `pretrain_loss`, the official schedule and AdamW
  groups, the CLI's default step switches), the batches handed over as the loader would (masks as `TokenIds`).
Writes `train_parity.json` (one row per step, both losses, relative errors, versions, shas) and `train_parity.png`.
A second sequence runs V2 dual masking against OpenGVLab/VideoMAEv2 when its checkout is present.

(Over 400 lines: the shims that let the 2022 official code run on today's stack sit beside the run they serve,
so that the whole comparison reads top to bottom in one file.)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import math
import os
import platform
import subprocess
import sys
import types
from argparse import Namespace
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videomae import create_model
from videomae.data.synth import render_clip
from videomae.masking import token_ids
from videomae.train.logs import MemoryLog
from videomae.train.pretrain import pretrain_loss
from videomae.train.recipe import AdamW, Batches, Options, Recipe, Schedule
from videomae.train.run import Run
from videomae.train.schedule import scaled_lr
from videomae.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OFFICIAL = REPO / "third_party" / "VideoMAE"
DEFAULT_OFFICIAL_V2 = REPO / "third_party" / "VideoMAEv2"
# Bare module names the two official repositories share: purged before the other one is imported.
_OFFICIAL_MODULES = ("utils", "engine_for_pretraining", "optim_factory", "masking_generator", "modeling_pretrain",
                     "modeling_finetune", "models", "models.modeling_pretrain", "models.modeling_finetune")
# The official dataset normalizes with timm's ImageNet constants; the clips are normalized once, here.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ParityConfig:
    """A model both codes build (the official encoder's position table is fixed at 16 frames)."""

    steps_per_epoch: int = 10
    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 4
    num_clips: int = 40
    num_frames: int = 16
    input_size: int = 32
    patch_size: int = 8
    # pretrain_videomae_small's widths and depths (decoder depth 4 as in the pretraining scripts)
    encoder_embed_dim: int = 384
    encoder_depth: int = 12
    encoder_num_heads: int = 6
    decoder_embed_dim: int = 192
    decoder_depth: int = 4
    decoder_num_heads: int = 3
    mask_ratio: float = 0.9
    # V2 dual masking (OpenGVLab/VideoMAEv2): a running-cell decoder mask; None = V1 (MCG-NJU/VideoMAE)
    decoder_mask_ratio: float | None = None
    # blr: 0.064 x 4 / 256 = 1e-3, large enough that the weights move far from their start in 100 steps
    blr: float = 0.064
    min_blr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.num_frames // 2, self.input_size // self.patch_size, self.input_size // self.patch_size)


# ---------------------------------------------------------------- the official code, imported as it is


def load_official(root: str | Path, v2: bool = False) -> types.SimpleNamespace:
    """Import the official modules from `root` (a checkout of MCG-NJU/VideoMAE, or of OpenGVLab/VideoMAEv2).

    Shims for what the 2022 code needs and a current CPU stack lacks, none of which touch the numerics:
    `torch._six.inf` (removed from torch), `tensorboardX` (only imported), and `torch.cuda.synchronize`
    (called after every step; a no-op without a GPU)."""
    root = Path(root)
    if not (root / "engine_for_pretraining.py").is_file():
        raise FileNotFoundError(f"--official: no engine_for_pretraining.py in {root} (check out MCG-NJU/VideoMAE)")
    if "torch._six" not in sys.modules:
        sys.modules["torch._six"] = types.SimpleNamespace(inf=math.inf)
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None
    _alias_renamed_timm_optimizers()
    # The official repositories are folders of top-level scripts that import each other by bare name.
    for name in _OFFICIAL_MODULES:
        sys.modules.pop(name, None)
    sys.path[:] = [p for p in sys.path if p not in (str(DEFAULT_OFFICIAL), str(DEFAULT_OFFICIAL_V2))]
    sys.path.insert(0, str(root))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecated paths and re-registered names, torch.cuda.amp on CPU
        engine = importlib.import_module("engine_for_pretraining")
        optim = importlib.import_module("optim_factory")
        utils = importlib.import_module("utils")
        modeling = importlib.import_module("models.modeling_pretrain" if v2 else "modeling_pretrain")
        # V2 keeps its mask generators in dataset/, whose package imports video decoders: load the file alone.
        path = root / ("dataset/masking_generator.py" if v2 else "masking_generator.py")
        spec = importlib.util.spec_from_file_location("masking_generator", path)
        masking = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(masking)
    return types.SimpleNamespace(engine=engine, masking=masking, modeling=modeling, optim=optim, utils=utils,
                                 root=root, v2=v2)


def _alias_renamed_timm_optimizers() -> None:
    """`optim_factory` imports optimizers by their timm-0.4 names at module level; timm 1.x renamed two and
    dropped NovoGrad. The parity uses torch's AdamW, so old names only need to resolve, not to work."""
    renamed = {"timm.optim.nadam": ("Nadam", "NAdamLegacy"), "timm.optim.radam": ("RAdam", "RAdamLegacy")}
    for module_name, (old, new) in renamed.items():
        module = importlib.import_module(module_name)
        if not hasattr(module, old):
            setattr(module, old, getattr(module, new))
    try:
        importlib.import_module("timm.optim.novograd")
    except ImportError:
        def unavailable(*args, **kwargs):
            raise RuntimeError("NovoGrad is not in this timm; the parity uses AdamW")

        sys.modules["timm.optim.novograd"] = types.SimpleNamespace(NovoGrad=unavailable)


def official_model(off, cfg: ParityConfig) -> nn.Module:
    """The official `PretrainVisionTransformer` at the parity size (`pretrain_videomae_*` keyword set)."""
    return off.modeling.PretrainVisionTransformer(
        img_size=cfg.input_size, patch_size=cfg.patch_size, encoder_embed_dim=cfg.encoder_embed_dim,
        encoder_depth=cfg.encoder_depth, encoder_num_heads=cfg.encoder_num_heads, encoder_num_classes=0,
        decoder_num_classes=3 * 2 * cfg.patch_size**2, decoder_embed_dim=cfg.decoder_embed_dim,
        decoder_depth=cfg.decoder_depth, decoder_num_heads=cfg.decoder_num_heads, mlp_ratio=4, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), init_values=0.0, drop_path_rate=0.0,
        **({"all_frames": cfg.num_frames} if off.v2 else {}))


def our_model(cfg: ParityConfig) -> nn.Module:
    return create_model(
        "pretrain_videomae_small_patch16_224", img_size=cfg.input_size, patch_size=cfg.patch_size,
        num_frames=cfg.num_frames, encoder_embed_dim=cfg.encoder_embed_dim, encoder_depth=cfg.encoder_depth,
        encoder_num_heads=cfg.encoder_num_heads, decoder_embed_dim=cfg.decoder_embed_dim,
        decoder_depth=cfg.decoder_depth, decoder_num_heads=cfg.decoder_num_heads, drop_path_rate=0.0)


class _StepLog:
    """The official engine's `log_writer` interface: it reports loss, lr and grad norm once per step."""

    def __init__(self):
        self.rows, self.current = [], {}

    def update(self, head: str = "scalar", step: int | None = None, **values) -> None:
        for key, value in values.items():
            self.current[key] = float(value) if value is not None else None

    def set_step(self, step: int | None = None) -> None:
        if self.current:
            self.rows.append(self.current)
        self.current = {}


def run_official(off, cfg: ParityConfig, init: dict, batches: list) -> tuple[list[dict], dict]:
    """`train_one_epoch` over `batches` (one list per epoch) -> (per-step rows, final state_dict)."""
    model = official_model(off, cfg)
    model.load_state_dict(init)
    total_batch = cfg.batch_size
    lr, min_lr = cfg.blr * total_batch / 256, cfg.min_blr * total_batch / 256
    args = Namespace(opt="adamw", weight_decay=cfg.weight_decay, lr=lr, opt_eps=cfg.eps, opt_betas=list(cfg.betas),
                     momentum=0.9)
    quiet = contextlib.redirect_stdout(io.StringIO())  # the official code prints its param groups and progress
    with quiet:
        optimizer = off.optim.create_optimizer(args, model)
        lr_values = off.utils.cosine_scheduler(lr, min_lr, cfg.epochs, cfg.steps_per_epoch,
                                               warmup_epochs=cfg.warmup_epochs)
        wd_values = off.utils.cosine_scheduler(cfg.weight_decay, cfg.weight_decay, cfg.epochs, cfg.steps_per_epoch)
    import warnings

    log = _StepLog()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast / GradScaler on a CPU-only machine
        # V2's engine has an fp32 path without a scaler (loss_scaler=None); V1 always scales.
        scaler = None if off.v2 else _cpu_scaler(off)
        for epoch in range(cfg.epochs):
            with contextlib.redirect_stdout(io.StringIO()):
                off.engine.train_one_epoch(
                    model, batches[epoch], optimizer, torch.device("cpu"), epoch, scaler, max_norm=None,
                    patch_size=cfg.patch_size, normlize_target=True, log_writer=log,
                    start_steps=epoch * cfg.steps_per_epoch, lr_schedule_values=lr_values,
                    wd_schedule_values=wd_values)
    return log.rows, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _cpu_scaler(off):
    """The official loss scaler; without CUDA its GradScaler is disabled (scale, unscale and step pass through)
    and its state dict is empty, so the engine's per-step read of `["scale"]` gets 1.0, the disabled scale."""

    class Scaler(off.utils.NativeScalerWithGradNormCount):
        def state_dict(self):
            return super().state_dict() or {"scale": 1.0}

    scaler = Scaler()
    if torch.cuda.is_available():
        raise RuntimeError("the parity runs on the CPU in fp32; hide the GPU (CUDA_VISIBLE_DEVICES='')")
    return scaler


# ---------------------------------------------------------------- ours


def pretrain_loss_fn(model: nn.Module):
    """A plain forward + loss on Bool masks: batch (videos, mask, decode_mask or None) -> (loss, clips). For
    references that need gradients outside the trainer (the trainer runs `videomae pretrain`'s objective)."""

    def loss_fn(batch):
        videos, mask, decode_mask = batch
        pred = model(videos, mask, decode_mask)
        return model.forward_loss(videos, pred, mask, decode_mask), videos.shape[0]

    return loss_fn


def run_ours(cfg: ParityConfig, init: dict, batches: list) -> tuple[list[dict], dict]:
    """`Trainer.fit` on the recipe `videomae pretrain` builds (its loss, the official schedule and AdamW groups, the
    CLI's default switches resolved for the CPU), the masks turned into TokenIds where the batch is made, as the
    loader's collate does -> (per-step rows, final state_dict)."""
    model = our_model(cfg)
    model.load_state_dict(init)
    model.train()
    data = Batches([[(videos, token_ids(mask.flatten(1).to(torch.bool),
                                             decode[0].flatten(1).to(torch.bool) if decode else None))
                          for videos, mask, *decode in epoch_batches] for epoch_batches in batches])
    total_batch = cfg.batch_size
    schedule = Schedule.official(scaled_lr(cfg.blr, total_batch), scaled_lr(cfg.min_blr, total_batch), cfg.epochs,
                                 cfg.steps_per_epoch, cfg.warmup_epochs, weight_decay=cfg.weight_decay)
    recipe = Recipe(model, pretrain_loss, schedule, AdamW(cfg.weight_decay, cfg.betas, cfg.eps), data=data)
    log = MemoryLog()
    Trainer(recipe, Options(), Run.local("cpu", log)).fit()
    return log.rows, {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- data and comparison


def make_batches(cfg: ParityConfig, mask_fn, decode_fn=None) -> list[list[tuple]]:
    """Per epoch, per step: (normalized clips [B, 3, T, H, W] fp32, masks [B, N] from `mask_fn()`[, decoder
    masks from `decode_fn()`, True = not decoded])."""
    clips = []
    for i in range(cfg.num_clips):
        rng = np.random.default_rng(np.random.SeedSequence((cfg.seed, 7, i)))
        frames = render_clip(i % 8, cfg.num_frames, cfg.input_size, rng, style="smooth")  # uint8 [T, H, W, 3]
        clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0)
    clips = torch.stack(clips)
    clips = (clips - torch.tensor(MEAN)[:, None, None, None]) / torch.tensor(STD)[:, None, None, None]
    order_rng = np.random.default_rng(cfg.seed)
    per_epoch = []
    for _ in range(cfg.epochs):
        order = order_rng.permutation(cfg.num_clips)
        steps = []
        for s in range(cfg.steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            masks = torch.from_numpy(np.stack([mask_fn() for _ in idx]))
            batch = (clips[torch.from_numpy(idx)].contiguous(), masks)
            if decode_fn is not None:
                batch += (torch.from_numpy(np.stack([decode_fn().reshape(-1) for _ in idx])),)
            steps.append(batch)
        per_epoch.append(steps)
    return per_epoch


def weights_rel_err(ours: dict, official: dict) -> tuple[float, str, float]:
    """-> (||ours - official|| / ||official|| over all parameters, worst tensor's name, its relative error)."""
    diff2 = ref2 = 0.0
    worst, worst_err = "", 0.0
    for name, ref in official.items():
        a, b = ours[name].double(), ref.double()
        d2, r2 = float((a - b).pow(2).sum()), float(b.pow(2).sum())
        diff2, ref2 = diff2 + d2, ref2 + r2
        err = math.sqrt(d2 / r2) if r2 > 0 else math.sqrt(d2)
        if err > worst_err:
            worst, worst_err = name, err
    return math.sqrt(diff2 / ref2), worst, worst_err


def run_parity(official_root: str | Path = DEFAULT_OFFICIAL, cfg: ParityConfig | None = None) -> dict:
    """Both engines over the same steps -> the train_parity.json document."""
    cfg = cfg or ParityConfig()
    v2 = cfg.decoder_mask_ratio is not None
    off = load_official(official_root, v2=v2)
    torch.manual_seed(cfg.seed)
    init = {k: v.detach().clone() for k, v in official_model(off, cfg).state_dict().items()}
    start = {k: v.clone() for k, v in init.items()}
    # The official generator draws from numpy's global state, as in its data loader workers.
    np.random.seed(cfg.seed)  # noqa: NPY002  (the official generator shuffles with the global state)
    decode = off.masking.RunningCellMaskingGenerator(cfg.grid, cfg.decoder_mask_ratio) if v2 else None
    batches = make_batches(cfg, off.masking.TubeMaskingGenerator(cfg.grid, cfg.mask_ratio), decode)
    official_rows, official_final = run_official(off, cfg, init, batches)
    our_rows, our_final = run_ours(cfg, init, batches)
    if len(official_rows) != cfg.steps or len(our_rows) != cfg.steps:
        raise RuntimeError(f"expected {cfg.steps} steps, got {len(official_rows)} official and {len(our_rows)} ours")
    steps = []
    for i, (o, u) in enumerate(zip(official_rows, our_rows, strict=True)):
        steps.append({"step": i + 1, "loss_official": o["loss"], "loss_ours": u["loss"],
                      "loss_rel_err": abs(u["loss"] - o["loss"]) / abs(o["loss"]),
                      "lr_official": o["lr"], "lr_ours": u["lr"],
                      "grad_norm_official": o["grad_norm"], "grad_norm_ours": u["grad_norm"]})
    w_err, worst, worst_err = weights_rel_err(our_final, official_final)
    moved, _, _ = weights_rel_err(official_final, start)
    return {
        "what": f"our Trainer.fit vs the official {'VideoMAEv2 (dual masking)' if v2 else 'VideoMAE'} "
                "engine_for_pretraining.train_one_epoch, same init, clips and masks",
        "config": asdict(cfg),
        "steps": steps,
        "max_loss_rel_err": max(r["loss_rel_err"] for r in steps),
        "first_step_over_1e-4": next((r["step"] for r in steps if r["loss_rel_err"] > 1e-4), None),
        "weights_rel_err": w_err,
        "worst_tensor": {"name": worst, "rel_err": worst_err},
        "weights_moved_rel": moved,  # how far training took the weights: the scale weights_rel_err is read against
        "targets": {"loss_rel_err": 1e-4, "weights_rel_err": 1e-4},
        "passed": max(r["loss_rel_err"] for r in steps) <= 1e-4 and w_err <= 1e-4,
        "versions": versions(official_root),
    }


def versions(official_root: str | Path) -> dict:
    import timm

    sha_file = Path(official_root) / ".git_sha"
    return {
        "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "device": "cpu", "precision": "fp32",
        "git_sha": git_sha(),
        "official_sha": sha_file.read_text().strip() if sha_file.is_file() else git_sha(Path(official_root)),
        "official_path": str(Path(official_root).resolve().relative_to(REPO)) if Path(official_root).resolve()
        .is_relative_to(REPO) else str(official_root),
    }


def git_sha(repo: Path = REPO) -> str | None:
    """The checkout's commit (+ "-dirty" with uncommitted changes); `GIT_SHA` for this repository without .git."""
    if repo == REPO and os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    if repo != REPO and not (repo / ".git").exists():
        return None  # an exported copy inside this checkout: git would answer with this repository's commit
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 2))
    runs = [("V1 (MCG-NJU/VideoMAE)", result, "C0")]
    if "steps" in result.get("v2", {}):
        runs.append(("V2 dual masking (OpenGVLab/VideoMAEv2)", result["v2"], "C2"))
    title = []
    for name, r, color in runs:
        steps = [row["step"] for row in r["steps"]]
        top.plot(steps, [row["loss_official"] for row in r["steps"]], lw=4, alpha=0.4, color=color,
                 label=f"{name}: official train_one_epoch")
        top.plot(steps, [row["loss_ours"] for row in r["steps"]], lw=1, ls="--", color="k" if color == "C0"
                 else "C3", label=f"{name}: ours (Trainer.fit)")
        bottom.semilogy(steps, [max(row["loss_rel_err"], 1e-12) for row in r["steps"]], color=color, label=name)
        title.append(f"{name.split()[0]}: loss {r['max_loss_rel_err']:.1e}, weights {r['weights_rel_err']:.1e}")
    top.set_ylabel("normalized-pixel MSE")
    top.set_title("Training parity, CPU fp32, max relative errors\n" + "; ".join(title), fontsize=9)
    top.legend(fontsize=7)
    bottom.axhline(1e-4, color="gray", ls=":", label="target 1e-4")
    bottom.set_ylabel("|loss rel. err|")
    bottom.set_xlabel("optimizer step")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", default=str(DEFAULT_OFFICIAL), help="checkout of MCG-NJU/VideoMAE")
    p.add_argument("--official_v2", default=str(DEFAULT_OFFICIAL_V2),
                   help="checkout of OpenGVLab/VideoMAEv2 for the dual-masking sequence (skipped when absent)")
    p.add_argument("--epochs", type=int, default=ParityConfig.epochs, help="10 epochs x 10 steps = 100 steps")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder for train_parity.json/.png")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    torch.set_num_threads(1)  # deterministic reductions, and the cores are shared
    cfg = ParityConfig(epochs=args.epochs, warmup_epochs=min(ParityConfig.warmup_epochs, args.epochs - 1))
    result = run_parity(args.official, cfg)
    if (Path(args.official_v2) / "engine_for_pretraining.py").is_file():
        result["v2"] = run_parity(args.official_v2, dataclasses.replace(cfg, decoder_mask_ratio=0.5))
        result["passed"] = result["passed"] and result["v2"]["passed"]
    else:
        result["v2"] = {"skipped": f"no OpenGVLab/VideoMAEv2 checkout at {args.official_v2}"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_parity.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "train_parity.png")
    for name, r in (("V1", result), ("V2", result["v2"])):
        if "steps" in r:
            print(f"{name}: {len(r['steps'])} steps, max loss rel err {r['max_loss_rel_err']:.2e}, weights rel err "
                  f"{r['weights_rel_err']:.2e} (weights moved {r['weights_moved_rel']:.2e})")
    print(f"{'PASS' if result['passed'] else 'FAIL'} -> {out / 'train_parity.json'}, {out / 'train_parity.png'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
