"""The op plumbing: one schema table that every Python backend's annotations reproduce (torch 2.11 infers the
schema from them and ignores `schema=`), and the GPU flavour of the Triton ops tracing down to its kernels."""

import os
import subprocess
import sys

import pytest
import torch

from videomae.ops import dispatch, library, torch_backend


def _python_backends():
    mods = [torch_backend]
    if "triton" in dispatch.registered():
        from videomae.ops import triton_backend

        mods.append(triton_backend)
    return mods


@pytest.mark.parametrize("op", list(library.SCHEMAS))
def test_annotations_infer_the_schema_table(op):
    for mod in _python_backends():
        assert torch.library.infer_schema(mod.IMPLS[op], mutates_args=()) == library.SCHEMAS[op], mod.__name__


def test_registered_schemas_match_the_table():
    for mod in _python_backends():
        backend = mod.__name__.rsplit(".", 1)[1].removesuffix("_backend")
        for op, schema in library.SCHEMAS.items():
            name = library.qualname(op, backend)
            assert str(library.torch_op(op, backend).default._schema) == str(torch._C.parse_schema(name + schema))


TRACE_GPU_PATH = """
import torch
from torch._dynamo.backends.common import aot_autograd
from videomae.ops import testing as T
from videomae.ops.library import torch_op
from videomae.kernels._common import INTERPRET

assert not INTERPRET
graphs = []


class Traced(Exception):
    pass


def capture(gm, example):
    graphs.append(gm.code)
    def run(*args):
        raise Traced()
    return run


case = T.Case(2, 4, 32, 64, dim=40, dec_dim=24, ratio=0.5)
k = T.cube_embed_inputs(case, torch.float32)
d = T.decoder_input_inputs(case, torch.float32, v2=True)
p = T.norm_pix_mse_inputs(case, torch.float32, v2=True)
stats = ([0.4] * 3, [0.2] * 3)


# The loss reads its own clip: without a GPU driver Triton's mutation analysis fails and every kernel argument
# counts as mutated, so a clip shared by two ops would look written (on a GPU the analysis sees only the stores).
def f(videos, weight, bias, pos, visible, x_vis, token, dpos, dvis, ddec, pred, clip, decoded, scored):
    x = torch_op("cube_embed", "triton")(videos, weight, bias, pos, visible, *stats)
    y = torch_op("decoder_input", "triton")(x_vis, token, dpos, dvis, ddec)
    loss = torch_op("norm_pix_mse", "triton")(pred, clip, decoded, scored, 2, 16, True, "videomae", *stats)
    return x.sum() + y.sum() + loss


try:
    torch.compile(f, backend=aot_autograd(fw_compiler=capture), fullgraph=True)(
        k["videos"].detach(), k["weight"], k["bias"], k["pos"], k["visible"],
        d["x_vis"], d["mask_token"], d["pos"], d["visible"], d["decoded"], p["pred"], p["videos"], p["decoded"],
        p["scored"])
except Traced:
    pass
print(graphs[0])
"""


def test_compile_traces_triton_ops_for_gpu():
    """The GPU flavour (triton_op, no interpreter) traces with fullgraph: every shape is static, so each op
    decomposes into its Triton kernels and no op stays a whole node. Nothing runs: the captured graph is
    checked, so this needs no GPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", TRACE_GPU_PATH], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "triton_kernel_wrapper_functional" in res.stdout
    for op in ("cube_embed_triton", "decoder_input_triton", "norm_pix_mse_triton"):
        assert op not in res.stdout, op
