"""The fast pretraining step: every speed switch in one documented config.

    model = videomae.create_model("pretrain_videomae_base_patch16_224").cuda()
    cfg = FastPathConfig()                         # bf16 autocast, fused ops, auto attention
    opt = make_optimizer(model, lr=1.5e-4, config=cfg)
    step = build_train_step(model, opt, cfg)
    loss = step(videos, mask)                      # forward + backward + AdamW step, no host sync

Switches (`FastPathConfig` fields; `as_dict()` / `fastpath_report()` show them in `videomae info`):
- `precision`: `bf16` (default: autocast, fp32 master weights, no loss scaling), `fp16` (autocast +
  GradScaler, as the official engine), `fp32`.
- `fused_ops`: the fused `videomae.ops` kernels (cube_embed of visible cubes, decoder_input,
  norm_pix_mse) instead of the eager reference code; sets `model.fused`.
- `attention`: the `videomae.attention` backend (`auto` picks flash-attn / cuDNN / flash SDPA per call).
- `fused_adamw`: `torch.optim.AdamW(fused=True)`, one launch for all parameters (used by `make_optimizer`).
- `compile`: `torch.compile` of forward+loss (backward follows through AOTAutograd); `compile_mode`
  passes a mode (`max-autotune-no-cudagraphs`, ...), `compile_backend` a backend (`inductor`; `aot_eager`
  to debug). Inductor fuses the LayerNorm+residual and bias+GELU epilogues.
- `cuda_graphs`: capture the whole step (forward, backward, optimizer) once and replay it: removes
  launch gaps. Needs fixed shapes, a capturable (sync-free) model path, bf16/fp32 (a GradScaler syncs),
  and makes the optimizer capturable; the learning rate is baked in unless the groups' `lr` is a tensor.
- `checkpoint`: activation checkpointing of every block (encoder and decoder): ~1/3 more compute for a
  much larger batch; meant for L/H/g when the batch you want does not fit (`for_model` turns it on).
- `tf32`: TF32 for whatever fp32 matmuls remain (outside autocast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from videomae import attention

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass(frozen=True)
class FastPathConfig:
    precision: str = "bf16"
    fused_ops: bool = True
    attention: str = "auto"
    fused_adamw: bool = True
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    cuda_graphs: bool = False
    checkpoint: bool = False
    tf32: bool = True

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        if self.attention.replace("_", "-") not in attention.ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {attention.ATTENTION_BACKENDS}, got {self.attention!r}")
        if self.cuda_graphs and self.precision == "fp16":
            raise ValueError("cuda_graphs cannot capture a GradScaler step (it syncs on inf checks): use bf16")

    @classmethod
    def for_model(cls, name: str, **overrides) -> FastPathConfig:
        """Defaults per model size: checkpointing on for large, huge and giant."""
        big = any(s in name for s in ("large", "huge", "giant"))
        return cls(**{"checkpoint": big, **overrides})

    @classmethod
    def eager_reference(cls, precision: str = "fp32") -> FastPathConfig:
        """Every switch off: the unfused eager code the fast path is checked and timed against."""
        return cls(precision=precision, fused_ops=False, attention="eager", fused_adamw=False, tf32=False)

    def as_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> FastPathConfig:
        return replace(self, **changes)


def apply_to_model(model: nn.Module, config: FastPathConfig) -> nn.Module:
    """Set the model-level switches (fused ops, checkpointing) on a `PretrainVisionTransformer`."""
    model.fused = config.fused_ops
    model.encoder.fused = config.fused_ops
    model.encoder.use_checkpoint = config.checkpoint
    model.decoder.use_checkpoint = config.checkpoint
    return model


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.05, betas=(0.9, 0.95), config: FastPathConfig | None = None
) -> torch.optim.AdamW:
    """AdamW with the official groups (no decay on 1-D params, biases, mask token, pos), fused when asked
    and every parameter sits on one accelerator or the CPU (torch's fused kernel supports both)."""
    from videomae.train.optim import param_groups

    config = config or FastPathConfig()
    groups = param_groups(model, weight_decay)
    for g in groups:
        g.pop("names")
    capturable = config.cuda_graphs
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=config.fused_adamw or None,
                             capturable=capturable)


class TrainStep:
    """`step(videos, mask) -> loss` (a 0-dim fp32 tensor; reading it is the only sync, left to the caller)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: FastPathConfig,
                 loss_fn: Callable | None = None):
        self.model, self.optimizer, self.config = model, optimizer, config
        self.dtype = PRECISIONS[config.precision]
        device = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler(device) if config.precision == "fp16" else None
        loss_fn = loss_fn or (lambda v, m: model.forward_loss(v, model(v, m), m))
        if config.compile:
            loss_fn = torch.compile(loss_fn, mode=config.compile_mode, backend=config.compile_backend)
        self.loss_fn = loss_fn
        self._graph = None

    def _eager_step(self, videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(videos.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss = self.loss_fn(videos, mask)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach()

    def __call__(self, videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.config.cuda_graphs:
            return self._eager_step(videos, mask)
        if self._graph is None:
            self._graph = _GraphedStep(self._eager_step, self.optimizer, (videos, mask))
        return self._graph(videos, mask)


class _GraphedStep:
    """Whole-step CUDA graph (PyTorch's "whole network capture" recipe): static input buffers, three
    warm-up steps on a side stream (they are real steps: they update the weights), one capture."""

    def __init__(self, step: Callable, optimizer: torch.optim.Optimizer, example: tuple[torch.Tensor, ...]):
        if example[0].device.type != "cuda":
            raise ValueError("cuda_graphs needs CUDA inputs")
        self.static = [x.clone() for x in example]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(*self.static)
        torch.cuda.current_stream().wait_stream(side)
        optimizer.zero_grad(set_to_none=True)  # grads get allocated inside the graph's private pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = step(*self.static)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for buf, x in zip(self.static, inputs):
            if buf.data_ptr() != x.data_ptr():
                buf.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.loss


def build_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: FastPathConfig | None = None,
                     loss_fn: Callable | None = None) -> TrainStep:
    """Apply `config` (model switches, attention backend, TF32) and return the step callable.

    loss_fn(videos, mask) -> scalar loss defaults to `model.forward_loss(videos, model(videos, mask), mask)`;
    pass one for models with other signatures (the benchmark's peers)."""
    config = config or FastPathConfig()
    if hasattr(model, "encoder") and hasattr(model.encoder, "use_checkpoint"):
        apply_to_model(model, config)
    attention.set_attention_backend(config.attention)
    attention._capability(next(model.parameters()).device)  # read outside any compiled region
    torch.backends.cuda.matmul.allow_tf32 = config.tf32
    torch.backends.cudnn.allow_tf32 = config.tf32
    if config.cuda_graphs:
        for g in optimizer.param_groups:  # device-side step counters; must be set before the first step
            g["capturable"] = True
    return TrainStep(model, optimizer, config, loss_fn)


def fastpath_report(config: FastPathConfig | None = None) -> dict:
    """For `videomae info`: the switches in force and whether each can run here."""
    config = config or FastPathConfig()
    cuda = torch.cuda.is_available()
    return {
        "config": config.as_dict(),
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()) or not cuda,
        "fused_adamw": "cuda and cpu kernels in torch>=2.4",
        "compile": "available" if _has_triton() or not cuda else "no triton: torch.compile falls back to eager",
        "cuda_graphs": "available" if cuda else "needs CUDA",
        "attention": attention.backend_report(),
    }


def _has_triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None
