"""The official side of the training parity (experiments/train_parity.py): the 2022 official pretraining engine,
imported as it is from a git-ignored checkout and run on today's CPU stack.

    git clone https://github.com/MCG-NJU/VideoMAE third_party/VideoMAE          # run at 14ef8d8
    git clone https://github.com/OpenGVLab/VideoMAEv2 third_party/VideoMAEv2    # run at 29eab1e (dual masking)
    git -C third_party/VideoMAE rev-parse HEAD > third_party/VideoMAE/.git_sha  # recorded in the results

`run_official` is `engine_for_pretraining.train_one_epoch` itself, one call per epoch, with the official
`create_optimizer` (AdamW, no decay on 1-D params, biases and the mask token) and `utils.cosine_scheduler`;
`max_norm` is the official `--clip_grad`. Nothing here changes the official numerics: the shims only let the
old code import (see `load_official`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import math
import sys
import types
import warnings
from argparse import Namespace
from functools import partial
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OFFICIAL = REPO / "third_party" / "VideoMAE"
DEFAULT_OFFICIAL_V2 = REPO / "third_party" / "VideoMAEv2"
# Bare module names the two official repositories share: purged before the other one is imported.
_OFFICIAL_MODULES = ("utils", "engine_for_pretraining", "optim_factory", "modeling_pretrain", "modeling_finetune",
                     "models", "models.modeling_pretrain", "models.modeling_finetune")


def load_official(root: str | Path, v2: bool = False) -> types.SimpleNamespace:
    """Import the official modules from `root` (a checkout of MCG-NJU/VideoMAE, or of OpenGVLab/VideoMAEv2).

    Shims for what the 2022 code needs and a current CPU stack lacks, none of which touch the numerics:
    `torch._six.inf` (removed from torch), `tensorboardX` (only imported), and `torch.cuda.synchronize`
    (called after every step; a no-op without a GPU)."""
    root = Path(root)
    if not (root / "engine_for_pretraining.py").is_file():
        repo = "OpenGVLab/VideoMAEv2" if v2 else "MCG-NJU/VideoMAE"
        raise FileNotFoundError(f"no engine_for_pretraining.py in {root} (check out {repo} there)")
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecated paths and re-registered names, torch.cuda.amp on CPU
        engine = importlib.import_module("engine_for_pretraining")
        optim = importlib.import_module("optim_factory")
        utils = importlib.import_module("utils")
        modeling = importlib.import_module("models.modeling_pretrain" if v2 else "modeling_pretrain")
    return types.SimpleNamespace(engine=engine, modeling=modeling, optim=optim, utils=utils, root=root, v2=v2)


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


def official_model(off, cfg) -> nn.Module:
    """The official `PretrainVisionTransformer` at the parity size (`pretrain_videomae_*` keyword set)."""
    return off.modeling.PretrainVisionTransformer(
        img_size=cfg.input_size, patch_size=cfg.patch_size, encoder_embed_dim=cfg.encoder_embed_dim,
        encoder_depth=cfg.encoder_depth, encoder_num_heads=cfg.encoder_num_heads, encoder_num_classes=0,
        decoder_num_classes=3 * 2 * cfg.patch_size**2, decoder_embed_dim=cfg.decoder_embed_dim,
        decoder_depth=cfg.decoder_depth, decoder_num_heads=cfg.decoder_num_heads, mlp_ratio=4, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), init_values=0.0, drop_path_rate=0.0,
        **({"all_frames": cfg.num_frames} if off.v2 else {}))


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


def run_official(off, cfg, init: dict, batches: list, dtype: torch.dtype = torch.float32) -> tuple[list[dict], dict]:
    """`train_one_epoch` over `batches` (one list per epoch of (videos, mask[, decode_mask]) Bool masks), in
    `dtype` (float64: the fp32 run's own rounding error, the noise floor) -> (per-step rows, final state_dict)."""
    model = official_model(off, cfg).to(dtype)
    model.load_state_dict(init)
    total_batch = cfg.batch_size
    lr, min_lr = cfg.blr * total_batch / 256, cfg.min_blr * total_batch / 256
    args = Namespace(opt="adamw", weight_decay=cfg.weight_decay, lr=lr, opt_eps=cfg.eps, opt_betas=list(cfg.betas),
                     momentum=0.9)
    with contextlib.redirect_stdout(io.StringIO()):  # the official code prints its param groups and progress
        optimizer = off.optim.create_optimizer(args, model)
        lr_values = off.utils.cosine_scheduler(lr, min_lr, cfg.epochs, cfg.steps_per_epoch,
                                               warmup_epochs=cfg.warmup_epochs)
        wd_values = off.utils.cosine_scheduler(cfg.weight_decay, cfg.weight_decay, cfg.epochs, cfg.steps_per_epoch)
    log = _StepLog()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast / GradScaler on a CPU-only machine
        # V2's engine has an fp32 path without a scaler (loss_scaler=None); V1 always scales.
        scaler = None if off.v2 else _cpu_scaler(off)
        for epoch in range(cfg.epochs):
            data = [(b[0].to(dtype), *b[1:]) for b in batches[epoch]]
            with contextlib.redirect_stdout(io.StringIO()):
                off.engine.train_one_epoch(
                    model, data, optimizer, torch.device("cpu"), epoch, scaler, max_norm=cfg.clip_grad,
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

    if torch.cuda.is_available():
        raise RuntimeError("the parity runs on the CPU in fp32; hide the GPU (CUDA_VISIBLE_DEVICES='')")
    return Scaler()
