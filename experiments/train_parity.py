"""Training parity with the official VideoMAE engine (CPU, fp32), optimizer step for optimizer step.

    TRITON_INTERPRET=1 OMP_NUM_THREADS=1 python -m experiments.train_parity [--epochs 10] [--out bench/results]

Both sides start from the same weights (the official model's, loaded into ours) and see the same clips and masks,
made by `videomae pretrain`'s own data path: raw clips read by `build_pretrain_dataset` (kinetics sampling,
multi-scale crop, the dataset's `MaskGenerator` for tube masks and V2 running-cell decoder masks) and batched by
`build_loader` (`ClipCollate` turns the masks into `TokenIds`). The official side gets the dataset's items
stacked, its Bool masks as they were before the collate; ours reads the loader itself.
- official: `train_one_epoch` of MCG-NJU/VideoMAE (V1) or OpenGVLab/VideoMAEv2 (dual masking), see
  experiments/official_engine.py;
- ours: `Trainer.fit` on `videomae pretrain`'s recipe (its loss `pretrain_loss`, the official schedule and AdamW
  groups, `--clip_grad`), the CLI's step switches for the CPU with the ops backend named per row (`torch`, what
  `auto` resolves to on a CPU; `triton`, the kernels in the interpreter).

Rows: V1 and V2 over 100 steps, V1 with `--clip_grad` (the official `max_norm`), and V1 with the Triton kernels
over 20 steps. Gates (`GATES`): every step's loss and the final weights, globally and per tensor (the worst one
named), within 1e-5 relative; the lr equal to float64 rounding; the weights moved by training. Each row's noise
floor is its official fp32 run against the same run in float64: the rounding error of fp32 itself, which any
correct fp32 code shares. The V1 row also runs our side with each bug of experiments/planted_bugs.py, and records
which check caught it at which step. Writes `train_parity.json` (after each row) and `train_parity.png`
(experiments/parity_report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from experiments.official_engine import (
    DEFAULT_OFFICIAL,
    DEFAULT_OFFICIAL_V2,
    load_official,
    official_model,
    run_official,
)
from experiments.parity_report import (
    git_sha,  # noqa: F401 - experiments/study.py imports it from here
    official_provenance,
    plot,
    report,
    versions,
)
from experiments.planted_bugs import PLANTED
from videomae import create_model
from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.data.loader import VideoLoader, build_loader, build_pretrain_dataset
from videomae.data.synth import render_clip
from videomae.ops.norm_pix_mse import patchify
from videomae.train.logs import MemoryLog
from videomae.train.pretrain import pretrain_loss
from videomae.train.recipe import AdamW, Options, Recipe, Schedule
from videomae.train.run import Run
from videomae.train.schedule import scaled_lr
from videomae.train.step import StepConfig
from videomae.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
# Relative errors; lr: the same float64 formula on both sides. weights_moved_rel is a floor: parity of two models
# that did not train would be vacuous.
GATES = {"loss_rel_err": 1e-5, "weights_rel_err": 1e-5, "tensor_rel_err": 1e-5, "lr_rel_err": 1e-12,
         "weights_moved_rel": 1e-3}


@dataclass(frozen=True)
class ParityConfig:
    """A model both codes build (the official V1 encoder's position table is fixed at 16 frames), its data, its
    recipe, and our step's ops backend."""

    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 4
    num_clips: int = 40  # one epoch: num_clips // batch_size steps
    num_frames: int = 16
    sampling_rate: int = 2
    video_frames: int = 36  # the raw clips: kinetics sampling draws a start in [0, 36 - 16 * 2]
    video_size: tuple[int, int] = (40, 48)  # multi-scale crop of the 40-pixel side, resized to input_size
    style: str = "texture"  # render_clip's style
    pixel_noise: int = 2  # grey levels of uniform noise on the rendered clips (see write_clips)
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
    clip_grad: float | None = None  # --clip_grad, the official engine's max_norm
    ops_backend: str = "torch"
    seed: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_clips // self.batch_size

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class Side(NamedTuple):
    rows: list[dict]  # per step: loss, lr, grad_norm
    final: dict  # state_dict after the last step


class ParityData(NamedTuple):
    loader: VideoLoader  # ours: `videomae pretrain`'s loader, batches (videos, TokenIds)
    official: list[list[tuple]]  # per epoch, per step: (videos, mask[, decode_mask]) Bool, before the collate
    min_cube_std: float  # grey levels: the flattest cube channel of all batches (how well posed the targets are)


# ---------------------------------------------------------------- data: the CLI's dataset, masks and collate


def write_clips(cfg: ParityConfig, folder: Path) -> Path:
    """`num_clips` raw uint8 [T, H, W, 3] `.npy` clips (the raw format `videomae data synth` writes) and their
    list file -> the list file."""
    lines = []
    for i in range(cfg.num_clips):
        rng = np.random.default_rng(np.random.SeedSequence((cfg.seed, 7, i)))
        frames = render_clip(i % 8, cfg.video_frames, cfg.video_size, rng, cfg.style).astype(np.int16)
        # Texture and sensor-like noise keep every cube varied. The target (x - mean) / (std + 1e-6) of a flat
        # cube is rounding divided by ~1e-6: on the smooth style without noise, two correct fp32 codes (the
        # official one and our Triton kernels) disagreed by 0.1 per target value and 1.8e-3 on such a batch's
        # loss, and fp32 and fp64 as much; a parity measures the codes, not that ill-posedness.
        frames += rng.integers(-cfg.pixel_noise, cfg.pixel_noise + 1, frames.shape, dtype=np.int16)
        np.save(folder / f"clip_{i:03d}.npy", np.clip(frames, 0, 255).astype(np.uint8))
        lines.append(f"clip_{i:03d}.npy {i % 8}\n")
    (folder / "train.txt").write_text("".join(lines))
    return folder / "train.txt"


def cli_data(cfg: ParityConfig, folder: Path) -> ParityData:
    """The loader `videomae pretrain` builds over the clips in `folder`, and the official side's batches: the
    same dataset items in the loader's order (`EpochSampler.indices`), stacked without the collate."""
    dataset = build_pretrain_dataset(
        write_clips(cfg, folder), num_frames=cfg.num_frames, sampling_rate=cfg.sampling_rate,
        input_size=cfg.input_size, patch_size=cfg.patch_size, tubelet_size=2, mask_type="tube",
        mask_ratio=cfg.mask_ratio, decoder_mask_ratio=cfg.decoder_mask_ratio, seed=cfg.seed)
    loader = build_loader(dataset, cfg.batch_size, seed=cfg.seed, drop_last=True)
    official = []
    for epoch in range(cfg.epochs):
        dataset.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        order, b = loader.sampler.indices(), cfg.batch_size
        batches = []
        for s in range(cfg.steps_per_epoch):
            videos, masks = zip(*(dataset[i] for i in order[s * b:(s + 1) * b]))
            masks = zip(*masks) if isinstance(masks[0], tuple) else (masks,)  # V2: (encoder, decoder) per item
            batches.append((torch.stack(videos), *(torch.stack(m) for m in masks)))
        official.append(batches)
    return ParityData(loader, official, min(cube_std(b[0], cfg.patch_size) for e in official for b in e))


def cube_std(videos: torch.Tensor, patch_size: int) -> float:
    """The smallest std of a cube's channel, in grey levels: targets are (x - mean) / (std + 1e-6)."""
    m, s = (torch.tensor(c, dtype=torch.float64).view(1, 3, 1, 1, 1) for c in (IMAGENET_MEAN, IMAGENET_STD))
    cubes = patchify(videos.double() * s + m, 2, patch_size)  # [B, N, P, C]
    return float(cubes.std(dim=-2).min()) * 255


# ---------------------------------------------------------------- ours


def our_model(cfg: ParityConfig) -> nn.Module:
    return create_model(
        "pretrain_videomae_small_patch16_224", img_size=cfg.input_size, patch_size=cfg.patch_size,
        num_frames=cfg.num_frames, encoder_embed_dim=cfg.encoder_embed_dim, encoder_depth=cfg.encoder_depth,
        encoder_num_heads=cfg.encoder_num_heads, decoder_embed_dim=cfg.decoder_embed_dim,
        decoder_depth=cfg.decoder_depth, decoder_num_heads=cfg.decoder_num_heads, drop_path_rate=0.0)


def step_config(cfg: ParityConfig) -> StepConfig:
    """The CLI's default switches, resolved for the CPU (fp32, fused AdamW, no compile), the ops backend named."""
    return StepConfig(ops_backend=cfg.ops_backend).resolve(torch.device("cpu"), pretraining=True)


def run_ours(cfg: ParityConfig, init: dict, data) -> Side:
    """`Trainer.fit` on the recipe `videomae pretrain` builds: its loss, the official schedule and AdamW groups,
    `clip_grad`; `data` is the loader (or anything with its protocol)."""
    model = our_model(cfg)
    model.load_state_dict(init)
    model.train()
    total_batch = cfg.batch_size
    schedule = Schedule.official(scaled_lr(cfg.blr, total_batch), scaled_lr(cfg.min_blr, total_batch), cfg.epochs,
                                 cfg.steps_per_epoch, cfg.warmup_epochs, weight_decay=cfg.weight_decay)
    recipe = Recipe(model, pretrain_loss, schedule, AdamW(cfg.weight_decay, cfg.betas, cfg.eps), data=data,
                    clip_grad=cfg.clip_grad)
    log = MemoryLog()
    Trainer(recipe, Options(step=step_config(cfg)), Run.local("cpu", log)).fit()
    return Side(log.rows, {k: v.detach().clone() for k, v in model.state_dict().items()})


# ---------------------------------------------------------------- comparison


def rel_err(a: float, ref: float) -> float:
    return abs(a - ref) / abs(ref) if ref else abs(a)


def weights_rel_err(ours: dict, official: dict) -> tuple[float, dict[str, float]]:
    """-> (||ours - official|| / ||official|| over all parameters, the same per tensor)."""
    diff2 = ref2 = 0.0
    per_tensor = {}
    for name, ref in official.items():
        a, b = ours[name].double(), ref.double()
        d2, r2 = float((a - b).pow(2).sum()), float(b.pow(2).sum())
        diff2, ref2 = diff2 + d2, ref2 + r2
        per_tensor[name] = math.sqrt(d2 / r2) if r2 > 0 else math.sqrt(d2)
    return math.sqrt(diff2 / ref2), per_tensor


def errors(ours: Side, ref: Side) -> dict:
    """Worst per-step loss error, final weights error, worst tensor."""
    w_err, per_tensor = weights_rel_err(ours.final, ref.final)
    worst = max(per_tensor, key=per_tensor.get)
    return {"max_loss_rel_err": max(rel_err(u["loss"], o["loss"]) for u, o in zip(ours.rows, ref.rows, strict=True)),
            "weights_rel_err": w_err, "worst_tensor": {"name": worst, "rel_err": per_tensor[worst]}}


def compare(official: Side, ours: Side, start: dict, gates: dict = GATES) -> dict:
    """Per-step rows and the gated checks: {name: value, gate, passed[, first_step_over | tensor]}."""
    if len(official.rows) != len(ours.rows):
        raise RuntimeError(f"the official side took {len(official.rows)} steps, ours {len(ours.rows)}")
    steps = [{"step": i + 1, "loss_official": o["loss"], "loss_ours": u["loss"],
              "loss_rel_err": rel_err(u["loss"], o["loss"]), "lr_official": o["lr"], "lr_ours": u["lr"],
              "lr_rel_err": rel_err(u["lr"], o["lr"]), "grad_norm_official": o["grad_norm"],
              "grad_norm_ours": u["grad_norm"], "grad_norm_rel_err": rel_err(u["grad_norm"], o["grad_norm"])}
             for i, (o, u) in enumerate(zip(official.rows, ours.rows))]
    w_err, per_tensor = weights_rel_err(ours.final, official.final)
    worst = max(per_tensor, key=per_tensor.get)
    checks = {}
    for key in ("loss_rel_err", "lr_rel_err"):
        over = [r["step"] for r in steps if r[key] > gates[key]]
        checks[key] = {"value": max(r[key] for r in steps), "gate": gates[key],
                       "first_step_over": min(over, default=None)}
    checks["weights_rel_err"] = {"value": w_err, "gate": gates["weights_rel_err"]}
    checks["tensor_rel_err"] = {"value": per_tensor[worst], "gate": gates["tensor_rel_err"], "tensor": worst}
    for c in checks.values():
        c["passed"] = c["value"] <= c["gate"]
    moved = weights_rel_err(official.final, start)[0]
    checks["weights_moved_rel"] = {"value": moved, "min": gates["weights_moved_rel"],
                                   "passed": moved >= gates["weights_moved_rel"]}
    return {"steps": steps, "max_grad_norm_rel_err": max(r["grad_norm_rel_err"] for r in steps), "checks": checks,
            "failed": [k for k, c in checks.items() if not c["passed"]],
            "passed": all(c["passed"] for c in checks.values())}


class Setup(NamedTuple):
    off: object  # the official modules
    init: dict  # the official model's initial weights, loaded on both sides
    data: ParityData


def setup(official_root: str | Path, cfg: ParityConfig, folder: Path) -> Setup:
    off = load_official(official_root, v2=cfg.decoder_mask_ratio is not None)
    torch.manual_seed(cfg.seed)
    init = {k: v.detach().clone() for k, v in official_model(off, cfg).state_dict().items()}
    return Setup(off, init, cli_data(cfg, folder))


def run_parity(official_root: str | Path = DEFAULT_OFFICIAL, cfg: ParityConfig | None = None,
               noise_floor: bool = True, planted: tuple[str, ...] = ()) -> dict:
    """Both engines over the same steps -> one row of train_parity.json. `noise_floor`: the official run again in
    float64, against which both fp32 runs are measured; `planted`: our side again with each of these bugs
    (experiments/planted_bugs.py), which the gates must catch."""
    cfg = cfg or ParityConfig()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train_parity_") as folder:
        s = setup(official_root, cfg, Path(folder))
        official = Side(*run_official(s.off, cfg, s.init, s.data.official))
        ours = run_ours(cfg, s.init, s.data.loader)
        row = {"what": f"our Trainer.fit ({cfg.ops_backend} ops"
                       f"{f', clip_grad {cfg.clip_grad}' if cfg.clip_grad else ''}) vs the official "
                       f"{'VideoMAEv2 (dual masking)' if cfg.decoder_mask_ratio else 'VideoMAE'} train_one_epoch",
               "config": asdict(cfg), "step_config": step_config(cfg).as_dict(), "attention": attention_backend(cfg),
               "official": official_provenance(official_root), "min_cube_std": s.data.min_cube_std,
               **compare(official, ours, s.init)}
        if cfg.clip_grad:
            row["clipped_steps"] = sum(r["grad_norm_official"] > cfg.clip_grad for r in row["steps"])
        if noise_floor:
            fp64 = Side(*run_official(s.off, cfg, s.init, s.data.official, torch.float64))
            row["noise_floor"] = {"official_fp32_vs_fp64": errors(official, fp64), "ours_vs_fp64": errors(ours, fp64),
                                  "loss_rel_err_per_step": [rel_err(o["loss"], r["loss"])
                                                            for o, r in zip(official.rows, fp64.rows)]}
        if planted:
            row["planted"] = {name: caught(official, s, cfg, name) for name in planted}
            row["planted_caught"] = all(not p["passed"] for p in row["planted"].values())
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def caught(official: Side, s: Setup, cfg: ParityConfig, name: str) -> dict:
    """Our side with the planted bug `name` against the official run -> which checks failed, and when."""
    with PLANTED[name]():
        bugged = run_ours(cfg, s.init, s.data.loader)
    result = compare(official, bugged, s.init)
    return {"failed": result["failed"], "passed": result["passed"],
            "checks": {k: {f: c[f] for f in ("value", "first_step_over", "tensor") if f in c}
                       for k, c in result["checks"].items()}}


def attention_backend(cfg: ParityConfig) -> str:
    """The attention backend our encoder's fp32 CPU call gets (the step leaves attention on auto)."""
    from videomae.attention import select_backend

    t, hw = cfg.num_frames // 2, (cfg.input_size // cfg.patch_size) ** 2
    visible = t * (hw - int(cfg.mask_ratio * hw))
    q = torch.empty(cfg.batch_size, cfg.encoder_num_heads, visible, cfg.encoder_embed_dim // cfg.encoder_num_heads)
    return select_backend(q, q, q).name


# ---------------------------------------------------------------- command line


def triton_unavailable() -> str | None:
    from videomae import dispatch

    report = dispatch.backend_report("ops")
    return "; ".join(sorted({r for op in report.values() for r in op["triton"]["reasons"]})) or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", default=str(DEFAULT_OFFICIAL), help="checkout of MCG-NJU/VideoMAE")
    p.add_argument("--official_v2", default=str(DEFAULT_OFFICIAL_V2), help="checkout of OpenGVLab/VideoMAEv2")
    p.add_argument("--epochs", type=int, default=ParityConfig.epochs, help="10 epochs x 10 steps = 100 steps")
    p.add_argument("--clip_grad", type=float, default=0.3, help="the clip-grad row's max_norm (the grad norm "
                   "falls from 2.4 to ~0.3 over the run: most steps are clipped)")
    p.add_argument("--triton_epochs", type=int, default=2, help="the Triton row: 2 epochs = 20 steps")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder for train_parity.json/.png")
    args = p.parse_args(argv)
    for name in ("epochs", "triton_epochs"):
        if getattr(args, name) < 2:
            p.error(f"--{name} must be >= 2 (one epoch of warmup, then the cosine), got {getattr(args, name)}")
    if args.clip_grad <= 0:
        p.error(f"--clip_grad must be > 0, got {args.clip_grad}")
    if not (Path(args.official) / "engine_for_pretraining.py").is_file():
        p.error(f"--official: no engine_for_pretraining.py in {args.official} (check out MCG-NJU/VideoMAE)")
    torch.set_num_threads(1)  # deterministic reductions, and the cores are shared
    cfg = ParityConfig(epochs=args.epochs, warmup_epochs=min(ParityConfig.warmup_epochs, args.epochs - 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"what": "videomae pretrain's step (Trainer.fit) vs the official train_one_epoch, same init, clips and "
                      "masks, CPU fp32", "gates": GATES, "rows": {}, "versions": versions()}
    no_v2 = not (Path(args.official_v2) / "engine_for_pretraining.py").is_file()
    no_triton = triton_unavailable()
    plan = {
        "v1": lambda: run_parity(args.official, cfg, planted=tuple(PLANTED)),
        "v2": lambda: run_parity(args.official_v2, dataclasses.replace(cfg, decoder_mask_ratio=0.5)),
        "v1_clip_grad": lambda: run_parity(args.official, dataclasses.replace(cfg, clip_grad=args.clip_grad)),
        "v1_triton": lambda: run_parity(args.official, dataclasses.replace(
            cfg, epochs=args.triton_epochs, warmup_epochs=1, ops_backend="triton")),
    }
    skipped = {"v2": no_v2 and f"no OpenGVLab/VideoMAEv2 checkout at {args.official_v2}",
               "v1_triton": no_triton and f"the triton backend cannot run here: {no_triton}"}
    for name, run in plan.items():  # the file is rewritten after each row: a later failure keeps the earlier ones
        result["rows"][name] = {"skipped": skipped[name]} if skipped.get(name) else run()
        result["passed"] = all(r.get("passed", False) and r.get("planted_caught", True)
                               for r in result["rows"].values())
        (out / "train_parity.json").write_text(json.dumps(result, indent=1) + "\n")
        print(report(name, result["rows"][name]), flush=True)
    plot(result, out / "train_parity.png")
    print(f"{'PASS' if result['passed'] else 'FAIL'} -> {out / 'train_parity.json'}, {out / 'train_parity.png'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
