"""One backend dispatcher, xformers style, for the fused ops (`videomae.ops`) and attention (`videomae.attention`).

A backend is a `Backend`: it declares devices, dtypes and a minimum compute capability, and answers
`not_supported_reasons(op, inputs) -> list[str]` (inputs: the call's arguments by name). Backends belong to a
family, and each family has one switch:

| family      | ops                                           | env var            | backend names               |
|-------------|-----------------------------------------------|--------------------|-----------------------------|
| `ops`       | `cube_embed`, `decoder_input`, `norm_pix_mse` | `VIDEOMAE_BACKEND` | cuda, triton, torch         |
| `attention` | `attention`                                   | `VIDEOMAE_ATTN`    | see `videomae/attention.py` |

Forcing a backend, the one way (both families, `auto` if neither is set):
- `with use_backend("triton"):`, `with use_backend(attention="eager"):` or both at once,
  `with use_backend("torch", attention="eager"):` (also importable as `videomae.ops.use_backend`);
- the environment variables above, read at each call; a `use_backend` block wins over them.
Names are `auto`, a group (`sdpa`) or a backend name; case and `_` / `-` do not matter.

Each call, `select(op, inputs)`:
- `auto` (default): the first backend with no reasons, in the order of `PRIORITY`, the one priority table,
  keyed by (op, device class, dtype, size bucket) with `*` / 0 for "any"; a backend the table does not list
  for a call is never picked by `auto` (e.g. `sdpa-default`, kept for comparison);
- a group name (`sdpa`): `auto` restricted to the group's members;
- a backend name: that backend, or `NotSupportedError` listing every reason it cannot run the call.

The choice is cached per (op, switch, shapes, dtypes, devices, last-dim contiguity, scalar inputs), so a
forward walks the table once per shape; `register_backend`, `use_backend` and `set_priority` clear the cache.
Inside `torch.compile` the walk runs at trace time on static shapes and becomes a constant in the graph (no
cache lookups, which dynamo would guard on).

The switch is process-global, not thread-local: the backends are a property of the machine, and a model must
dispatch the same way in every thread that runs it (a thread pool serving requests, a benchmark's worker, the
autograd engine's threads) without each thread repeating the switch. The cost: two threads cannot force
different backends at the same time. Compiled code guards on the switch: changing it recompiles.

The table is code, not a file: tuned orders (`videomae.attention_tune.tune`, the benchmark) are installed at
run time with `set_priority` and pasted here when they should become the default.

(About 400 lines on purpose: the base class, the table, the switch and the walk are read together.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


class NotSupportedError(RuntimeError):
    """A backend cannot run a call (or none can, under `auto`); the message lists every reason."""


@dataclass(frozen=True)
class Family:
    ops: tuple[str, ...]
    env: str
    names: tuple[str, ...]  # every backend that may register in this family
    label: str  # how messages name one of its backends
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # switch names meaning "auto among these"
    size_input: str | None = None  # dim -2 of this input picks the size bucket of `PRIORITY`

    @property
    def switch_names(self) -> tuple[str, ...]:
        return ("auto", *self.groups, *self.names)


FUSED_OPS = ("cube_embed", "decoder_input", "norm_pix_mse", "add_layer_norm")
FAMILIES: dict[str, Family] = {
    "ops": Family(FUSED_OPS, "VIDEOMAE_BACKEND", ("cuda", "triton", "torch"), "backend"),
    "attention": Family(
        ("attention",), "VIDEOMAE_ATTN",
        ("flash-attn", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "xformers", "sdpa-math", "sdpa-default", "eager"),
        "attention backend", size_input="q",
        groups={"sdpa": ("sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math", "sdpa-default")},
    ),
}
_FAMILY_OF = {op: name for name, fam in FAMILIES.items() for op in fam.ops}

SIZE_BUCKETS = (256, 1024, 4096)  # encoder ~160-400 tokens, decoder 1568 at 16x224, 3000+ at 32 frames / 320 px

# --------------------------------------------------------------------------------------------- the table
# (op, device class, dtype name, size bucket) -> backend names, tried first to last. Device classes:
# cpu, mps, cuda-sm90 (Hopper+), cuda-sm80 (Ampere), cuda (older); bucket 0 means any length for these
# priors and "longer than 4096" for tuned entries.
# Fused ops: compiled extension, then Triton, then eager torch; no GPU measurement has reordered them yet.
# Attention: Hopper: FA3 / cuDNN lead published H100 numbers for d=64 non-causal; Ampere: FA2 leads; fp32 on
# CUDA: only the cutlass kernel is fast; CPU: the flash kernel tiles and never materializes [N, N].
_FAST_CUDA = ["flash-attn", "sdpa-cudnn", "sdpa-flash", "xformers", "sdpa-efficient", "sdpa-math", "eager"]
PRIORITY: dict[tuple[str, str, str, int], list[str]] = {
    **{(op, "*", "*", 0): ["cuda", "triton", "torch"] for op in FUSED_OPS},
    ("attention", "cuda-sm90", "bfloat16", 0): _FAST_CUDA,
    ("attention", "cuda-sm80", "bfloat16", 0): ["flash-attn", "sdpa-flash", "xformers", "sdpa-efficient",
                                                "sdpa-cudnn", "sdpa-math", "eager"],
    ("attention", "cuda", "float32", 0): ["sdpa-efficient", "xformers", "sdpa-math", "eager"],
    ("attention", "cpu", "*", 0): ["sdpa-flash", "sdpa-math", "eager"],
    ("attention", "*", "*", 0): _FAST_CUDA,
}

# --------------------------------------------------------------------------------------------- devices

_CAPABILITY: dict[int, tuple[int, int]] = {}  # read once per GPU (call `capability` before compiling a model)


def capability(device: torch.device | str | torch.Tensor) -> tuple[int, int]:
    """(major, minor) of a CUDA device, (0, 0) for any other device."""
    device = device.device if isinstance(device, torch.Tensor) else torch.device(device)
    if device.type != "cuda":
        return (0, 0)
    idx = torch.cuda.current_device() if device.index is None else device.index
    if idx not in _CAPABILITY:
        if torch.compiler.is_compiling():  # a write here would change a dict dynamo guards on
            return _read_capability(idx)
        _CAPABILITY[idx] = _read_capability(idx)
    return _CAPABILITY[idx]


@torch._dynamo.assume_constant_result
def _read_capability(idx: int) -> tuple[int, int]:
    """The driver's answer, read outside any traced region (dynamo calls it when tracing and keeps a constant)."""
    return tuple(torch.cuda.get_device_capability(idx))


def device_class(device: torch.device | str | torch.Tensor) -> str:
    """The device part of a `PRIORITY` key: cpu, mps, cuda-sm90, cuda-sm80 or cuda."""
    device = device.device if isinstance(device, torch.Tensor) else torch.device(device)
    if device.type != "cuda":
        return device.type
    major = capability(device)[0]
    return "cuda-sm90" if major >= 9 else "cuda-sm80" if major == 8 else "cuda"


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------------------------- backends


class Backend:
    """What a backend can run. Subclasses set the declarations and may extend `not_supported_reasons`.

    family: which switch and table it belongs to; ops: the ops it implements (None: all of its family's);
    dtypes: of the call's first float input, per device type where `device_dtypes` says otherwise.
    """

    name: str = ""
    family: str = "ops"
    ops: tuple[str, ...] | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
    device_dtypes: dict[str, tuple[torch.dtype, ...]] = {}
    min_compute_capability: tuple[int, int] = (0, 0)

    def unavailable_reasons(self) -> list[str]:
        """Why this backend cannot run anything here (missing library, no device); [] if it can."""
        return []

    def implements(self, op: str) -> bool:
        return op in (FAMILIES[self.family].ops if self.ops is None else self.ops)

    def not_supported_reasons(self, op: str, inputs: dict[str, object]) -> list[str]:
        """inputs: the call's arguments by name (tensors, None, scalars); [] if this backend can run it."""
        reasons = list(self.unavailable_reasons())
        if not self.implements(op):
            reasons.append(f"op {op} not implemented")
        # Plain loops and lists: dynamo traces this at compile time on every supported torch.
        tensors = [(k, v) for k, v in inputs.items() if isinstance(v, torch.Tensor)]
        missing = []  # one reason per device the backend lacks, naming its first input: enough to act on
        for k, v in tensors:
            dev = v.device.type
            if dev not in self.devices and dev not in missing:
                missing.append(dev)
                reasons.append(f"{k} on {dev}: device {dev} not in {list(self.devices)}")
        floats = [v for _, v in tensors if v.is_floating_point()]
        if floats:
            dev = floats[0].device.type
            dtypes = self.device_dtypes.get(dev, self.dtypes)
            if floats[0].dtype not in dtypes:
                reasons.append(f"dtype {floats[0].dtype} not in {[_short(d) for d in dtypes]} on {dev}")
        cuda = [v for _, v in tensors if v.device.type == "cuda"]
        if cuda and capability(cuda[0]) < self.min_compute_capability:
            reasons.append(f"compute capability {capability(cuda[0])} < {self.min_compute_capability}")
        return reasons


class TorchBackend(Backend):
    """Eager torch (`videomae/ops/torch_backend.py`): runs every fused op on CPU and CUDA, in any float dtype."""

    name = "torch"
    dtypes = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


# --------------------------------------------------------------------------------------------- state

_REGISTRY: dict[str, dict[str, Backend]] = {f: {} for f in FAMILIES}
_BROKEN: dict[str, dict[str, str]] = {f: {} for f in FAMILIES}  # name -> why its module failed to import
_SWITCH: dict[str, str | None] = {f: None for f in FAMILIES}  # set by use_backend; None: the env var
_CACHE: dict[tuple, Backend] = {}
_ENV_SEEN: dict[tuple[str, str], str] = {}  # (env var, raw value) -> checked switch name
_STATS = {"hits": 0, "misses": 0}


def family_of(op_or_family: str) -> str:
    """`ops` / `attention` for an op name or a family name."""
    if op_or_family in FAMILIES:
        return op_or_family
    if op_or_family in _FAMILY_OF:
        return _FAMILY_OF[op_or_family]
    raise ValueError(f"op_or_family must be one of {sorted(FAMILIES) + sorted(_FAMILY_OF)}, got {op_or_family!r}")


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _check_switch(family: str, name: str, what: str) -> str:
    fam = FAMILIES[family]
    norm = _normalize(name) or "auto"
    if norm not in fam.switch_names:
        raise ValueError(f"{what} must be one of {fam.switch_names}, got {name!r}")
    return norm


def clear_cache() -> None:
    _CACHE.clear()


def cache_info() -> dict[str, int]:
    """{"hits", "misses", "size"}: misses count the table walks `select` has done since the process started."""
    return {**_STATS, "size": len(_CACHE)}


def register_backend(backend: Backend) -> None:
    """Add (or replace) a backend of `backend.family`; dispatch considers it from the next call on."""
    fam = FAMILIES[backend.family]
    if backend.name not in fam.names:
        raise ValueError(f"backend name must be one of {fam.names}, got {backend.name!r}")
    _REGISTRY[backend.family][backend.name] = backend
    _BROKEN[backend.family].pop(backend.name, None)
    clear_cache()


def mark_broken(name: str, reason: str, family: str = "ops") -> None:
    """Record why a backend could not be loaded, for errors and `backend_report()`."""
    if name not in _REGISTRY[family]:
        _BROKEN[family][name] = reason
        clear_cache()


def registered(family: str = "ops") -> dict[str, Backend]:
    return dict(_REGISTRY[family_of(family)])


def forced(op_or_family: str = "ops") -> str:
    """The switch in force: a `use_backend` block wins over the env var; `auto` if neither."""
    family = family_of(op_or_family)
    name = _SWITCH[family]
    if name is not None:
        return name
    env = FAMILIES[family].env
    raw = os.environ.get(env, "")
    if torch.compiler.is_compiling():  # no memo: dynamo would guard on its contents and recompile when it grows
        return _check_switch(family, raw, env)
    name = _ENV_SEEN.get((env, raw))
    if name is None:
        name = _ENV_SEEN[env, raw] = _check_switch(family, raw, env)
    return name


@contextlib.contextmanager
def use_backend(ops: str | None = None, *, attention: str | None = None) -> Iterator[None]:
    """Force the fused ops' backend (`ops`) and / or attention's (`attention`) inside the block; None leaves a
    family's switch as it is. The previous switches (or the env vars) are back on exit. See the module doc."""
    wanted = {family: _check_switch(family, name, family) for family, name in (("ops", ops), ("attention", attention))
              if name is not None}
    prev = {family: _SWITCH[family] for family in wanted}
    _SWITCH.update(wanted)
    clear_cache()
    try:
        yield
    finally:
        _SWITCH.update(prev)
        clear_cache()


def set_priority(key: tuple[str, str, str, int], names: list[str]) -> None:
    """Install an order for one `PRIORITY` key (a measured one, say) and forget the cached choices."""
    PRIORITY[key] = list(names)
    clear_cache()


# --------------------------------------------------------------------------------------------- selection


def priority_key(op: str, inputs: dict[str, object]) -> tuple[str, str, str, int]:
    """The most specific `PRIORITY` key of a call: (op, device class, dtype of its first float input, bucket)."""
    fam = FAMILIES[_FAMILY_OF[op]]
    tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    dev = device_class(tensors[0]) if tensors else "*"
    floats = [_short(v.dtype) for v in tensors if v.is_floating_point()]
    size = inputs.get(fam.size_input) if fam.size_input else None
    n = size.shape[-2] if isinstance(size, torch.Tensor) and size.dim() >= 2 else 0
    buckets = [b for b in SIZE_BUCKETS if n <= b] if n else [0]
    return op, dev, floats[0] if floats else "*", buckets[0] if buckets else 0


def priority(op: str, inputs: dict[str, object] | None = None) -> list[str]:
    """Backend names in the order `auto` tries them for this call (for the op in general without inputs)."""
    if op not in _FAMILY_OF:
        raise ValueError(f"op must be one of {sorted(_FAMILY_OF)}, got {op!r}")
    op, dev, dt, b = priority_key(op, inputs or {})
    fp16_as_bf16 = "bfloat16" if dt == "float16" else dt  # same kernels, same ranking
    for key in ((op, dev, dt, b), (op, dev, dt, 0), (op, dev, fp16_as_bf16, 0), (op, dev, "*", 0),
                (op, dev.split("-")[0], dt, 0), (op, "*", "*", 0)):
        if key in PRIORITY:
            return list(PRIORITY[key])
    return []


def candidates(op: str, inputs: dict[str, object] | None = None) -> list[Backend]:
    """The registered backends in the order `auto` tries them for `op`."""
    reg = _REGISTRY[_FAMILY_OF[op]]
    return [reg[n] for n in priority(op, inputs) if n in reg]


def _reasons(family: str, name: str, op: str, inputs: dict[str, object]) -> list[str]:
    if name in _BROKEN[family]:
        return [_BROKEN[family][name]]
    if name not in _REGISTRY[family]:
        return ["not registered"]
    return _REGISTRY[family][name].not_supported_reasons(op, inputs)


def _walk(op: str, name: str, inputs: dict[str, object]) -> Backend:
    family = _FAMILY_OF[op]
    fam = FAMILIES[family]
    if name not in fam.groups and name != "auto":
        reasons = _reasons(family, name, op, inputs)
        if reasons:
            raise NotSupportedError(f"{fam.label} {name!r} cannot run {op}: " + "; ".join(reasons))
        return _REGISTRY[family][name]
    order = priority(op, inputs)
    if name in fam.groups:
        group = fam.groups[name]
        order = [n for n in order if n in group] + [n for n in group if n not in order]
    tried = []
    for n in order:
        reasons = _reasons(family, n, op, inputs)
        if not reasons:
            return _REGISTRY[family][n]
        tried.append(f"{n}: {'; '.join(reasons)}")
    raise NotSupportedError(f"no {fam.label} can run {op} ({name}): " + " | ".join(tried))


def _signature(inputs: dict[str, object]) -> tuple:
    """What a backend's reasons may depend on: tensor metadata (the last stride for contiguity), and other
    arguments by value. Keys are left out: each op's callers build `inputs` with the same keys in the same order."""
    sig = []
    for v in inputs.values():
        if isinstance(v, torch.Tensor):
            sig.append((v.shape, v.dtype, v.device, v.stride()[-1:]))
        else:
            sig.append(tuple(v) if isinstance(v, list) else v)
    return tuple(sig)


def select(op: str, inputs: dict[str, object], name: str | None = None) -> Backend:
    """The backend that runs this call under switch `name` (default: the one in force); see the module doc."""
    if op not in _FAMILY_OF:
        raise ValueError(f"op must be one of {sorted(_FAMILY_OF)}, got {op!r}")
    family = _FAMILY_OF[op]
    name = forced(family) if name is None else _check_switch(family, name, FAMILIES[family].label)
    if torch.compiler.is_compiling():
        return _walk(op, name, inputs)
    key = (op, name, _signature(inputs))
    try:
        backend = _CACHE.get(key)
    except TypeError:  # an unhashable argument: dispatch without the cache
        return _walk(op, name, inputs)
    if backend is None:
        _STATS["misses"] += 1
        backend = _CACHE[key] = _walk(op, name, inputs)
    else:
        _STATS["hits"] += 1
    return backend


# --------------------------------------------------------------------------------------------- report


def backend_report(family: str = "ops") -> dict[str, dict[str, dict]]:
    """{op: {backend: {"available": bool, "reasons": [...]}}} for every op and backend name of a family.

    Available means "could run some call of this op on this machine"; per-call reasons (dtype, device of
    the inputs) appear only when a call is dispatched.
    """
    family = family_of(family)
    fam = FAMILIES[family]
    report: dict[str, dict[str, dict]] = {}
    for op in fam.ops:
        report[op] = {}
        for name in fam.names:
            if name in _BROKEN[family] or name not in _REGISTRY[family]:
                reasons = [_BROKEN[family].get(name, "not registered")]
            else:
                b = _REGISTRY[family][name]
                reasons = b.unavailable_reasons() + ([] if b.implements(op) else [f"op {op} not implemented"])
            report[op][name] = {"available": not reasons, "reasons": reasons}
    return report


def switches() -> dict[str, dict[str, str]]:
    """{family: {"switch": the name in force (or the error of a bad env var), "env": its env var}}."""
    out = {}
    for family, fam in FAMILIES.items():
        try:
            switch = forced(family)
        except ValueError as e:
            switch = f"invalid: {e}"
        out[family] = {"switch": switch, "env": fam.env}
    return out
