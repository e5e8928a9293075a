"""The kernels of a training step as inductor would launch them, with each one's FLOPs and bytes (bench/cost_model.py
prices them).

Input: a partitioned training graph (forward and backward FX graphs, aten ops after inductor's decompositions,
each node's component in `node.meta["custom"]["component"]`).
- `matmul`: mm/addmm/bmm -> one cuBLAS GEMM each: 2*M*N*K FLOPs, operands read once, result written once;
- `attention`: each SDPA forward / backward kernel: 4*B*H*N*Nk*d FLOPs forward, 2.5x that backward (five
  products: S, dV, dP, dQ, dK);
- `fused-op`: our ops (videomae::*): the bytes each must move (`_fused_op_kernel`), and cube_embed's GEMMs;
- `pointwise` / `reduction`: everything else is fused the way inductor fuses: the non-matmul nodes between the
  same matmuls and attention kernels (same "extern depth"), connected by data edges, form one kernel that reads
  its inputs once and writes what leaves it; views are free; a reduction over leading dims (a bias gradient)
  is a kernel of its own. `cast`: a fused kernel that only converts dtypes (the weights' bf16 copies).
- `optimizer`: fused AdamW (28 bytes per fp32 parameter) and the grad norm (4), from the parameter count.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass

import torch


@dataclass
class Kernel:
    name: str  # the op(s) it runs
    cls: str  # matmul | attention | fused-op | pointwise | reduction | cast | optimizer
    component: str
    phase: str  # forward | backward | optimizer
    flops: float
    bytes: float
    shape: str = ""
    attention_kernel: str = ""
    time_s: float = 0.0


_aten = torch.ops.aten
_VIEWS = {_aten.view.default, _aten._unsafe_view.default, _aten.reshape.default, _aten.permute.default,
          _aten.transpose.int, _aten.t.default, _aten.expand.default, _aten.squeeze.dim, _aten.squeeze.dims,
          _aten.unsqueeze.default, _aten.slice.Tensor, _aten.select.int, _aten.alias.default, _aten.as_strided.default,
          _aten.unbind.int, _aten.split.Tensor, _aten.split_with_sizes.default, _aten.detach.default,
          _aten._reshape_alias.default, operator.getitem}
_MATMULS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}
_SDPA = {"_scaled_dot_product_cudnn_attention": "cudnn", "_scaled_dot_product_flash_attention": "flash",
         "_scaled_dot_product_efficient_attention": "efficient", "_scaled_dot_product_attention_math": "math"}
_REDUCTIONS = {_aten.sum.dim_IntList, _aten.sum.default, _aten.mean.dim, _aten.var_mean.correction,
               _aten.var.correction, _aten.amax.default, _aten.max.dim, _aten._softmax.default}


def _val(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _nbytes(val) -> int:
    if isinstance(val, torch.Tensor):
        return val.numel() * val.element_size()
    if isinstance(val, (tuple, list)):
        return sum(_nbytes(v) for v in val)
    return 0


def _component(node) -> str:
    return (node.meta.get("custom") or {}).get("component", "unattributed")


def _sdpa_kind(node) -> tuple[str, str] | None:
    """(kernel, phase) of an SDPA node, else None."""
    name = getattr(node.target, "__name__", str(node.target))
    for key, kernel in _SDPA.items():
        if key in name:
            return kernel, "backward" if "backward" in name else "forward"
    return None


def _is_extern(node) -> bool:
    if node.op != "call_function":
        return False
    return node.target in _MATMULS or _sdpa_kind(node) is not None or _custom(node) is not None


def _custom(node) -> str | None:
    """The videomae op name (cube_embed, ..., with _backward) of a node calling one, else None."""
    target = node.target
    ns = getattr(target, "namespace", None)
    if ns != "videomae":
        return None
    name = target._opname if hasattr(target, "_opname") else str(target).split("::")[-1].split(".")[0]
    for backend in ("_torch", "_triton", "_cuda"):
        name = name.replace(backend, "")
    return name


def _is_view(node) -> bool:
    return node.op == "call_function" and node.target in _VIEWS


def _leading_reduction(node) -> bool:
    """A sum over dims that exclude the last one (a bias or LayerNorm-weight gradient): its own kernel."""
    if node.target is not _aten.sum.dim_IntList:
        return False
    src = _val(node.args[0])
    dims = [d % src.dim() for d in node.args[1]] if isinstance(src, torch.Tensor) else []
    return bool(dims) and (src.dim() - 1) not in dims


def _matmul_kernel(node, phase: str) -> Kernel:
    if node.target is _aten.addmm.default:
        bias, a, b = (_val(x) for x in node.args[:3])
    elif node.target is _aten.baddbmm.default:
        bias, a, b = (_val(x) for x in node.args[:3])
    else:
        bias, (a, b) = None, (_val(x) for x in node.args[:2])
    out = _val(node)
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = a.numel() // (m * k)
    flops = 2 * batch * m * n * k
    return Kernel(str(node.target), "matmul", _component(node), phase, flops,
                  _nbytes(a) + _nbytes(b) + _nbytes(bias) + _nbytes(out), shape=f"{batch}x{m}x{n}x{k}")


def _sdpa_kernel(node, phase: str) -> Kernel:
    kernel, which = _sdpa_kind(node)
    # Every SDPA backward takes (grad_out, query, key, value, ...), every forward (query, key, value, ...).
    q, k = (_val(a) for a in (node.args[1:3] if which == "backward" else node.args[0:2]))
    b, h, n, d = q.shape
    nk = k.shape[-2]
    fwd = 4 * b * h * n * nk * d
    reads = sum(_nbytes(_val(a)) for a in node.args if isinstance(a, torch.fx.Node))
    return Kernel(str(node.target), "attention", _component(node), phase, fwd * (2.5 if which == "backward" else 1),
                  reads + _nbytes(_val(node)), shape=f"B{b} H{h} N{n}{'' if nk == n else f'x{nk}'} d{d}",
                  attention_kernel=kernel)


def _fused_op_kernel(node, phase: str) -> Kernel:
    """Bytes a fused op must move: each input read once (the clip only at the cubes it reads), outputs written;
    cube_embed's FLOPs are its GEMMs (forward: the visible cubes times the weight; backward: the weight gradient)."""
    name = _custom(node)
    tensors = [_val(a) for a in node.args if isinstance(a, torch.fx.Node)]
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    read, flops = sum(_nbytes(t) for t in tensors), 0.0
    videos = next((t for t in tensors if t.dim() == 5 and t.dtype in (torch.float32, torch.bfloat16, torch.float16,
                                                                       torch.uint8) and t.shape[1] <= 4), None)
    if videos is not None:
        ids = next(t for t in tensors if t.dtype == torch.int64 and t.dim() == 2)
        if name.startswith("cube_embed"):
            weight = next(t for t in tensors if t.dim() == 5 and t is not videos)
            cube, width = weight[0].numel(), weight.shape[0]
            flops = 2 * ids.numel() * cube * width
        else:  # norm_pix_mse: pred [B, N_dec, cube]
            cube = next(t for t in tensors if t.dim() == 3).shape[-1]
        read += ids.numel() * cube * videos.element_size() - _nbytes(videos)  # only the cubes it reads
    return Kernel(name, "fused-op", _component(node), phase, flops, read + _nbytes(_val(node)))


def kernels(gm: torch.fx.GraphModule, phase: str) -> list[Kernel]:
    """The kernels of one partitioned graph (`phase`: forward or backward), fused as inductor fuses."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    out = []
    for n in nodes:
        if n.target in _MATMULS:
            out.append(_matmul_kernel(n, phase))
        elif _sdpa_kind(n) is not None:
            out.append(_sdpa_kernel(n, phase))
        elif _custom(n) is not None:
            out.append(_fused_op_kernel(n, phase))
    return out + [_group_kernel(g, set(g), phase) for g in fuse(gm)]


def _producer(a):
    """Through views, the node whose buffer `a` reads (None for a graph input or a constant)."""
    while isinstance(a, torch.fx.Node) and _is_view(a):
        a = a.args[0] if isinstance(a.args[0], torch.fx.Node) else None
    return a if isinstance(a, torch.fx.Node) and a.op == "call_function" else None


def fuse(gm: torch.fx.GraphModule) -> list[list[torch.fx.Node]]:
    """Inductor-style fusion of the non-matmul nodes: a node joins its producer's kernel (vertical) and nodes
    that read the same buffer over the same index space join each other (horizontal), unless the merged kernel
    would both feed and wait for the same matmul/attention/op kernel (a cycle). Views are free; a reduction
    over leading dims (bias, LayerNorm-weight gradients) stays a kernel of its own, as a split reduction."""
    nodes = list(gm.graph.nodes)
    externs = [n for n in nodes if _is_extern(n)]
    bit = {e: 1 << i for i, e in enumerate(externs)}
    anc: dict[torch.fx.Node, int] = {}
    for n in nodes:
        anc[n] = 0
        for a in n.all_input_nodes:
            anc[n] |= anc[a] | bit.get(a, 0)
    desc: dict[torch.fx.Node, int] = {}
    for n in reversed(nodes):
        desc[n] = 0
        for u in n.users:
            desc[n] |= desc[u] | bit.get(u, 0)
    fusible = [n for n in nodes if n.op == "call_function" and not _is_extern(n) and not _is_view(n)]
    parent = {n: n for n in fusible}
    g_anc = {n: anc[n] for n in fusible}
    g_desc = {n: desc[n] for n in fusible}

    def find(x):
        while parent[x] is not x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def merge(x, y) -> None:
        rx, ry = find(x), find(y)
        if rx is ry or (g_anc[rx] & g_desc[ry]) or (g_anc[ry] & g_desc[rx]):
            return
        parent[rx] = ry
        g_anc[ry] |= g_anc[rx]
        g_desc[ry] |= g_desc[rx]

    alone = {n for n in fusible if _leading_reduction(n)}
    for n in fusible:  # vertical
        if n in alone:
            continue
        for a in n.all_input_nodes:
            p = _producer(a)
            if p in parent and p not in alone:
                merge(p, n)
    for m in nodes:  # horizontal: readers of one buffer over the same number of elements
        readers = [u for u in _users_through_views(m) if u in parent and u not in alone]
        for u in readers[1:]:
            if _numel(u) == _numel(readers[0]):
                merge(readers[0], u)
    groups: dict[torch.fx.Node, list[torch.fx.Node]] = defaultdict(list)
    for n in fusible:
        groups[find(n)].append(n)
    return list(groups.values())


def _numel(node) -> int:
    v = _val(node)
    return v.numel() if isinstance(v, torch.Tensor) else -1


def _group_kernel(members, inside, phase) -> Kernel:
    reads: dict[torch.fx.Node, int] = {}  # per buffer read (views of one buffer are one read), the most of it read
    for n in members:
        for a in n.all_input_nodes:
            src = _producer(a) or _root(a)
            if src in inside:
                continue
            reads[src] = max(reads.get(src, 0), _nbytes(_val(a)))
    writes = 0
    for n in members:  # written: the values used outside the kernel
        if any(u not in inside for u in _users_through_views(n)):
            writes += _nbytes(_val(n))
    ops = {str(getattr(n.target, "__name__", n.target)) for n in members}
    if all(n.target is torch.ops.prims.convert_element_type.default for n in members):
        cls = "cast"
    elif any(n.target in _REDUCTIONS for n in members):
        cls = "reduction"
    else:
        cls = "pointwise"
    flops = sum(_nbytes(_val(n)) / max(1, _val(n).element_size()) for n in members
                if isinstance(_val(n), torch.Tensor))
    comp = _component(members[0])
    return Kernel("+".join(sorted(ops))[:120], cls, comp, phase, flops, sum(reads.values()) + writes)


def _root(a):
    """The graph input or constant a chain of views starts from."""
    while isinstance(a, torch.fx.Node) and _is_view(a) and isinstance(a.args[0], torch.fx.Node):
        a = a.args[0]
    return a


def _users_through_views(n) -> list:
    out = []
    for u in n.users:
        if _is_view(u):
            out += _users_through_views(u)
        else:
            out.append(u)
    return out


def optimizer_kernels(num_params: int) -> list[Kernel]:
    """Fused AdamW over fp32 parameters (read param, grad, two moments; write param and moments: 28 B) and the
    total grad norm (4 B: one read of the gradients)."""
    return [Kernel("fused AdamW", "optimizer", "optimizer", "optimizer", 12 * num_params, 28 * num_params),
            Kernel("grad norm", "optimizer", "optimizer", "optimizer", 2 * num_params, 4 * num_params)]
