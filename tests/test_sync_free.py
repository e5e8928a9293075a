"""No host-synchronizing op in a training step (GUIDE §4).

A `TorchDispatchMode` records every aten op of one full step (forward, loss, backward, AdamW) and fails on
the data-dependent ones: on a GPU each waits for the device. Checked for every ops backend that runs here
(torch; triton under TRITON_INTERPRET=1), V1 and V2 masks, fp32, bf16 and fp16 (GradScaler), and shown to catch
planted syncs.
The gpu-marked test runs the same step under `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import videomae
from videomae import ops
from videomae.masking import running_cell_mask, token_ids, tube_mask
from videomae.train.pretrain import pretrain_loss
from videomae.train.recipe import Options, Recipe, Schedule
from videomae.train.step import StepConfig
from videomae.train.trainer import Trainer

aten = torch.ops.aten
# Ops whose output shape or host value depends on tensor data: each one is a device -> host wait.
SYNCING = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.nonzero, aten.masked_select, aten.unique_dim,
           aten._unique, aten._unique2, aten.unique_consecutive, aten.equal}
INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class SyncRecorder(TorchDispatchMode):
    """Records every aten op; `offenses` lists the data-dependent ones with where they were called."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.offenses: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append(func.overloadpacket.__name__)
        packet = func.overloadpacket
        bool_index = packet in INDEXING and any(
            isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)
            for t in (args[1] if len(args) > 1 and isinstance(args[1], list | tuple) else []))
        repeat = packet is aten.repeat_interleave and kwargs.get("output_size") is None
        if packet in SYNCING or bool_index or repeat:
            where = "".join(traceback.format_stack(limit=12)[:-1])
            self.offenses.append(f"{func} called from\n{where}")
        impl = _python_impl(func)
        if impl is not None:  # our own ops: record what their Python (host) code runs, not just their name
            with self:
                return impl(*args, **kwargs)
        return func(*args, **kwargs)


def _python_impl(func):
    """The Python function behind a `videomae::` custom op (None for aten ops and C++ kernels)."""
    if func.namespace != "videomae":
        return None
    from torch._library.custom_ops import OPDEFS

    opdef = OPDEFS.get(func._schema.name)
    return None if opdef is None else opdef._init_fn


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", num_frames=4, img_size=32)


def tiny_batch(v2: bool, seed: int = 1, batch: int = 2):
    """Clips [2, 3, 4, 32, 32] (token grid 2x2x2) and their TokenIds, made on the CPU as the collate does."""
    g = torch.Generator().manual_seed(seed)
    videos = torch.randn(batch, 3, 4, 32, 32, generator=g)
    mask = tube_mask(batch, (2, 2, 2), 0.5, generator=g)
    decode = running_cell_mask(batch, (2, 2, 2), 0.5, generator=g) if v2 else None
    return videos, token_ids(mask, decode)


def backends() -> list[str]:
    report = ops.backend_report()
    runnable = {name for per in report.values() for name, r in per.items() if r.get("available")}
    return ["torch"] + [b for b in ("triton", "cuda") if b in runnable]


def make_trainer(config: StepConfig, precision: str, device: str = "cpu", loss=pretrain_loss):
    model = tiny_model().to(device)
    trainer = Trainer(Recipe(model, loss, Schedule.constant(1e-3)),
                      Options(step=config.replace(precision=precision), max_skipped=0))
    return model, trainer


def recorded_step(config: StepConfig, precision: str, v2: bool, loss=pretrain_loss) -> SyncRecorder:
    model, trainer = make_trainer(config, precision, loss=loss)
    batch = tiny_batch(v2)
    trainer.step([batch], flush=False)  # warm-up: lazy inits, optimizer state
    recorder = SyncRecorder()
    with recorder:
        trainer.step([batch], flush=False)
    assert trainer.flush()[-1]["loss"] is not None  # read outside the recorded step
    return recorder


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])  # fp16: GradScaler + fused AdamW, on the device
@pytest.mark.parametrize("backend", backends())
def test_a_full_training_step_has_no_data_dependent_op(backend, precision, v2):
    rec = recorded_step(StepConfig(ops_backend=backend, precision=precision), precision, v2)
    assert not rec.offenses, f"{len(rec.offenses)} host-synchronizing op(s) in the step:\n" + rec.offenses[0]
    seen = set(rec.ops)
    # The whole step was recorded: forward matmuls, their backward, the loss, the optimizer.
    assert {"mm", "addmm"} & seen or "linear" in seen or "bmm" in seen
    assert "native_layer_norm_backward" in seen
    assert "_fused_adamw_" in seen
    if precision == "fp16":
        assert "_amp_foreach_non_finite_check_and_unscale_" in seen and "_amp_update_scale_" in seen
    assert any(op.startswith(f"norm_pix_mse_{backend}") for op in seen), sorted(seen)


def test_the_eager_attention_reference_step_is_sync_free_too():
    rec = recorded_step(StepConfig.eager_reference("fp32"), "fp32", v2=True)
    assert not rec.offenses, rec.offenses[0]


def test_a_skipped_step_decides_on_the_device():
    """A NaN loss: the step records no sync, and fused AdamW leaves weights and moments untouched."""
    config = StepConfig(ops_backend="torch", precision="fp32")
    poison = [False]

    def loss(model, b):
        return pretrain_loss(model, b) * (float("nan") if poison[0] else 1.0)

    model, trainer = make_trainer(config, "fp32", loss=loss)
    batch = tiny_batch(False)
    trainer.step([batch])

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    poison[0] = True
    rec = SyncRecorder()
    with rec:
        trainer.step([batch], flush=False)
    assert not rec.offenses, rec.offenses[0]
    assert trainer.flush()[-1]["skipped"] is True
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} changed in a skipped step"
    for m, s in zip(moments, trainer.optimizer.state.values()):
        assert torch.equal(m, s["exp_avg"])


# ---------------------------------------------------------------- the check catches planted syncs


@pytest.mark.parametrize("plant", ["item", "float", "bool_index", "nonzero", "if_any"])
def test_a_planted_sync_fails_the_check(plant):
    config = StepConfig(ops_backend="torch", precision="fp32")

    def planted(model, batch):
        loss = pretrain_loss(model, batch)
        if plant == "item":
            loss.item()
        elif plant == "float":
            loss = loss * float(loss.detach())
        elif plant == "bool_index":
            loss = loss + batch[0][batch[0] > 0].sum() * 0
        elif plant == "nonzero":
            loss = loss + batch[1].visible.nonzero().sum() * 0
        elif plant == "if_any" and (batch[0] > 100).any():
            loss = loss * 2
        return loss

    rec = recorded_step(config, "fp32", v2=False, loss=planted)
    assert rec.offenses, f"planted {plant} went unnoticed"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_the_step_runs_under_cuda_sync_debug_mode_error(v2):
    config = StepConfig(precision="bf16", compile=False)
    model, trainer = make_trainer(config, "bf16", device="cuda")
    _, ids = tiny_batch(v2)  # masks come from the CPU collate; the clip is made on the GPU
    batch = (torch.randn(2, 3, 4, 32, 32, device="cuda"), ids.to("cuda"))
    trainer.step([batch], flush=False)  # warm-up: lazy inits, optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.step([batch], flush=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.flush()[-1]["loss"] is not None
