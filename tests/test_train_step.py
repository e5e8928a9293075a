"""The one training step (`videomae.train.step.train_step`, run by `Trainer`) on the CPU: every switch computes
the step of the eager reference (within its precision), torch.compile traces forward + loss with no graph break and
gives the eager step's loss and gradients, the loop reads its results lazily, and `videomae pretrain` and
`bench/train_step.py` build the same trainer from the same loss and run this very step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import videomae
from videomae import dispatch
from videomae.masking import running_cell_mask, token_ids, tube_mask
from videomae.train import step as engine
from videomae.train.logs import NullLog
from videomae.train.pretrain import pretrain_loss
from videomae.train.recipe import AdamW, Batches, Options, Recipe, Schedule
from videomae.train.run import Run
from videomae.train.step import StepConfig, TrainingDiverged, make_optimizer
from videomae.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", num_frames=4, img_size=64)


def inputs(v2: bool = False, seed: int = 1):
    """Clips [2, 3, 4, 64, 64] (token grid 2x4x4) and their TokenIds, made on the CPU as the collate does."""
    g = torch.Generator().manual_seed(seed)
    videos = torch.randn(2, 3, 4, 64, 64, generator=g)
    mask = tube_mask(2, (2, 4, 4), 0.75, generator=g)
    return videos, token_ids(mask, running_cell_mask(2, (2, 4, 4), 0.5, generator=g) if v2 else None)


def pretrain_trainer(model: nn.Module, config: StepConfig, schedule: Schedule | None = None, **options) -> Trainer:
    """The trainer of `videomae pretrain`'s loss on `model`, AdamW with the official groups, constant lr 1e-3."""
    recipe = Recipe(model, pretrain_loss, schedule or Schedule.constant(1e-3), AdamW())
    return Trainer(recipe, Options(step=config, **options))


def one_step(config: StepConfig, v2: bool = False, seed: int = 0):
    """-> (loss, {name: grad}) of one Trainer step of the tiny model under `config`."""
    model = tiny(seed)
    row = pretrain_trainer(model, config).step([inputs(v2)])
    # The step leaves its gradients in .grad (the next step zeroes them first).
    return row["loss"], {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads_close(grads, ref, tol):
    """Per tensor, relative to its norm: the gradients are the well-conditioned check (Adam's first update is
    ~lr*sign(g), so parameters after one step amplify rounding of near-zero gradients)."""
    assert grads.keys() == ref.keys()
    for n, g in grads.items():
        err = ((g.double() - ref[n].double()).norm() / ref[n].double().norm().clamp_min(1e-12)).item()
        assert err < tol, f"{n}: relative gradient error {err:.2e}"


@pytest.fixture(autouse=True)
def _restore_switches():
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev[0], prev[1]
    torch.set_float32_matmul_precision(prev[2])


# ---------------------------------------------------------------- each switch, the same step


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_fast_fp32_step_equals_eager_reference(v2):
    ref_loss, ref = one_step(StepConfig.eager_reference("fp32"), v2)
    loss, grads = one_step(StepConfig(precision="fp32"), v2)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert_grads_close(grads, ref, 1e-4)  # fused ops and SDPA vs eager: fp32 summation order only


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_step_close_to_fp32(precision):
    ref_loss, ref = one_step(StepConfig(precision="fp32"))
    loss, grads = one_step(StepConfig(precision=precision))
    assert loss == pytest.approx(ref_loss, rel=3e-2)  # bf16/fp16 matmul inputs: ~1e-2 relative
    assert_grads_close(grads, ref, 0.1)  # gradients through ~5 low-precision matmuls in a row


def test_checkpointing_changes_memory_not_math():
    ref_loss, ref = one_step(StepConfig(precision="fp32"))
    loss, grads = one_step(StepConfig(precision="fp32", checkpoint=True))
    assert loss == ref_loss
    assert_grads_close(grads, ref, 1e-6)  # recomputation runs the same kernels on the same inputs


# ---------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_forward_and_loss_trace_with_no_graph_break(v2):
    torch._dynamo.reset()
    model = tiny()
    videos, ids = inputs(v2)

    def forward_loss(videos, ids):
        return model.forward_loss(videos, model(videos, ids), ids)

    explanation = torch._dynamo.explain(forward_loss)(videos, ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_step_equals_eager_step(backend):
    torch._dynamo.reset()
    ref_loss, ref = one_step(StepConfig(precision="fp32", compile=False), v2=True)
    loss, grads = one_step(StepConfig(precision="fp32", compile=True, compile_backend=backend), v2=True)
    # aot_eager runs the same aten ops (fp32 order unchanged); inductor fuses and reorders fp32 sums.
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert_grads_close(grads, ref, 1e-4)


# ---------------------------------------------------------------- switches and their report


def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="precision"):
        StepConfig(precision="fp8")
    with pytest.raises(ValueError, match="attention"):
        StepConfig(attention="nope")
    with pytest.raises(ValueError, match="ops_backend"):
        StepConfig(ops_backend="cudnn")
    with pytest.raises(ValueError, match="GradScaler"):
        StepConfig(precision="fp16", cuda_graphs=True)
    with pytest.raises(ValueError, match="fused_adamw"):
        StepConfig(cuda_graphs=True, fused_adamw=False)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        StepConfig(cuda_graphs=True).resolve(torch.device("cpu"))
    with pytest.raises(ValueError, match="weight_decay_end"):
        pretrain_trainer(tiny(), StepConfig(cuda_graphs=True), Schedule(np.full(2, 1e-3), weight_decay=np.ones(2)))


def test_cpu_defaults_and_cli_flags():
    cfg = StepConfig().resolve(torch.device("cpu"))
    assert cfg.precision == "fp32" and cfg.compile is False and cfg.fused_adamw and cfg.ops_backend == "auto"

    class Args:
        precision, compile, cuda_graphs, attention, use_checkpoint = "bf16", True, False, "eager", True

    cfg = StepConfig.from_args(Args())
    assert (cfg.precision, cfg.compile, cfg.attention, cfg.checkpoint) == ("bf16", True, "eager", True)


def test_switches_reach_model_and_optimizer():
    model = tiny()
    cfg = StepConfig(attention="eager", checkpoint=True, tf32=False)
    engine.apply_config(model, cfg)
    assert model.encoder.grad_checkpointing and model.decoder.grad_checkpointing
    with engine.ops_context(cfg):
        assert dispatch.forced("attention") == "eager"
    assert not torch.backends.cuda.matmul.allow_tf32
    opt = make_optimizer(model, lr=1e-3, config=cfg)
    assert opt.defaults["fused"] is True
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}
    assert make_optimizer(model, 1e-3, config=cfg.replace(fused_adamw=False)).defaults["fused"] is None


# The CLI's defaults resolved for a CPU, written out: what `videomae info` and args.json must show on this machine.
CPU_DEFAULTS = {"precision": "fp32", "ops_backend": "auto", "attention": "auto", "fused_adamw": True, "compile": False,
                "compile_mode": None, "compile_backend": "inductor", "cuda_graphs": False, "checkpoint": False,
                "recompute": "auto", "tf32": True}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the expected values are a CPU's")
def test_report_shows_every_switch_resolved_for_this_machine():
    r = engine.step_report()
    assert r["config"] == CPU_DEFAULTS  # precision auto -> fp32 and compile None -> off, on a CPU
    assert r["device"] == "cpu" and r["cuda_graphs"] == "needs CUDA"
    assert "backends" in r["attention"]


# ---------------------------------------------------------------- the loop reads the device lazily


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x)


class _Rows(NullLog):
    def __init__(self):
        self.rows = []

    def step(self, row):
        self.rows.append(row)


def _toy(log_interval: int, max_skipped: int = 0, precision: str = "fp32", poison=(), data=None):
    """A linear model's trainer (lr 1e-2, no weight decay); steps whose number is in `poison` get a NaN loss; the
    loss records how many rows were logged when each step began."""
    torch.manual_seed(0)
    model, log, seen = _Toy(), _Rows(), []

    def loss(m, batch):
        seen.append(len(log.rows))
        out = m(batch).square().mean()
        return out * float("nan") if len(seen) in poison else out

    steps = len(data) if data is not None else 100  # one epoch of the data
    recipe = Recipe(model, loss, Schedule(np.full(steps, 1e-2)), AdamW(weight_decay=0.0), data=data)
    options = Options(step=StepConfig(precision=precision), log_interval=log_interval, max_skipped=max_skipped)
    return model, Trainer(recipe, options, Run.local("cpu", log)), log, seen


def test_rows_are_read_every_log_interval_steps_and_at_the_epoch_end():
    x = torch.randn(8, 4)
    _, trainer, log, seen = _toy(log_interval=3, data=Batches([[x] * 5]))
    trainer.fit()
    assert seen == [0, 0, 0, 3, 3]  # read after step 3, then at the end of the 5-step epoch
    assert [r["step"] for r in log.rows] == [1, 2, 3, 4, 5]
    # The same five steps, each read at once, give the same numbers.
    _, eager, _, _ = _toy(log_interval=1)
    rows = [eager.step([x]) for _ in range(5)]
    assert [r["loss"] for r in rows] == [r["loss"] for r in log.rows]


def test_the_end_of_epoch_progress_line_has_every_field(capsys):
    """Read every 100 steps, but the epoch's 5th and last step is read before its progress line: no blank field
    (the line used to read `epoch 1/1  step 5/5    (1.48 steps/s)`)."""
    import re

    from videomae.train.logs import LineBar

    class _Lines(_Rows):
        def bar(self, total, initial, desc):
            return LineBar(total, initial, desc)

    _, trainer, _, _ = _toy(log_interval=100, data=Batches([[torch.randn(8, 4)] * 5]))
    trainer.run.log = _Lines()
    trainer.fit()
    (line,) = capsys.readouterr().err.splitlines()
    expected = r"epoch 1/1  step 5/5  loss \d\.\d{4}  lr 1\.00e-02  [\d.]+ clips/s  \([\d.]+ steps/s\)"
    assert re.fullmatch(expected, line), line


def test_divergence_is_noticed_at_the_next_read_and_skipped_steps_change_nothing():
    model, trainer, log, _ = _toy(log_interval=10, max_skipped=3, poison=(2, 3, 4))
    x = torch.randn(8, 4)
    trainer.step([x])
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        trainer.step([x], flush=False)  # no read, no raise yet
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q), "fused AdamW must skip a non-finite step on the device"
    with pytest.raises(TrainingDiverged, match="3 optimizer steps in a row"):
        trainer.flush()
    assert [r["skipped"] for r in log.rows] == [False, True, True, True]


def test_state_dict_counts_the_steps_not_yet_read():
    _, trainer, _, _ = _toy(log_interval=100, poison=(1,))
    x = torch.randn(8, 4)
    trainer.step([x], flush=False)
    trainer.step([x], flush=False)
    state = trainer.state_dict()
    assert state["skipped_steps"] == 1 and state["global_step"] == 2  # one poisoned step of two
    assert state["epoch_sums"]["count"] == 1  # the good step's loss is in the epoch's sum, the skipped one is not


def test_fp16_grad_scaler_with_fused_adamw():
    _, trainer, _, _ = _toy(log_interval=1, precision="fp16")
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    row = trainer.step([torch.randn(8, 4)])
    assert not row["skipped"] and row["loss_scale"] == 2.0**8


# ---------------------------------------------------------------- one trainer


def test_pretrain_command_and_benchmark_run_the_same_trainer_and_step(tmp_path, monkeypatch):
    """Spies on `Trainer.__init__` and on the step function the trainer calls: a run of `videomae pretrain` and a
    benchmark rehearsal both build a `Trainer` from `videomae pretrain`'s loss and run `train_step` through it."""
    pytest.importorskip("av", reason="the synthetic videos are written as mp4 (PyAV)")
    from videomae import cli
    from videomae.data.synth import write_synthetic_dataset
    from videomae.train import trainer as trainer_module

    caller, steps, losses = [], {"cli": 0, "bench": 0}, {"cli": set(), "bench": set()}
    step_fn, init = trainer_module.train_step, Trainer.__init__

    def spy_step(*args, **kwargs):
        steps[caller[-1]] += 1
        return step_fn(*args, **kwargs)

    def spy_init(self, recipe, *args, **kwargs):
        losses[caller[-1]].add(recipe.loss)
        init(self, recipe, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", spy_step)
    monkeypatch.setattr(Trainer, "__init__", spy_init)
    write_synthetic_dataset(tmp_path / "synth", num_train=4, num_val=2, num_frames=8, size=32, seed=0)
    caller.append("cli")
    code = cli.main(["pretrain", "--data_path", str(tmp_path / "synth" / "train.txt"), "--output_dir",
                     str(tmp_path / "run"), "--model", "pretrain_videomae_tiny_patch16_224", "--input_size", "32",
                     "--num_frames", "4", "--sampling_rate", "2", "--mask_ratio", "0.5", "--batch_size", "2",
                     "--num_workers", "0", "--epochs", "1", "--max_steps", "1", "--no_tensorboard", "--no_preview"])
    assert code == 0 and steps["cli"] == 1 and losses["cli"] == {pretrain_loss}
    switches = json.loads((tmp_path / "run" / "args.json").read_text())["step"]  # each switch, as it ran
    if not torch.cuda.is_available():
        assert switches == CPU_DEFAULTS
    sys.path.insert(0, str(ROOT))
    try:
        from bench import train_step as bench
    finally:
        sys.path.remove(str(ROOT))
    caller.append("bench")
    rows = bench.main(["--rehearse", "--peers", "fast", "--out", str(tmp_path / "bench")])
    assert rows[0]["status"] == "ok", rows[0]["status"]
    assert steps["bench"] == 3  # rehearsal: 1 warm-up + 2 timed steps
    assert losses["bench"] == {pretrain_loss}


# ---------------------------------------------------------------- on the GPU


def _cuda_steps(config: StepConfig, steps: int = 3):
    """Losses of `steps` Trainer steps of the tiny model on CUDA (inputs made there) and the final weights."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = tiny().to(device)
    trainer = pretrain_trainer(model, config, Schedule(np.full(10, 1e-3)))
    g = torch.Generator(device).manual_seed(1)
    _, ids = inputs(True)  # the masks come from the CPU collate, as in training
    batches = [(torch.randn(2, 3, 4, 64, 64, device=device, generator=g), ids.to(device)) for _ in range(steps)]
    for b in batches:
        trainer.step([b], flush=False)
    return [r["loss"] for r in trainer.flush()], {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("switch", ["cuda_graphs", "compile"])
def test_cuda_graph_and_compiled_steps_equal_the_eager_step(switch):
    torch._dynamo.reset()
    base = StepConfig(precision="fp32", tf32=False, compile=False)
    ref_losses, ref = _cuda_steps(base)
    losses, weights = _cuda_steps(base.replace(**{switch: True}))
    # Inductor reorders fp32 sums (~1e-6 relative), which Adam's ~lr*sign(g) first steps can amplify in the
    # weights of near-zero gradients: compare its losses. A replayed graph runs the eager kernels in the eager
    # order, and the warm-up steps of its capture are undone: its weights match too.
    assert losses == pytest.approx(ref_losses, rel=1e-4)
    if switch == "cuda_graphs":
        for n, w in weights.items():
            torch.testing.assert_close(w, ref[n], rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
