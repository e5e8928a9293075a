"""A pretraining step on fake tensors, as an H200 would run it, on a machine without a GPU.

`bench/memory.py` (saved-for-backward bytes) and `bench/cost_model.py` (FLOPs and bytes per kernel) both start
here. Nothing runs: every tensor is a `FakeTensor` (shape, dtype, device, no data), so ViT-L at any batch size
costs milliseconds.

- `fake_h200()`: a FakeTensorMode whose "cuda" tensors carry the CUDA dispatch keys, so `torch.autocast("cuda")`
  applies PyTorch's own CUDA autocast policy (LayerNorm, softmax and the MSE in fp32; matmuls and SDPA in bf16):
  the real C++ policy tables, not an imitation of them. `torch.cuda` answers as an H200 (sm_90), so the
  dispatcher (`videomae.dispatch`) picks what it would pick there.
- `FakeDeviceMode`: the two things fake tensors cannot do by themselves, done the way the GPU does them.
  (1) `F.scaled_dot_product_attention`: PyTorch chooses its kernel by querying the device, which is absent here,
  so the mode calls the aten kernel PyTorch would choose (its own priority order among the kernels the
  `sdpa_kernel` context enables; `prefer` overrides, for the cost model's candidates); that kernel saves what
  it saves on the GPU (output and log-sum-exp for flash / cuDNN / efficient). (2) Boolean-mask indexing
  (`x[mask]`, Hugging Face and the official code): its output size depends on the mask's values, which fake
  tensors lack, so the masks handed to the peers are registered with their real values (`shadow`) and the mode
  replaces `x[mask]` with a row gather of the same size (saved for backward: the Bool mask, as aten's index).
- The autograd engine cannot run backward on fake CUDA tensors (it sets the CUDA device of its worker thread),
  so the training graph is captured in two steps (`capture_training_graph`): the forward with its autocast casts
  is traced on fake CUDA (`make_fx`), moved to fake CPU tensors (ops and dtypes unchanged), and AOTAutograd
  traces the joint forward+backward from it and partitions it with inductor's min-cut partitioner.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.nn.attention import SDPBackend
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from bench.nodriver import H200  # one H200 for both fake devices, as the GPU machine reports it

# --------------------------------------------------------------------------------------------- the fake device


@contextlib.contextmanager
def fake_h200() -> Iterator[FakeTensorMode]:
    """Fake tensors with `torch.cuda` answering as one H200. Yields the FakeTensorMode (active)."""
    from videomae import dispatch

    cap = (H200.major, H200.minor)
    patches = [
        # `torch.cuda.is_available` stays False: with it True, fake tensors reach into the (absent) CUDA runtime.
        # The fused ops' GPU backends are told otherwise below (`_as_on_gpu`).
        mock.patch("torch.cuda.device_count", lambda: 1),
        mock.patch("torch.cuda.current_device", lambda: 0),
        mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: True),
        mock.patch("torch.cuda.get_device_capability", lambda *a, **k: cap),
        mock.patch("torch.cuda.get_device_properties", lambda *a, **k: H200),
        mock.patch("torch.cuda.get_device_name", lambda *a, **k: H200.name),
    ]
    saved_cap = dict(dispatch._CAPABILITY)
    saved_ops = dict(dispatch._REGISTRY["ops"])
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        dispatch._CAPABILITY[0] = cap
        for name in gpu_backends(saved_ops):
            dispatch.register_backend(_as_on_gpu(saved_ops[name]))
        dispatch.clear_cache()
        try:
            with mode:
                yield mode
        finally:
            dispatch._CAPABILITY.clear()
            dispatch._CAPABILITY.update(saved_cap)
            dispatch._REGISTRY["ops"].clear()
            dispatch._REGISTRY["ops"].update(saved_ops)
            dispatch.clear_cache()


def gpu_backends(registered: dict) -> list[str]:
    """The fused-op backends the fake H200 offers: the compiled extension when it loaded; else Triton, when its ops
    are opaque (TRITON_INTERPRET=1) or a driver can compile them (tracing a `triton_op` reads its kernel's IR,
    which needs one); else none, and the ops run as `torch` (same saved tensors; decoder_input then promotes to
    fp32 as the official code, where the GPU backends keep bf16)."""
    if "cuda" in registered:
        return ["cuda"]
    if "triton" in registered:
        from videomae.kernels._common import INTERPRET

        if INTERPRET or torch.cuda.is_available():
            return ["triton"]
    return []


def _as_on_gpu(backend):
    """The same backend, without the reason "no CUDA device" (its ops' fake kernels serve the fake tensors): the
    fused ops dispatch as on the H200 (auto: cuda, then triton), whose outputs and saved tensors (dtypes included:
    the GPU kernels keep x_vis' dtype in decoder_input) are what the GPU holds."""
    cls = type(backend)
    fake = type(f"OnGpu{cls.__name__}", (cls,), {"unavailable_reasons": lambda self: []})
    out = fake.__new__(fake)
    out.__dict__.update(backend.__dict__)
    return out


@contextlib.contextmanager
def autocast(device: str, dtype: torch.dtype | None) -> Iterator[None]:
    """What `torch.autocast(device, dtype)` switches on, without its check that CUDA is present (the policy
    itself lives in the dispatcher and applies to every tensor on `device`, fake ones included); dtype None: off."""
    if dtype is None:
        yield
        return
    prev = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device), torch.is_autocast_cache_enabled()
    torch.set_autocast_enabled(device, True)
    torch.set_autocast_dtype(device, dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device, prev[0])
        torch.set_autocast_dtype(device, prev[1])
        torch.set_autocast_cache_enabled(prev[2])


# --------------------------------------------------------------------------------------------- SDPA and masks

_SDPA_KERNELS = {
    SDPBackend.FLASH_ATTENTION: ("flash", torch.backends.cuda.flash_sdp_enabled),
    SDPBackend.EFFICIENT_ATTENTION: ("efficient", torch.backends.cuda.mem_efficient_sdp_enabled),
    SDPBackend.CUDNN_ATTENTION: ("cudnn", torch.backends.cuda.cudnn_sdp_enabled),
    SDPBackend.MATH: ("math", torch.backends.cuda.math_sdp_enabled),
}


def sdpa_priority() -> list[str]:
    """PyTorch's own order among the SDPA kernels (what `F.scaled_dot_product_attention` tries first)."""
    order = [SDPBackend(i) for i in torch._C._get_sdp_priority_order()] if hasattr(
        torch._C, "_get_sdp_priority_order") else list(_SDPA_KERNELS)
    return [_SDPA_KERNELS[b][0] for b in order if b in _SDPA_KERNELS]


def run_sdpa_kernel(kernel: str, q, k, v, dropout_p: float, scale: float | None) -> torch.Tensor:
    """The aten kernel of one SDPA backend (the op whose autograd node the GPU records) -> [B, H, N, d]."""
    aten = torch.ops.aten
    if kernel == "flash":
        return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, False, False, scale=scale)[0]
    if kernel == "cudnn":
        return aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, dropout_p, False, False, scale=scale)[0]
    if kernel == "efficient":
        return aten._scaled_dot_product_efficient_attention(q, k, v, None, True, dropout_p, False, scale=scale)[0]
    if kernel == "math":
        return aten._scaled_dot_product_attention_math(q, k, v, None, dropout_p, False, None, scale=scale)[0]
    raise ValueError(f"kernel must be flash, cudnn, efficient or math, got {kernel!r}")


class FakeDeviceMode(TorchFunctionMode):
    """SDPA kernel choice and Boolean-mask indexing on fake tensors (see the module docstring).

    prefer: the SDPA kernel to run whatever the context enables (None: PyTorch's choice among the enabled ones);
    shadow: {id(fake Bool tensor): its real values}, filled by `register_mask`. `kernels` records each choice.
    """

    def __init__(self, prefer: str | None = None):
        super().__init__()
        self.prefer = prefer
        self.shadow: dict[int, np.ndarray] = {}
        self._keep: list[torch.Tensor] = []  # the registered fakes stay alive, so their ids stay theirs
        self.kernels: list[str] = []

    def register_mask(self, fake: torch.Tensor, real: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Remember the values of a fake Bool tensor (NumPy: untouched by the fake mode)."""
        if isinstance(real, torch.Tensor):
            with unset_fake_temporarily():
                real = real.cpu().numpy()
        self.shadow[id(fake)] = np.asarray(real, dtype=bool)
        self._keep.append(fake)
        return fake

    def _sdpa(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is not None or is_causal or enable_gqa:
            raise NotImplementedError("FakeDeviceMode routes plain SDPA only (no mask, not causal, no GQA)")
        kernel = self.prefer or next(n for n in sdpa_priority() if dict(_SDPA_KERNELS.values())[n]())
        if torch.is_autocast_enabled(q.device.type):  # SDPA is on CUDA autocast's lower-precision list
            q, k, v = (t.to(torch.get_autocast_dtype(q.device.type)) for t in (q, k, v))
        self.kernels.append(kernel)
        return run_sdpa_kernel(kernel, q, k, v, dropout_p, scale)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self._sdpa(*args, **kwargs)
        if func in (torch.Tensor.__invert__, torch.logical_not, torch.Tensor.logical_not, torch.bitwise_not):
            out = func(*args, **kwargs)
            if id(args[0]) in self.shadow:
                self.register_mask(out, ~self.shadow[id(args[0])])
            return out
        if func is torch.Tensor.__getitem__ and isinstance(args[1], torch.Tensor) and args[1].dtype == torch.bool:
            x, mask = args
            if id(mask) not in self.shadow:
                raise RuntimeError("x[mask] with a Bool mask of unknown values: register it with register_mask")
            rows = x.flatten(0, mask.dim() - 1)
            index = torch.empty(int(self.shadow[id(mask)].sum()), dtype=torch.long, device=rows.device)
            return rows.index_select(0, index)  # saves the int index: about as small as aten's saved Bool mask
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------- models


class _ScalarsOnCpu(TorchFunctionMode):
    """While building on the meta device: `linspace` (the drop-path schedule, read with `.item()`) on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def build_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """`factory()` on the meta device: sizes without memory or init cost."""
    with torch.device("meta"), _ScalarsOnCpu():
        return factory()


def materialize(module: nn.Module, device: str) -> nn.Module:
    """Every parameter and buffer replaced by an empty tensor on `device` (call inside the fake mode)."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device),
                                                   requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device=device)
        for name, v in list(vars(m).items()):  # plain tensor attributes (the official pos tables), if on meta
            if isinstance(v, torch.Tensor) and v.device.type == "meta":
                setattr(m, name, torch.empty(v.shape, dtype=v.dtype, device=device))
    return module


def state_storages(module: nn.Module) -> set[int]:
    """Storage ids of the parameters and buffers: never activations."""
    return {t.untyped_storage()._cdata for t in (*module.parameters(), *module.buffers())}


# --------------------------------------------------------------------------------------------- components


@dataclass(frozen=True)
class ComponentRule:
    """Module names matching `pattern` (a regex on the qualified name) start component `label` (its groups
    formatted in: `enc{0}.attn`). The label stays in force until another rule's module starts."""

    pattern: str
    label: str


class ComponentTracker:
    """Which component of the model runs now: forward pre-hooks of the modules the rules match set it,
    forward hooks of the modules in `after` ({qualified name: label}) set it once they finish, `enter(label)` sets
    it by hand. With `annotate`, every node traced meanwhile carries `meta["custom"]["component"]`
    (`torch.fx.traceback.annotate`, which AOTAutograd carries into the forward and backward graphs)."""

    def __init__(self, model: nn.Module, rules: list[ComponentRule], first: str = "embed",
                 after: dict[str, str] | None = None, annotate: bool = False):
        import re

        self.current, self.annotate = "", annotate
        self._ctx: contextlib.AbstractContextManager | None = None
        self._handles = []
        after = after or {}
        for name, m in model.named_modules():
            if name in after:
                self._handles.append(m.register_forward_hook(lambda *a, label=after[name]: self.enter(label)))
            for rule in rules:
                hit = re.fullmatch(rule.pattern, name)
                if hit:
                    label = rule.label.format(*hit.groups())
                    self._handles.append(m.register_forward_pre_hook(lambda *a, label=label: self.enter(label)))
                    break
        self.enter(first)

    def enter(self, label: str) -> None:
        if label == self.current:
            return
        self.current = label
        if self.annotate:
            import torch.fx.traceback as fx_traceback

            if self._ctx is not None:
                self._ctx.__exit__(None, None, None)
            self._ctx = fx_traceback.annotate({"component": label})
            self._ctx.__enter__()

    def close(self) -> None:
        """End the current component (and its annotation): what runs next is nobody's."""
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None
        self.current = ""

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self.close()


def component_of(node: torch.fx.Node) -> str:
    """The component a traced node belongs to (`ComponentTracker(annotate=True)`), or "unattributed"."""
    return (node.meta.get("custom") or {}).get("component", "unattributed")


class SavedBytes:
    """saved_tensors_hooks that count unique storages saved for backward, per component, parameters and
    buffers excluded. `by_component`: {label: bytes}, each storage counted once, at its first save."""

    def __init__(self, tracker: ComponentTracker, exclude: set[int]):
        self.tracker, self.exclude = tracker, exclude
        self.seen: dict[int, tuple[str, int, torch.dtype]] = {}
        self._alive: list[torch.Tensor] = []  # keeps storages (and so their ids) alive while counting
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.layout == torch.strided:
            key = t.untyped_storage()._cdata
            if key not in self.exclude and key not in self.seen:
                self.seen[key] = (self.tracker.current, t.untyped_storage().nbytes(), t.dtype)
                self._alive.append(t)
        return t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def by_component(self) -> dict[str, int]:
        return by_component(self.seen)


class HeldBytes(TorchDispatchMode):
    """Storages created while active that are still alive at `held()`: what a forward leaves in memory for
    backward, whoever holds it (autograd's saved tensors, activation checkpointing's inputs, a selective-
    checkpoint cache), per component at creation. This is what `torch.cuda.memory_allocated` grows by, less
    the allocator's rounding; saved_tensors_hooks see only the first kind. Liveness is a weak reference to the
    storage's Python object, which PyTorch keeps alive exactly as long as the storage itself."""

    def __init__(self, tracker: ComponentTracker, exclude: set[int]):
        super().__init__()
        self.tracker, self.exclude = tracker, exclude
        self._storages: list[tuple[str, int, weakref.ref]] = []
        self._known: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage()._cdata for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor) and a.layout == torch.strided}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                st = t.untyped_storage()
                key = st._cdata
                if key in self.exclude or key in inputs or (key in self._known and self._known[key]() is st):
                    continue  # parameters, views and in-place results of an input, storages already counted
                ref = weakref.ref(st)
                self._known[key] = ref
                self._storages.append((self.tracker.current, st.nbytes(), ref))
        return out

    def alive(self) -> dict[int, tuple[str, int]]:
        """{storage id: (component, bytes)} of the storages made while active that are alive now."""
        gc.collect()
        return {ref()._cdata: (label, nbytes) for label, nbytes, ref in self._storages if ref() is not None}


def by_component(*storages: dict[int, tuple]) -> dict[str, int]:
    """{component: bytes} of the union of {storage id: (component, bytes, ...)} maps (the first one's label wins)."""
    union: dict[int, tuple] = {}
    for m in storages:
        for key, entry in m.items():
            union.setdefault(key, entry)
    out: dict[str, int] = {}
    for label, nbytes, *_ in union.values():
        out[label] = out.get(label, 0) + nbytes
    return out


# --------------------------------------------------------------------------------------------- the joint graph


def _to_cpu_graph(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The same graph with every device argument pointing at the CPU (ops and dtypes unchanged)."""
    cpu = torch.device("cpu")

    def swap(a):
        if isinstance(a, torch.device) and a.type == "cuda":
            return cpu
        if isinstance(a, str) and a.startswith("cuda"):
            return "cpu"
        return a

    for node in gm.graph.nodes:
        node.args = torch.fx.node.map_aggregate(node.args, swap)
        node.kwargs = torch.fx.node.map_aggregate(node.kwargs, swap)
        if node.op == "get_attr":  # constants traced from the forward (small tables): real zeros of the same kind
            val = getattr(gm, node.target)
            if isinstance(val, torch.Tensor):
                with unset_fake_temporarily():
                    setattr(gm, node.target, torch.zeros(val.shape, dtype=val.dtype))
    gm.recompile()
    return gm


@dataclass
class TrainingGraph:
    """The partitioned training graph: `forward` and `backward` as inductor would get them (aten, functional),
    `saved`: the forward's outputs that backward reads (activations and, here, also the parameters it needs)."""

    forward: torch.fx.GraphModule
    backward: torch.fx.GraphModule
    num_params: int  # the first placeholders of `forward` are the parameters, in `params` order


def capture_training_graph(loss_fn: Callable, params: dict[str, torch.Tensor], inputs: tuple,
                           device_mode: FakeDeviceMode, dtype: torch.dtype | None) -> TrainingGraph:
    """The joint forward+backward of `loss_fn(params, *inputs) -> scalar`, partitioned as inductor does.

    Call inside `fake_h200()` with fake CUDA `params` and `inputs`. The forward is traced on fake CUDA under
    `torch.autocast("cuda", dtype)` (the casts become ops of the graph), then AOTAutograd builds the joint on fake
    CPU copies and splits it with `min_cut_rematerialization_partition(compiler="inductor")` and inductor's
    decompositions. This is the function to swap for another capture: the cost model takes the two graphs.
    """
    from torch._functorch.aot_autograd import aot_function, make_boxed_func
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table
    from torch.fx.experimental.proxy_tensor import make_fx

    names = list(params)

    def forward(*flat):
        p = dict(zip(names, flat[:len(names)]))
        with device_mode, autocast("cuda", dtype):
            return loss_fn(p, *flat[len(names):])

    import torch.fx.traceback as fx_traceback

    flat = [params[n].detach() for n in names] + list(inputs)
    # the forward's ops after autocast (the custom ops keep their registered autograd); preserve_node_meta keeps
    # the components that `ComponentTracker(annotate=True)` stamps on the nodes; `torch.compiler.is_compiling()`
    # answers True, as while dynamo traces, so the model takes its compiled path
    with torch.no_grad(), fx_traceback.preserve_node_meta(), mock.patch("torch.compiler._is_compiling_flag", True):
        fw = make_fx(forward, tracing_mode="real")(*flat)
    fw = _to_cpu_graph(fw)
    graphs: dict[str, torch.fx.GraphModule] = {}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = gm
            return make_boxed_func(gm.forward)
        return compiler

    cpu_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with cpu_mode:
        cpu_flat = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu") for t in flat]
    for i in range(len(names)):
        cpu_flat[i].requires_grad_(params[names[i]].requires_grad)
    def run_forward(*args):  # node by node, so that each node's meta reaches the ops it becomes
        return torch.fx.Interpreter(fw).run(*args)

    joint = aot_function(run_forward, keep("forward"), keep("backward"), decompositions=select_decomp_table(),
                         partition_fn=functools.partial(min_cut_rematerialization_partition, compiler="inductor"))
    with cpu_mode, fx_traceback.preserve_node_meta():
        out = joint(*cpu_flat)
        out.backward()
    return TrainingGraph(graphs["forward"], graphs["backward"], len(names))
