"""The one training step that `videomae pretrain`, `videomae finetune`, the parity run, the study and
`bench/train_step.py` all run (through `videomae.train.trainer.Trainer`), and its switches.

    config = StepConfig().resolve(device, pretraining=True)   # bf16, fused AdamW, auto attention, compile
    optimizer = make_optimizer(model, lr, weight_decay=0.05, config=config)
    objective = build_objective(model, config, pretrain_loss)  # batch -> loss, compiled
    out = train_step(model, optimizer, [(videos, ids)], objective, Precision(config.precision, device))

`train_step` is the whole step in one visible function: zero grads, micro-batches (autocast, backward),
unscale, grad norm (+ clip), non-finite guard, optimizer. It never waits on the host: the loss, the
grad norm and the "skipped" flag stay on the device (`StepOut`) and the trainer reads them together every
`log_interval` steps (one sync; `--log_interval`). A non-finite step is skipped on the device: fused AdamW
takes the flag as `found_inf` (the GradScaler's own mechanism) and leaves weights, moments and step counts
untouched, so divergence is noticed at the next read, at most `log_interval` steps late. fp16 runs the
GradScaler, which with fused AdamW also unscales, skips and rescales on the device (its scale is read with
the rows). The one exception: a non-fused optimizer cannot skip on the device and reads the flag every step.

Switches (`StepConfig`; each one lands in the run's args.json and in `videomae info` via `step_report()`):
- `precision`: auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp16 (autocast + GradScaler), fp32.
- `ops_backend`: the `videomae.ops` backend (auto = cuda > triton > torch); the model always calls the ops.
- `attention`: the `videomae.attention` backend (auto picks per shape).
- `fused_adamw`: one AdamW launch for all parameters, and the sync-free skip of non-finite steps.
- `compile`: `torch.compile(fullgraph=True)` of forward + loss (backward follows through AOTAutograd);
  None = on for CUDA pretraining. `compile_mode` / `compile_backend` pass through.
- `cuda_graphs`: capture the whole step once and replay it (fixed shapes, capturable optimizer, lr as a
  device tensor; no weight-decay schedule, no GradScaler).
- `checkpoint`: activation checkpointing of every block. `tf32`: TF32 for the fp32 matmuls that remain.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.utils._pytree as pytree
from torch import nn

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class TrainingDiverged(RuntimeError):
    """Too many consecutive optimizer steps had inf/NaN losses or gradients."""


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


class Precision:
    """Autocast context and (for fp16) the GradScaler, by name: bf16 | fp16 | fp32."""

    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS[1:]:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
        self.name, self.device = name, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


# ---------------------------------------------------------------- switches


@dataclass(frozen=True)
class StepConfig:
    precision: str = "auto"
    ops_backend: str = "auto"
    attention: str = "auto"
    fused_adamw: bool = True
    compile: bool | None = None
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    cuda_graphs: bool = False
    checkpoint: bool = False
    recompute: str = "auto"
    tf32: bool = True

    def __post_init__(self):
        from videomae import attention

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.ops_backend not in ("auto", "cuda", "triton", "torch"):
            raise ValueError(f"ops_backend must be auto, cuda, triton or torch, got {self.ops_backend!r}")
        if self.attention.replace("_", "-") not in attention.ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {attention.ATTENTION_BACKENDS}, got {self.attention!r}")
        from videomae.layers.recompute import MODES

        if self.recompute not in MODES:
            raise ValueError(f"recompute must be one of {MODES}, got {self.recompute!r}")
        if self.cuda_graphs and self.precision == "fp16":
            raise ValueError("cuda_graphs does not capture the GradScaler (fp16) step: use bf16 or fp32")
        if self.cuda_graphs and not self.fused_adamw:
            raise ValueError("cuda_graphs needs fused_adamw (the skip of non-finite steps must stay on the device)")

    @classmethod
    def eager_reference(cls, precision: str = "fp32") -> StepConfig:
        """The unfused eager code the fast step is checked and timed against: torch ops, eager attention."""
        return cls(precision=precision, ops_backend="torch", attention="eager", compile=False, tf32=False)

    @classmethod
    def from_args(cls, args) -> StepConfig:
        """The switches from parsed CLI flags (absent flags keep their defaults)."""
        names = {"precision": "precision", "compile": "compile", "cuda_graphs": "cuda_graphs",
                 "attention": "attention", "ops_backend": "ops_backend", "checkpoint": "use_checkpoint",
                 "fused_adamw": "fused_adamw", "recompute": "recompute"}
        given = {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None) is not None}
        return cls(**given)

    def resolve(self, device: torch.device, pretraining: bool = True) -> StepConfig:
        """Concrete values for `device`: precision from `auto`, compile on for CUDA pretraining."""
        compile_ = self.compile if self.compile is not None else (device.type == "cuda" and pretraining)
        out = replace(self, precision=resolve_precision(self.precision, device), compile=compile_)
        if out.cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, got {device}")
        return out

    def as_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> StepConfig:
        return replace(self, **changes)


def apply_config(model: nn.Module, config: StepConfig) -> None:
    """Process-wide and model switches: TF32, activation checkpointing (the backends: `ops_context`)."""
    # The legacy switches and the matmul precision together: torch refuses to read a mix of old and new settings.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = config.tf32
    torch.set_float32_matmul_precision("high" if config.tf32 else "highest")
    for part in (model, getattr(model, "encoder", None), getattr(model, "decoder", None)):
        if part is not None and hasattr(part, "grad_checkpointing"):
            part.grad_checkpointing = config.checkpoint


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05, betas=(0.9, 0.95), eps: float = 1e-8,
                   layer_decay: float | None = None, config: StepConfig | None = None) -> torch.optim.AdamW:
    """AdamW with the official groups; fused by default (torch has CUDA and CPU kernels). With cuda_graphs
    the lr of every group is a device tensor (the schedule writes it in place, the graph reads it)."""
    from videomae.train.optim import param_groups

    config = config or StepConfig()
    groups = param_groups(model, weight_decay, layer_decay)
    device = next(model.parameters()).device
    for g in groups:
        g.pop("names")  # optimizer state dicts must stay plain tensors and numbers
        if config.cuda_graphs:
            g["lr"] = torch.tensor(lr * g["lr_scale"], dtype=torch.float32, device=device)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=config.fused_adamw or None,
                             capturable=config.cuda_graphs)


def build_objective(model: nn.Module, config: StepConfig, loss: Callable[[nn.Module, Any], torch.Tensor]) -> Callable:
    """`loss(model, batch) -> scalar` as the step's `objective(batch)`, compiled (forward + loss in one graph,
    fullgraph: no graph break) when `config.compile`. Wrapped models (DDP) trace with graph breaks at their hooks:
    fullgraph is for the bare module."""
    objective = functools.partial(loss, model)
    if not config.compile:
        return objective
    from videomae.layers.recompute import apply_compile_settings

    # Unless recompute is `none`, the partitioner may recompute the cheap values backward needs (0.78x -> 0.51x HF).
    apply_compile_settings(None if config.recompute == "auto" else config.recompute)
    fullgraph = not isinstance(model, nn.parallel.DistributedDataParallel)
    return torch.compile(objective, fullgraph=fullgraph, mode=config.compile_mode, backend=config.compile_backend)


def ops_context(config: StepConfig) -> contextlib.ExitStack:
    """The backends forced for the step, ops and attention (`auto`: the env vars, else per-call dispatch), and the
    recompute switch (`auto`: `VIDEOMAE_RECOMPUTE`, else `videomae.layers.recompute`'s default)."""
    from videomae.dispatch import use_backend
    from videomae.layers.recompute import use_recompute

    stack = contextlib.ExitStack()
    stack.enter_context(use_backend(None if config.ops_backend == "auto" else config.ops_backend,
                                    attention=None if config.attention == "auto" else config.attention))
    if config.recompute != "auto":
        stack.enter_context(use_recompute(config.recompute))
    return stack


# ---------------------------------------------------------------- the step


class StepOut(NamedTuple):
    """What one step leaves on the device; the trainer reads them, batched, every log_interval steps."""

    loss: torch.Tensor  # fp32 scalar, mean over micro-batches
    grad_norm: torch.Tensor  # fp32 scalar, before clipping
    skipped: torch.Tensor  # Bool scalar: loss or gradients were not finite, the update did not happen
    clips: int


def grad_norm(params: list[torch.Tensor], clip: float | None = None) -> torch.Tensor:
    """Total L2 norm of the gradients (a device tensor, no sync), clipped to `clip` when given (FSDP2's
    DTensor norms gathered)."""
    with_grads = [p for p in params if p.grad is not None]
    if not with_grads:
        return torch.zeros((), device=params[0].device if params else None)
    norm = nn.utils.get_total_norm([p.grad for p in with_grads])
    if clip:  # what clip_grad_norm_ does, with the norm kept: a device-side scale, no check on the host
        nn.utils.clip_grads_with_norm_(with_grads, clip, norm)  # takes the parameters: it scales their .grad
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm.float()


def _no_sync(model: nn.Module, last: bool):
    if not last and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()  # gradients are all-reduced once, on the last micro-batch
    return contextlib.nullcontext()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list, objective: Callable,
               precision: Precision, *, clip_grad: float | None = None, params: list | None = None) -> StepOut:
    """One optimizer step over `micro_batches` (each already on the device) -> StepOut, with no host sync
    (bf16/fp32 with fused AdamW; see the module docstring for the exceptions).

    `objective(batch) -> scalar loss` does the model part (a batch's clips: its first tensor's first dimension);
    the gradients stay in `.grad` until the next step starts (the official engine's order: zero, forward,
    backward, step)."""
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    scaler = precision.scaler
    optimizer.zero_grad(set_to_none=True)
    losses, clips = [], 0
    for i, batch in enumerate(micro_batches):
        with _no_sync(model, i == len(micro_batches) - 1):
            with precision.autocast():
                loss = objective(batch)
            loss = loss.float()
            losses.append(loss.detach())
            clips += (batch[0] if isinstance(batch, tuple | list) else batch).shape[0]
            scaled = loss / len(micro_batches)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    if dist.is_initialized():  # the logged loss: the mean over ranks (a device collective, no host wait)
        loss = loss.clone()
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        loss /= dist.get_world_size()
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = grad_norm(params, clip_grad)
    # Every rank agrees: the loss is the ranks' mean and the norm is of the all-reduced (or gathered) gradients.
    bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
    if scaler is not None:
        # The scaler skips inf/NaN steps itself; with fused AdamW it passes its flag on the device too.
        scaler.step(optimizer)
        scaler.update()
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = bad.float()  # fused AdamW skips the whole update when this is 1
        optimizer.step()
        del optimizer.found_inf
    elif not bool(bad):  # a non-fused optimizer cannot skip on the device: this reads the flag (one sync)
        optimizer.step()
    return StepOut(loss, norm, bad, clips)


class GraphedStep:
    """Whole-step CUDA graph (PyTorch's "whole network capture" recipe): the step's tensors are copied
    into static buffers, three warm-up steps run on a side stream, then one capture; each call copies its
    batch in and replays. The warm-up steps are undone (weights and optimizer state put back in place), so
    the first call is one optimizer step like every other."""

    def __init__(self, step: Callable[[list], StepOut], example: list, params: list[torch.Tensor],
                 optimizer: torch.optim.Optimizer):
        leaves, self.spec = pytree.tree_flatten(example)
        if not all(x.is_cuda for x in leaves if isinstance(x, torch.Tensor)):  # ints (TokenIds.validated_for) stay
            raise ValueError("cuda_graphs needs every tensor of the batch on a CUDA device")
        self.static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        batch = pytree.tree_unflatten(self.static, self.spec)
        weights = [p.detach().clone() for p in params]
        state = {id(p): {k: v.clone() for k, v in st.items() if isinstance(v, torch.Tensor)}
                 for p, st in optimizer.state.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(batch)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # in place: the graph captures these very tensors
            for p, w in zip(params, weights):
                p.copy_(w)
            for p, st in optimizer.state.items():
                saved = state.get(id(p), {})  # lazily created by the warm-up: a fresh state is all zeros
                for k, v in st.items():
                    if isinstance(v, torch.Tensor) and k in saved:
                        v.copy_(saved[k])
                    elif isinstance(v, torch.Tensor):
                        v.zero_()
        del weights, state
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step(batch)

    def __call__(self, micro_batches: list) -> StepOut:
        leaves, spec = pytree.tree_flatten(micro_batches)
        if spec != self.spec:
            raise ValueError("cuda_graphs replays fixed shapes: this batch is structured differently from the first")
        for buf, x in zip(self.static, leaves):
            if isinstance(x, torch.Tensor):
                if x.shape != buf.shape:
                    raise ValueError(f"cuda_graphs replays fixed shapes: got {list(x.shape)}, captured "
                                     f"{list(buf.shape)}")
                buf.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.out


class StepGuard:
    """Counts skipped (non-finite) optimizer steps; raises after `max_in_a_row` consecutive ones (at once, or
    at the next `check()` when told to wait: every rank must stop at the same point)."""

    def __init__(self, max_in_a_row: int = 20):
        self.max_in_a_row, self.in_a_row, self.total = max_in_a_row, 0, 0
        self.diverged: TrainingDiverged | None = None

    def update(self, skipped: bool, epoch: int, global_step: int, precision: str, raise_now: bool = True) -> None:
        if not skipped:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.max_in_a_row and self.in_a_row >= self.max_in_a_row and self.diverged is None:
            hint = " (fp16 overflows: try --precision bf16)" if precision == "fp16" else ""
            self.diverged = TrainingDiverged(
                f"{self.in_a_row} optimizer steps in a row had inf/NaN loss or gradients (last at epoch "
                f"{epoch}, step {global_step}); stopping. Lower --lr, set --clip_grad{hint}")
        if raise_now:
            self.check()

    def check(self) -> None:
        if self.diverged is not None:
            raise self.diverged


# ---------------------------------------------------------------- videomae info


def step_report(config: StepConfig | None = None) -> dict:
    """For `videomae info`: the step's switches (resolved for this machine) and whether each can run here."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    config = (config or StepConfig()).resolve(device, pretraining=True)
    from videomae import attention

    return {
        "config": config.as_dict(),
        "device": str(device),
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()) or not cuda,
        "fused_adamw": "available (torch has CUDA and CPU kernels)",
        "compile": "available" if importlib.util.find_spec("triton") is not None or not cuda
        else "no triton: torch.compile falls back to eager",
        "cuda_graphs": "available" if cuda else "needs CUDA",
        "attention": attention.backend_report(),
    }
