"""bench/memory.py and bench/fake_step.py count what a step keeps for backward: checked on small cases whose bytes
are computed by hand (never against the code's own figures), on the fake H200 the benchmark uses."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench import fake_step as fs
from bench import memory

BF16, FP32 = 2, 4


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def count(module, make_input, batch, fn=None):
    """(saved, held) bytes, parameters excluded, of one forward on a fake H200 under bf16 autocast."""
    with fs.fake_h200():
        fs.materialize(module, "cuda")
        tracker = fs.ComponentTracker(module, [fs.ComponentRule(r"fc1", "a"), fs.ComponentRule(r"fc2", "b")])
        state = fs.state_storages(module)
        held = fs.HeldBytes(tracker, state)
        x = make_input(batch)
        with fs.SavedBytes(tracker, state) as saved, held, fs.autocast("cuda", torch.bfloat16):
            out = (fn or module)(x)
        result = saved.by_component, fs.by_component(saved.seen, held.alive())
        del out
        return result


def per_item(module_factory, make_input, fn=None):
    one = count(module_factory(), make_input, 1, fn)
    two = count(module_factory(), make_input, 2, fn)
    return [{k: b[k] - a.get(k, 0) for k in b} for a, b in zip(one, two)]


def test_linear_gelu_linear_by_hand():
    # Per sample of [4, 8] tokens under CUDA bf16 autocast: fc1 keeps its input's bf16 copy (4*8*2), GELU its
    # input (4*16*2), fc2 the GELU output (4*16*2). The bf16 weight copies do not grow with the batch.
    saved, held = per_item(Mlp, lambda b: torch.empty(b, 4, 8, device="cuda"))
    assert saved == {"a": 4 * 8 * BF16 + 4 * 16 * BF16, "b": 4 * 16 * BF16}
    # held adds the storages the forward made and still holds: here the output, fc2's [4, 8] bf16 result.
    assert held == {"a": 4 * 8 * BF16 + 4 * 16 * BF16, "b": 4 * 16 * BF16 + 4 * 8 * BF16}


def test_cuda_autocast_policy_keeps_layer_norm_in_fp32():
    # The CUDA policy (not CPU autocast's): layer_norm runs in fp32 on a copy of its bf16 input, which it keeps
    # with its fp32 mean and rstd: 6*10*4 + 2*6*4 bytes per sample of [6, 10].
    saved, _ = per_item(lambda: nn.LayerNorm(10), lambda b: torch.empty(b, 6, 10, device="cuda", dtype=torch.bfloat16))
    assert sum(saved.values()) == 6 * 10 * FP32 + 2 * 6 * FP32


def test_views_of_one_buffer_count_once_and_sdpa_keeps_output_and_lse():
    # q, k, v are views of one [B, N, 3, H, d] buffer: counted once; cuDNN attention keeps its output
    # [B, H, N, d] bf16 and log-sum-exp [B, H, N, 1] fp32 (plus two 8-byte RNG scalars that do not grow).
    b, n, h, d = 1, 10, 2, 8
    with fs.fake_h200():
        mode = fs.FakeDeviceMode()
        tracker = fs.ComponentTracker(nn.Identity(), [])
        qkv = torch.empty(b, n, 3, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) * 1
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        with fs.SavedBytes(tracker, set()) as saved, mode, sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            F.scaled_dot_product_attention(q, k, v)
    assert mode.kernels == ["cudnn"]
    assert sum(saved.by_component.values()) == 3 * b * n * h * d * BF16 + b * h * n * d * BF16 + b * h * n * FP32 + 16


def test_sdpa_default_choice_is_pytorch_priority():
    with fs.fake_h200():
        mode = fs.FakeDeviceMode()
        q = torch.empty(1, 2, 16, 8, device="cuda", dtype=torch.bfloat16)
        with mode:
            F.scaled_dot_product_attention(q, q, q)
    assert mode.kernels == [fs.sdpa_priority()[0]]


def test_bool_mask_indexing_uses_the_registered_values():
    real = torch.tensor([[True, False, True, True], [False, True, True, True]])
    with fs.fake_h200():
        mode = fs.FakeDeviceMode()
        mask = mode.register_mask(torch.empty(2, 4, dtype=torch.bool, device="cuda"), real)
        x = torch.empty(2, 4, 5, device="cuda")
        with mode:
            kept, dropped = x[mask], x[~mask]
    assert kept.shape == (6, 5) and dropped.shape == (2, 5)


def test_selective_checkpoint_cache_is_held_not_saved():
    # Selective checkpointing (videomae.layers.recompute, "cheap") of fc1 -> GELU -> fc2: autograd saves only the
    # region's input (checkpoint keeps it through a saved tensor: [3, 8] fp32); the kept matmul output, fc1's
    # [3, 16] bf16, lives in checkpointing's own cache, which only `held` sees. fc2 narrows (16 -> 8): not kept.
    from videomae.layers import recompute

    lin = Mlp()

    def region(x):
        return recompute.run_block(lin, x * 2, "cheap")

    saved, held = per_item(lambda: lin, lambda b: torch.empty(b, 3, 8, device="cuda", requires_grad=True),
                           fn=region)
    assert sum(saved.values()) == 3 * 8 * FP32
    assert sum(held.values()) == 3 * 8 * FP32 + 3 * 16 * BF16 + 3 * 8 * BF16  # + the region's output


def test_max_batch_formula():
    # (capacity - 16 B/parameter - reserve) // per clip
    params = sum(p.numel() for p in memory.ours_model("S").parameters())
    per_clip = 50 * 2**20
    want = (80 * 10**9 - 16 * params - memory.RESERVE) // per_clip
    assert memory.max_batch(per_clip, "S", 80 * 10**9) == want


def test_grouped_sums_blocks():
    assert memory.grouped({"enc0.attn": 1, "enc11.attn": 2, "enc3.mlp": 4, "embed": 8, "dec0.mlp": 16}) == {
        "enc.attn": 3, "enc.mlp": 4, "embed": 8, "dec.mlp": 16}
