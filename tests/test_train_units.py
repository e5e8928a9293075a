"""Unit tests of the training machinery: schedule, parameter groups, layer decay, the inf/NaN guard,
data order and checkpoint files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import videomae
from videomae.train import state as ckpt
from videomae.train.data import EpochSampler
from videomae.train.distributed import DistInfo
from videomae.train.engine import Position, Precision, StepGuard, Trainer, TrainingDiverged
from videomae.train.optim import build_optimizer, param_groups
from videomae.train.schedule import cosine_schedule, scaled_lr

# ---------------------------------------------------------------- schedule


def test_scaled_lr_is_linear_in_total_batch():
    assert scaled_lr(1.5e-4, 256) == pytest.approx(1.5e-4)
    assert scaled_lr(1.5e-4, 1024) == pytest.approx(6e-4)


@pytest.mark.parametrize("warmup_epochs", [0, 2])
def test_cosine_schedule_matches_closed_form(warmup_epochs):
    base, final, epochs, per_epoch = 1e-3, 1e-5, 5, 7
    values = cosine_schedule(base, final, epochs, per_epoch, warmup_epochs)
    w = warmup_epochs * per_epoch
    total = epochs * per_epoch
    assert len(values) == total
    for i, v in enumerate(values):
        if i < w:  # np.linspace(0, base, w): both ends included
            expected = base * i / (w - 1)
        else:
            expected = final + 0.5 * (base - final) * (1 + math.cos(math.pi * (i - w) / (total - w)))
        assert v == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if w:
        assert values[0] == 0.0 and values[w - 1] == pytest.approx(base)
    assert values[w] == pytest.approx(base)
    assert values[-1] > final  # the cosine approaches min_lr from above and never reaches it


def test_warmup_steps_override_epochs():
    values = cosine_schedule(1.0, 0.0, 2, 10, warmup_epochs=1, warmup_steps=4)
    np.testing.assert_allclose(values[:4], [0, 1 / 3, 2 / 3, 1])


# ---------------------------------------------------------------- parameter groups


def _tiny_pretrain():
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", img_size=32, num_frames=4)


def _tiny_vit(**kw):
    return videomae.create_model("vit_tiny_patch16_224", img_size=32, num_frames=4, num_classes=5, **kw)


def test_weight_decay_exclusions():
    model = _tiny_pretrain()
    groups = param_groups(model, weight_decay=0.05)
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    decay = {n for g in groups if g["weight_decay"] == 0.05 for n in g["names"]}
    assert no_decay.isdisjoint(decay)
    assert decay | no_decay == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        expect_no_decay = p.ndim == 1 or name.endswith(".bias") or name == "mask_token"
        assert (name in no_decay) == expect_no_decay, name
    assert "encoder.blocks.0.attn.q_bias" in no_decay and "encoder.blocks.0.norm1.weight" in no_decay
    assert "encoder.blocks.0.attn.qkv.weight" in decay and "encoder.patch_embed.proj.weight" in decay


def test_learnable_pos_embed_gets_no_decay():
    model = _tiny_vit(use_learnable_pos_emb=True)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "pos_embed" in no_decay


# Official fine-tuning layer decay for the depth-2 tiny ViT at ld 0.75, by hand: scale ld ** (L + 1 - id), L = 2,
# ids: embedding 0, block i i + 1, fc_norm / head 3; no weight decay on 1-D params and pos_embed.
LD_SCALE = {0: 0.421875, 1: 0.5625, 2: 0.75, 3: 1.0}
BLOCK_DECAYS = {"norm1.weight": 0, "norm1.bias": 0, "attn.q_bias": 0, "attn.v_bias": 0, "attn.qkv.weight": 0.05,
                "attn.proj.weight": 0.05, "attn.proj.bias": 0, "norm2.weight": 0, "norm2.bias": 0,
                "mlp.fc1.weight": 0.05, "mlp.fc1.bias": 0, "mlp.fc2.weight": 0.05, "mlp.fc2.bias": 0}
LD_TABLE = {
    "pos_embed": (LD_SCALE[0], 0), "patch_embed.proj.weight": (LD_SCALE[0], 0.05),
    "patch_embed.proj.bias": (LD_SCALE[0], 0),
    **{f"blocks.{i}.{k}": (LD_SCALE[i + 1], wd) for i in range(2) for k, wd in BLOCK_DECAYS.items()},
    "fc_norm.weight": (1.0, 0), "fc_norm.bias": (1.0, 0), "head.weight": (1.0, 0.05), "head.bias": (1.0, 0),
}


def _table(groups, model) -> dict:
    """-> {parameter name: (lr_scale, weight_decay)} of optimizer groups."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {name_of[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_layer_decay_groups_equal_the_hand_computed_official_table():
    model = _tiny_vit(use_learnable_pos_emb=True)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)
    assert _table(groups, model) == LD_TABLE
    # One group per (layer, decay), in order of first appearance (the official grouping), names beside params.
    order = [n for n, _ in model.named_parameters()]
    firsts = [order.index(g["names"][0]) for g in groups]
    assert firsts == sorted(firsts) and len(groups) == 8  # 4 layers x (decay, no decay)
    assert all(len(g["names"]) == len(g["params"]) for g in groups)


def test_timm_create_optimizer_v2_gives_our_model_the_official_layer_decay():
    """A timm user's one line (`create_optimizer_v2(model, layer_decay=...)`) builds the official groups from the
    classifier's group_matcher; without one, timm would put every parameter in one layer (lr scale 1.0)."""
    from timm.optim import create_optimizer_v2

    model = _tiny_vit(use_learnable_pos_emb=True)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert _table(opt.param_groups, model) == LD_TABLE


def test_without_layer_decay_the_official_two_groups_in_order_of_first_appearance():
    model = _tiny_pretrain()
    groups = param_groups(model, weight_decay=0.05)
    assert [(g["weight_decay"], g["lr_scale"], g["names"][0]) for g in groups] == [
        (0.0, 1.0, "mask_token"), (0.05, 1.0, "encoder.patch_embed.proj.weight")]
    groups = param_groups(_tiny_vit(), weight_decay=0.05, layer_decay=1.0)
    assert [(g["weight_decay"], g["names"][0]) for g in groups] == [(0.05, "patch_embed.proj.weight"),
                                                                    (0.0, "patch_embed.proj.bias")]
    with pytest.raises(ValueError, match="layer decay 0.75 needs a model with layer ids"):
        param_groups(model, weight_decay=0.05, layer_decay=0.75)


def test_optimizer_applies_group_lr_scale_through_the_schedule():
    model = _tiny_vit()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.5)
    trainer = Trainer(model, opt, np.array([2e-3]), None, Precision("fp32", torch.device("cpu")))
    trainer._set_schedule(0)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(2e-3 * g["lr_scale"])
    assert opt.defaults["betas"] == (0.9, 0.999)


# ---------------------------------------------------------------- inf/NaN guard


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return self.lin(x)


def _toy_trainer(precision: str, max_skipped: int):
    torch.manual_seed(0)
    model = _Toy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = Trainer(model, opt, np.full(100, 1e-2), None, Precision(precision, torch.device("cpu")),
                      max_skipped=max_skipped)
    if trainer.precision.scaler is not None:  # the default 2**16 overflows this toy's fp16 gradients at once
        trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    return model, trainer


def _loss_fn(model, poison: bool):
    def fn(batch):
        out = model(batch).square().mean()
        return (out * float("nan") if poison else out), batch.shape[0]
    return fn


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(precision):
    model, trainer = _toy_trainer(precision, max_skipped=3)
    x = torch.randn(8, 4)
    pos = Position()
    row = trainer.step([x], _loss_fn(model, False), pos)
    assert not row["skipped"]
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        row = trainer.step([x], _loss_fn(model, True), pos)
        assert row["skipped"] and row["loss"] is None
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q), "a skipped step must leave the weights untouched"
    assert trainer.guard.total == 2 and trainer.guard.in_a_row == 2
    with pytest.raises(TrainingDiverged, match="3 optimizer steps in a row"):
        trainer.step([x], _loss_fn(model, True), pos)


def test_a_good_step_resets_the_consecutive_count():
    model, trainer = _toy_trainer("fp32", max_skipped=2)
    x, pos = torch.randn(8, 4), Position()
    for poison in (True, False, True, False):
        trainer.step([x], _loss_fn(model, poison), pos)
    assert trainer.guard.total == 2 and trainer.guard.in_a_row == 0


def test_fp16_scaler_state_is_used_on_cpu():
    model, trainer = _toy_trainer("fp16", max_skipped=0)
    assert trainer.precision.scaler is not None
    row = trainer.step([torch.randn(8, 4)], _loss_fn(model, False), Position())
    assert row["loss_scale"] > 0


def test_step_guard_zero_never_stops():
    guard = StepGuard(0)
    for _ in range(50):
        guard.update(True, Position(), "fp32")
    assert guard.total == 50


# ---------------------------------------------------------------- accumulation


def test_accumulation_equals_one_big_batch():
    x = torch.randn(8, 4)
    results = []
    for micro in ([x], [x[:4], x[4:]]):
        model, trainer = _toy_trainer("fp32", max_skipped=5)
        trainer.accum_iter = len(micro)
        trainer.step(micro, _loss_fn(model, False), Position())
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- data order


def test_epoch_order_is_a_pure_function_of_seed_and_epoch_and_skip_resumes_it():
    s = EpochSampler(23, DistInfo(), seed=3)
    s.set_position(4)
    full = list(s)
    again = EpochSampler(23, DistInfo(), seed=3)
    again.set_position(4, skip=10)
    assert list(again) == full[10:] and len(again) == 13
    s.set_position(5)
    assert list(s) != full and sorted(s) == list(range(23))


def test_ranks_partition_the_padded_epoch():
    shards = []
    for rank in range(3):
        s = EpochSampler(10, DistInfo(rank, 3), seed=0)
        s.set_position(1)
        shards.append(list(s))
    assert all(len(x) == 4 for x in shards)
    assert set(sum(shards, [])) == set(range(10))


# ---------------------------------------------------------------- checkpoint files


def test_checkpoint_order_latest_and_prune(tmp_path):
    for name in ("checkpoint-0.pth", "checkpoint-1-step3.pth", "checkpoint-1.pth", "checkpoint-10.pth",
                 "checkpoint-2-step1.pth", ".checkpoint-11.pth.tmp-1", "model.pth"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["checkpoint-0.pth", "checkpoint-1-step3.pth", "checkpoint-1.pth", "checkpoint-2-step1.pth",
                     "checkpoint-10.pth"]
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-10.pth"
    ckpt.prune(tmp_path, 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2-step1.pth", "checkpoint-10.pth"]
    assert (tmp_path / "model.pth").exists()


def test_atomic_save_leaves_no_temporary_file_and_loads_weights_only(tmp_path):
    path = tmp_path / "c.pth"
    # A complete TrainState (`read` refuses files that lack what a resume needs).
    ckpt.atomic_save({"format": ckpt.FORMAT, "rng": ckpt.rng_state(), "x": torch.arange(3), "model": {},
                      "optimizer": {}, "next_epoch": 0, "next_step": 0, "global_step": 0, "args": {}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]
    state = ckpt.read(path)
    assert torch.equal(state["x"], torch.arange(3))


def test_rng_state_roundtrip():
    import random

    state = ckpt.rng_state()
    # the legacy global numpy generator is what checkpoints must restore for third-party code
    first = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    ckpt.set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_reading_a_foreign_file_as_resumable_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match="not a resumable videomae checkpoint"):
        ckpt.read(path)


# ---------------------------------------------------------------- precision


def test_resolve_precision_defaults():
    from videomae.train.engine import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"


def test_bf16_autocast_step_on_a_pretraining_model_keeps_fp32_weights_and_loss():
    torch.manual_seed(0)
    model = _tiny_pretrain()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    trainer = Trainer(model, opt, np.full(10, 1e-3), None, Precision("bf16", torch.device("cpu")))
    videos = torch.randn(2, 3, 4, 32, 32)
    ids = videomae.masking.token_ids(videomae.masking.tube_mask(2, (2, 2, 2), 0.5))

    def loss_fn(batch):
        v, m = batch
        pred = model(v, m)
        assert pred.dtype == torch.bfloat16  # the blocks ran under autocast
        return model.forward_loss(v, pred, m), v.shape[0]

    before = model.encoder.blocks[0].attn.qkv.weight.detach().clone()
    row = trainer.step([(videos, ids)], loss_fn, Position())
    assert not row["skipped"] and math.isfinite(row["loss"])
    weight = model.encoder.blocks[0].attn.qkv.weight
    assert weight.dtype == torch.float32 and not torch.equal(weight, before)


# ---------------------------------------------------------------- collate: masks -> TokenIds, checked once


def _items(masks):
    return [(torch.full((3, 2, 4, 4), float(i)), m) for i, m in enumerate(masks)]


def test_collate_turns_masks_into_token_ids():
    from videomae.data.datasets import ClipCollate

    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    videos, ids = ClipCollate(token_ids=True)(_items(list(mask)))
    assert videos.shape == (2, 3, 2, 4, 4) and videos[1].eq(1).all()
    assert ids.visible.tolist() == [[1, 3], [0, 1]] and ids.decoded.tolist() == [[0, 2], [2, 3]]
    assert ids.scored is None and ids.visible.dtype == torch.int64


def test_collate_v2_masks_and_repeated_samples():
    from videomae.data.datasets import ClipCollate

    enc = torch.tensor([[True, False, True, False], [True, True, False, False]])  # 2 clips of one video
    dec = torch.tensor([[False, True, True, False], [True, False, False, True]])  # True = not decoded
    item = (torch.zeros(2, 3, 2, 4, 4), (enc, dec))
    videos, ids = ClipCollate(repeated=True, token_ids=True)([item, item])
    assert videos.shape[0] == 4
    # decoded = ~dec in raster order; scored = those the encoder also hid
    assert ids.decoded.tolist() == [[0, 3], [1, 2]] * 2
    assert ids.scored.tolist() == [[True, False], [True, False]] * 2
    assert ids.visible.tolist() == [[1, 3], [2, 3]] * 2


def test_collate_names_a_mask_with_unequal_counts():
    from videomae.data.datasets import ClipCollate

    bad = [torch.tensor([True, False, False, False]), torch.tensor([True, True, False, False])]
    with pytest.raises(ValueError, match="mask must mask the same number of tokens"):
        ClipCollate(token_ids=True)(_items(bad))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_loader_pins_token_ids():
    from torch.utils.data import DataLoader

    from videomae.data.datasets import ClipCollate

    items = _items([torch.tensor([True, False, True, False])] * 4)
    loader = DataLoader(items, batch_size=2, collate_fn=ClipCollate(token_ids=True), pin_memory=True)
    _, ids = next(iter(loader))
    assert type(ids).__name__ == "TokenIds" and ids.visible.is_pinned() and ids.scored is None
