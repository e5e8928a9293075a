"""No host-synchronizing op in a training step (GUIDE §4), `prepare` (the device feed) included.

A `TorchDispatchMode` records every aten op of one full step (prepare, forward, loss, backward, AdamW) and fails on
the data-dependent ones: on a GPU each waits for the device. Checked for every ops backend that runs here
(torch; triton under TRITON_INTERPRET=1), V1 and V2 masks, fp32, bf16 and fp16 (GradScaler), and shown to catch
planted syncs.

`prepare` (videomae.data.feed.DeviceFeed) is also run onto the meta device, which stands in for a GPU that cannot
be read back: every upload is seen (a `_to_copy` from the CPU), any read of a value raises, and constructors are
watched for Python data sent to the device (`torch.tensor(..., device=...)` copies without dispatching). Only the
batch's own tensors may go up, once each.
The gpu-marked test runs the same step, prepare included, under `torch.cuda.set_sync_debug_mode("error")`.
"""

from __future__ import annotations

import contextlib
import traceback
from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import videomae
from videomae import ops
from videomae.data.feed import DeviceFeed
from videomae.data.gpu_aug import pad_frames
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
CPU = torch.device("cpu")


class SyncRecorder(TorchDispatchMode):
    """Records every aten op; `offenses` lists the data-dependent ones with where they were called; `uploads` the
    source of every copy from the CPU to another device."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.offenses: list[str] = []
        self.uploads: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append(func.overloadpacket.__name__)
        packet = func.overloadpacket
        if packet is aten._to_copy and args[0].device.type == "cpu" and kwargs.get("device") not in (None, CPU):
            self.uploads.append(args[0])
        if packet is aten.copy_ and args[0].device.type != "cpu" and args[1].device.type == "cpu":
            self.uploads.append(args[1])
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


def loader_batch(v2: bool, seed: int = 1):
    """What the GPU-augmentation loader hands `prepare`: uint8 crops of two sizes zero-padded to one block
    [2, 4, 40, 44, 3] (pinned where it can be), their boxes and the TokenIds, as the collate makes them."""
    g = torch.Generator().manual_seed(seed)
    crops = [torch.randint(0, 256, (4, h, w, 3), dtype=torch.uint8, generator=g) for h, w in ((40, 36), (30, 44))]
    frames, boxes = pad_frames(crops), torch.tensor([[0, 0, 40, 36], [0, 0, 30, 44]])
    _, ids = tiny_batch(v2, seed)
    if torch.cuda.is_available():
        frames, boxes, ids = frames.pin_memory(), boxes.pin_memory(), ids.pin_memory()
    return frames, boxes, ids


def make_trainer(config: StepConfig, precision: str, device: str = "cpu", loss=pretrain_loss, prepare=None):
    model = tiny_model().to(device)
    trainer = Trainer(Recipe(model, loss, Schedule.constant(1e-3), prepare=prepare),
                      Options(step=config.replace(precision=precision), max_skipped=0))
    return model, trainer


def recorded_step(config: StepConfig, precision: str, v2: bool, loss=pretrain_loss, feed: bool = False) -> SyncRecorder:
    """One recorded step after a warm-up step; `feed`: the batch comes as the loader ships it, through the CLI's
    `prepare` (DeviceFeed), inside the recorded step."""
    model, trainer = make_trainer(config, precision, loss=loss, prepare=DeviceFeed("cpu", 32) if feed else None)
    batch = loader_batch(v2) if feed else tiny_batch(v2)
    trainer.step([batch], flush=False)  # warm-up: lazy inits, optimizer state
    recorder = SyncRecorder()
    with recorder, python_data_to_device_is_an_offense(recorder):
        trainer.step([batch], flush=False)
    assert trainer.flush()[-1]["loss"] is not None  # read outside the recorded step
    return recorder


@contextlib.contextmanager
def python_data_to_device_is_an_offense(recorder: SyncRecorder):
    """`torch.tensor(data, device=...)` (and as_tensor, asarray) copy to the device without dispatching an op:
    watch the constructors instead. On a GPU each such call is a copy from pageable memory the host waits for."""
    real = {name: getattr(torch, name) for name in ("tensor", "as_tensor", "asarray")}

    def watched(name):
        def construct(data, *args, device=None, **kwargs):
            if device is not None and torch.device(device).type != "cpu":
                where = "".join(traceback.format_stack(limit=8)[:-1])
                recorder.offenses.append(f"torch.{name}(Python data, device={device}) called from\n{where}")
            return real[name](data, *args, device=device, **kwargs)

        return construct

    with contextlib.ExitStack() as stack:
        for name in real:
            stack.enter_context(mock.patch(f"torch.{name}", watched(name)))
        yield


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


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("backend", backends())
def test_a_step_with_the_clis_prepare_has_no_data_dependent_op(backend, v2):
    """uint8 crops + boxes + TokenIds through DeviceFeed (batched crop/resize), then the step, bf16."""
    rec = recorded_step(StepConfig(ops_backend=backend, precision="bf16"), "bf16", v2, feed=True)
    assert not rec.offenses, f"{len(rec.offenses)} host-synchronizing op(s) in the step:\n" + rec.offenses[0]
    seen = set(rec.ops)
    assert "bmm" in seen and "_fused_adamw_" in seen  # the batched resize and the optimizer, in one recording
    assert any(op.startswith(f"cube_embed_{backend}") for op in seen), sorted(seen)


def prepare_problems(prepare, batch) -> tuple[list[str], tuple]:
    """Run `prepare(batch)` onto the meta device: -> (what would wait on a GPU, its output). Problems: a
    data-dependent op, Python data sent to the device, an upload of anything but the batch's own tensors (or one of
    them twice), a read of a device value (meta raises)."""
    rec = SyncRecorder()
    out = None
    try:
        with rec, python_data_to_device_is_an_offense(rec):
            out = prepare(batch)
    except (RuntimeError, NotImplementedError) as e:  # reading a meta tensor's value
        rec.offenses.append(f"read a device value: {type(e).__name__}: {e}")
    leaves = [t for x in batch for t in (x if isinstance(x, tuple) else (x,)) if isinstance(t, torch.Tensor)]
    extra = [u for u in rec.uploads if not any(u is t for t in leaves)]
    if extra:
        rec.offenses.append(f"{len(extra)} upload(s) of tensors made in prepare: {[tuple(u.shape) for u in extra]}")
    if sorted(map(id, rec.uploads)) != sorted(map(id, leaves)) and not extra:
        rec.offenses.append(f"the batch's {len(leaves)} tensors went up {len(rec.uploads)} times")
    return rec.offenses, out


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_prepare_uploads_the_batch_once_and_reads_nothing_back(v2):
    batch = loader_batch(v2)
    problems, (clips, ids) = prepare_problems(DeviceFeed("meta", 32), batch)
    assert not problems, problems[0]
    assert clips.device.type == "meta" and clips.dtype == torch.uint8 and clips.shape == (2, 3, 4, 32, 32)
    assert all(t.device.type == "meta" for t in ids if isinstance(t, torch.Tensor))
    assert ids.validated_for == batch[2].validated_for == 2 * 2 * 2  # the CPU's check travels with the ids
    clips_only = (torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8), batch[2])  # the CPU workers' path
    problems, _ = prepare_problems(DeviceFeed("meta", 32), clips_only)
    assert not problems, problems[0]


@pytest.mark.parametrize("plant", ["constant", "made_then_moved", "read_boxes", "moved_twice"])
def test_a_planted_sync_in_prepare_fails_the_check(plant):
    class Planted(DeviceFeed):
        def __call__(self, batch):
            clips, ids = super().__call__(batch)
            if plant == "constant":  # a per-call constant built from Python numbers on the device
                clips = clips + torch.tensor([1], dtype=torch.uint8, device=self.device)
            elif plant == "made_then_moved":
                clips = clips + torch.ones(1, dtype=torch.uint8).to(self.device)
            elif plant == "read_boxes":  # the old per-sample loop's boxes.tolist(), after the copy
                [int(v) for v in batch[1].to(self.device)[0]]
            elif plant == "moved_twice":
                batch[0].to(self.device)
            return clips, ids

    problems, _ = prepare_problems(Planted("meta", 32), loader_batch(False))
    assert problems, f"planted {plant} went unnoticed"


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
@pytest.mark.parametrize("feed", [False, True], ids=["clips_on_device", "prepare"])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_the_step_runs_under_cuda_sync_debug_mode_error(v2, feed):
    config = StepConfig(precision="bf16", compile=False)
    model, trainer = make_trainer(config, "bf16", device="cuda", prepare=DeviceFeed("cuda", 32) if feed else None)
    if feed:  # pinned uint8 crops, boxes and ids, copied and resized by the CLI's prepare inside the step
        batch = loader_batch(v2)
    else:
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
