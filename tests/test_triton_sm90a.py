"""Every Triton kernel of the step compiled offline for sm_90a (issue 20 item 3): a compile error or a spill fails CI.

Our kernels at the headline shapes go through bench/triton_sm90a.py (its `--check`); inductor's kernels of the step
are checked where they are generated, in tests/test_fake_cuda_trace.py. The spill detector itself is shown to catch
a kernel made to spill, and its parser is checked on a report written out by hand.
"""

from __future__ import annotations

import json

import pytest
import torch
import triton.language as tl

from bench import nodriver
from bench import triton_sm90a as sm90a


def test_every_kernel_compiles_for_sm90a_at_the_headline_shapes_without_spilling(tmp_path):
    out = tmp_path / "sm90a.json"
    res = nodriver.run_isolated(["-m", "bench.triton_sm90a", "--no-inductor", "--check", "--json", str(out)],
                             timeout=1500)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    report = json.loads(out.read_text())
    assert report["target"]["ptx_target"] == "sm_90a" and report["summary"]["spills"] == 0
    rows = report["kernels"]
    assert rows and all(r["status"] == "ok" for r in rows)
    assert all(r["registers"] <= 255 and r["spill_store_bytes"] == r["spill_load_bytes"] == 0 for r in rows)
    # Each kernel of kernels/*.py was compiled (the script fails any it never saw launched), at the headline
    # shapes: ViT-B's 16x16 patches, tubelet 2, uint8 and fp32 clips, bf16 weights, V1 and V2.
    names = {(r["module"].rsplit(".", 1)[-1], r["kernel"]) for r in rows}
    assert {("cube_embed", "_cube_embed_fwd_kernel"), ("cube_embed", "_cube_gather_kernel"),
            ("decoder_input", "_decoder_input_kernel"), ("norm_pix_mse", "_norm_pix_mse_kernel"),
            ("_common", "_token_sum_kernel"), ("add_layer_norm", "_fwd_kernel"), ("add_layer_norm", "_bwd_kernel")} \
        <= names
    # add_layer_norm at both widths of the step: the encoder's 768 and the decoder's 384 (ViT-B)
    widths = {r["constexprs"]["BLOCK_D"] for r in rows if r["module"].endswith("add_layer_norm")}
    assert widths == {1024, 512}
    embed = [r for r in rows if r["kernel"] == "_cube_embed_fwd_kernel"]
    assert {r["constexprs"]["IS_UINT8"] for r in embed} == {True, False}
    assert all(r["constexprs"]["K"] == 3 * 2 * 16 * 16 for r in embed)
    cases = {c for r in rows for c in r["cases"]}
    assert {"pretrain B=32 V1 uint8", "pretrain B=32 V2 float32"} <= cases


def test_parse_ptxas_reads_registers_and_spills():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_90a'
ptxas info    : Function properties for k
    24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 1024 bytes smem, 392 bytes cmem[0]"""
    assert sm90a.parse_ptxas(log) == {"registers": 168, "stack_frame_bytes": 24, "spill_store_bytes": 16,
                                      "spill_load_bytes": 12, "static_smem_bytes": 1024, "cmem0_bytes": 392}
    with pytest.raises(ValueError, match="no register count"):
        sm90a.parse_ptxas("ptxas fatal   : Unresolved extern function 'f'")


def _square_tile(x, out, BLOCK: tl.constexpr):  # noqa: N803  (Triton's constexpr naming)
    i = tl.arange(0, BLOCK)
    tile = tl.load(x + i[:, None] * BLOCK + i[None, :])
    tl.store(out + i[:, None] * BLOCK + i[None, :], tl.dot(tile, tile))


def test_a_kernel_made_to_spill_fails_the_check():
    """A 64x64 fp32 tile product held by one warp needs ~128 registers per thread: with ptxas capped at 32 it
    spills, and the row says so; uncapped, the same kernel passes."""
    from triton.runtime.jit import JITFunction

    kernel = JITFunction(_square_tile)  # compiled, not interpreted, whatever TRITON_INTERPRET says
    x = torch.empty(64 * 64, dtype=torch.float32)
    launch = sm90a.Launch(kernel, (sm90a._Pointer(x), sm90a._Pointer(x), 64), {"num_warps": 1}, (1,), "planted")
    capped = sm90a.Launch(kernel, launch.args, {"num_warps": 1, "maxnreg": 32}, (1,), "planted")
    ok = sm90a.ptxas_usage(sm90a.compile_launch(launch).asm["ptx"])
    spilled = sm90a.compile_launch(capped)
    usage = sm90a.ptxas_usage(spilled.asm["ptx"])
    assert ok["status"] == "ok" and ok["spill_store_bytes"] == 0
    assert usage["status"] == "spill" and usage["spill_store_bytes"] > 0 and usage["registers"] <= 32
    assert sm90a.failures([dict(usage, kernel="k")]) and not sm90a.failures([dict(ok, kernel="k")])
