"""Trace what the GPU will compile, on a machine without one: fake CUDA tensors with an H200's properties.

`fake_cuda()` makes this process look like it has one CUDA device with no driver behind it, enough for dynamo,
AOTAutograd's joint graph and inductor's lowering and Triton code generation (nothing runs on a device):
- tensors are FakeTensors on `cuda:0` (made under `torch._subclasses.FakeTensorMode`);
- `torch.cuda`'s queries answer from `H200` (sm_90, 132 SMs, ~141 GB) instead of the driver;
- two native pieces, built once with the host compiler into a cache folder: a CUDA device guard with one stream and
  no events (the autograd engine asks every CUDA node for its stream), registered in-process, and `libnodriver`,
  preloaded (LD_PRELOAD) before torch loads, which answers the two CUDA calls the autograd engine makes behind the
  guard's back (device count 1, primary context active). `run_isolated` re-executes a command with it.

`trace_step` traces `videomae pretrain`'s (or `finetune`'s) compiled objective exactly as the CLI's Trainer builds
it (`StepConfig` defaults resolved for CUDA, `train.step.build_objective` of the command's loss), with the graphs, the
dispatch decisions and inductor's Triton kernels recorded (`Trace`). Used by tests/test_fake_cuda_trace.py and
bench/triton_sm90a.py.

    python -m bench.trace --ops-backend triton --depth 12 --json out.json    # re-executes itself with the preload
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """What `torch.cuda.get_device_properties` reports for the GPU traced for (attribute names are torch's)."""

    name: str
    major: int
    minor: int
    multi_processor_count: int
    total_memory: int
    L2_cache_size: int
    regs_per_multiprocessor: int = 65536
    max_threads_per_multi_processor: int = 2048
    max_threads_per_block: int = 1024
    warp_size: int = 32
    shared_memory_per_block: int = 48 * 1024
    shared_memory_per_block_optin: int = 227 * 1024
    shared_memory_per_multiprocessor: int = 228 * 1024
    clock_rate: int = 1_980_000  # kHz
    memory_clock_rate: int = 3_201_000  # kHz
    memory_bus_width: int = 6144
    is_integrated: bool = False
    is_multi_gpu_board: bool = False
    gcnArchName: str = "NVIDIA H200"  # noqa: N815 (torch's name)
    uuid: str = "00000000-0000-0000-0000-000000000000"
    pci_bus_id: int = 0
    pci_device_id: int = 0
    pci_domain_id: int = 0


# As the H200 machines of this workplace report it: 132 SMs, 143771 MiB, 60 MB of L2 (device/KINDS.md).
H200 = DeviceSpec("NVIDIA H200", 9, 0, multi_processor_count=132, total_memory=143771 * 2**20,
                  L2_cache_size=60 * 2**20)


# --------------------------------------------------------------------------------------------- native pieces

_SHIM_C = r"""
/* Preloaded before torch: the two CUDA calls the autograd engine makes without going through the device guard. */
int cudaGetDeviceCount(int *count) { *count = 1; return 0; }
int cuDevicePrimaryCtxGetState(int dev, unsigned int *flags, int *active) {
  (void)dev; *flags = 0; *active = 1; return 0;
}
"""

_GUARD_CC = r"""
// The CUDA device guard of a process with no driver: device 0, its default stream, events that do nothing.
// Registered after torch's own (which loads with torch), so it replaces it for the rest of the process.
#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace {
using c10::Device;
using c10::DeviceType;
using c10::Stream;

struct NoDriverCudaGuard final : public c10::impl::DeviceGuardImplInterface {
  static Device dev() { return Device(DeviceType::CUDA, 0); }
  DeviceType type() const override { return DeviceType::CUDA; }
  Device exchangeDevice(Device) const override { return dev(); }
  Device getDevice() const override { return dev(); }
  void setDevice(Device) const override {}
  void uncheckedSetDevice(Device) const noexcept override {}
  Stream getStream(Device) const noexcept override { return Stream(Stream::DEFAULT, dev()); }
  Stream getDefaultStream(Device) const override { return Stream(Stream::DEFAULT, dev()); }
  Stream exchangeStream(Stream) const noexcept override { return Stream(Stream::DEFAULT, dev()); }
  c10::DeviceIndex deviceCount() const noexcept override { return 1; }
  void record(void**, const Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
};
}  // namespace

extern "C" void videomae_register_nodriver_guard() {
  static c10::impl::DeviceGuardImplRegistrar registrar(DeviceType::CUDA, new NoDriverCudaGuard());
}
"""


def _cache_dir() -> Path:
    key = hashlib.sha256((_SHIM_C + _GUARD_CC + torch.__version__ + sys.version).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "videomae-trace" / f"torch-{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"


def _compile(cmd: list[str], out: Path) -> None:
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    res = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"bench.trace: building {out.name} failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    tmp.replace(out)  # atomic: concurrent builders never see half a library


def build_native() -> tuple[Path, Path]:
    """(libnodriver.so to preload, the guard library) for this torch, built on first use (~20 s, then cached)."""
    d = _cache_dir()
    shim, guard = d / "libnodriver.so", d / "libnodriver_guard.so"
    if shim.exists() and guard.exists():
        return shim, guard
    d.mkdir(parents=True, exist_ok=True)
    cudart = f"libcudart.so.{(torch.version.cuda or '13').split('.')[0]}"
    # The version node makes the preloaded symbol match libc10_cuda's versioned reference (cudaGetDeviceCount@...);
    # the soname answers the dlopen("libcuda.so.1") behind cuDevicePrimaryCtxGetState.
    (d / "nodriver.map").write_text(f"{cudart} {{ global: cudaGetDeviceCount; cuDevicePrimaryCtxGetState; "
                                    "local: *; };\n")
    (d / "nodriver.c").write_text(_SHIM_C)
    (d / "nodriver_guard.cc").write_text(_GUARD_CC)
    cc = os.environ.get("CC", "cc")
    _compile([cc, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", f"-Wl,--version-script={d / 'nodriver.map'}",
              str(d / "nodriver.c")], shim)
    include = Path(torch.__file__).parent / "include"
    lib = Path(torch.__file__).parent / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    _compile([os.environ.get("CXX", "c++"), "-shared", "-fPIC", "-O1", "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
              f"-I{include}", str(d / "nodriver_guard.cc"), f"-L{lib}", "-lc10", f"-Wl,-rpath,{lib}"], guard)
    return shim, guard


def preloaded() -> bool:
    """Whether this process was started with libnodriver preloaded (see `run_isolated`)."""
    return any("libnodriver.so" in p for p in os.environ.get("LD_PRELOAD", "").split(":"))


def isolated_env(env: dict | None = None) -> dict:
    """The environment for a process that traces: libnodriver preloaded, this tree first on the path."""
    shim, _ = build_native()
    env = dict(os.environ if env is None else env)
    env["LD_PRELOAD"] = ":".join(filter(None, [str(shim), env.get("LD_PRELOAD", "")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)  # inductor's Triton code is generated for the GPU, not the interpreter
    return env


# --------------------------------------------------------------------------------------------- fake CUDA

_GUARD_LOADED: list[ctypes.CDLL] = []


def _fake_tensor(real_tensor):
    """`torch.tensor(data, device='cuda')` under a FakeTensorMode: a fake CUDA tensor of data's shape and dtype
    (torch's own copies the data to the device for real, which needs a driver)."""

    def tensor(data, *args, device=None, **kwargs):
        fake_mode = torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE)
        if device is None or fake_mode is None or torch.device(device).type != "cuda":
            return real_tensor(data, *args, device=device, **kwargs)
        host = real_tensor(data, dtype=kwargs.get("dtype"))
        return torch.empty(host.shape, dtype=host.dtype, device=device,
                           requires_grad=kwargs.get("requires_grad", False))

    return tensor


def _cuda_answers(spec: DeviceSpec) -> dict:
    """torch.cuda function name -> what it answers on the traced machine."""
    return {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "_exchange_device": lambda device: 0,
        "_maybe_exchange_device": lambda device: 0,
        "_lazy_init": lambda: None,
        "is_initialized": lambda: True,
        "get_device_capability": lambda device=None: (spec.major, spec.minor),
        "get_device_properties": lambda device=None: spec,
        "get_device_name": lambda device=None: spec.name,
        "is_bf16_supported": lambda *a, **k: True,
        "get_rng_state": lambda device="cuda": torch.zeros(16, dtype=torch.uint8),
        "set_rng_state": lambda new_state, device="cuda": None,
        "is_current_stream_capturing": lambda: False,
        "synchronize": lambda device=None: None,
    }


class _NoDeviceUtils:
    """Triton's driver utilities where no device is: properties from the spec, nothing loads."""

    def __init__(self, spec: DeviceSpec):
        self.spec = spec

    def get_device_properties(self, device) -> dict:
        s = self.spec
        return {"max_shared_mem": s.shared_memory_per_block_optin, "multiprocessor_count": s.multi_processor_count,
                "max_num_regs": s.regs_per_multiprocessor, "warpSize": s.warp_size, "sm_clock_rate": s.clock_rate,
                "mem_clock_rate": s.memory_clock_rate, "mem_bus_width": s.memory_bus_width}

    def load_binary(self, *args, **kwargs):
        raise RuntimeError("bench.trace: no device to load a Triton kernel on (compiled, not loaded)")


class _NoDeviceDriver:
    """Triton's active driver for `spec` when no device is: the target to compile for, and nothing else."""

    def __init__(self, spec: DeviceSpec):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", spec.major * 10 + spec.minor, spec.warp_size)
        self.utils = _NoDeviceUtils(spec)

    def is_active(self) -> bool:
        return True

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device) -> None:
        pass

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_device_interface(self):
        return torch.cuda

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cuda", 0)

    def launcher_cls(self, *args, **kwargs):
        raise RuntimeError("bench.trace: no device to launch a Triton kernel on")


@torch._dynamo.assume_constant_result
def _sdp_flags() -> tuple:
    """(priority order, flash, cudnn, efficient, math enabled): read when traced, as sdpa_kernel has set them."""
    c = torch._C
    return (tuple(int(b) for b in c._get_sdp_priority_order()), c._get_flash_sdp_enabled(),
            c._get_cudnn_sdp_enabled(), c._get_mem_efficient_sdp_enabled(), c._get_math_sdp_enabled())


def _sdp_choice(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
                enable_gqa=False) -> int:
    """aten::_fused_sdp_choice for the traced GPU (torch's CUDA one asks the driver): the first backend of torch's
    priority order that is enabled (sdpa_kernel) and takes these inputs by its documented limits on sm_90."""
    from torch.nn.attention import SDPBackend

    half = query.dtype in (torch.float16, torch.bfloat16)
    d = query.shape[-1]
    order, flash, cudnn, efficient, math = _sdp_flags()
    usable = {
        int(SDPBackend.FLASH_ATTENTION): flash and half and d <= 256 and d % 8 == 0,
        int(SDPBackend.CUDNN_ATTENTION): cudnn and half and d <= 128 and d % 8 == 0,
        int(SDPBackend.EFFICIENT_ATTENTION): efficient and d % 8 == 0,
        int(SDPBackend.MATH): math,
    }
    for backend in order:
        if usable.get(int(backend)):
            return int(backend)
    return int(SDPBackend.ERROR)


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention for CUDA tensors as torch's composite computes it (which asks the driver
    for the choice): the backend `_sdp_choice` picks, called as the composite calls it. AOTAutograd's graphs get
    the same aten ops as on the GPU; dynamo's graph names the chosen op instead of F.scaled_dot_product_attention."""
    from torch.nn.attention import SDPBackend

    if query.device.type != "cuda" or attn_mask is not None or enable_gqa:
        return _REAL_SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                          scale=scale, enable_gqa=enable_gqa)
    choice = _sdp_choice(query, key, value, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    aten = torch.ops.aten
    if choice == int(SDPBackend.CUDNN_ATTENTION):
        return aten._scaled_dot_product_cudnn_attention(query, key, value, None, lse, dropout_p, is_causal, False,
                                                        scale=scale)[0]
    if choice == int(SDPBackend.FLASH_ATTENTION):
        return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                        scale=scale)[0]
    if choice == int(SDPBackend.EFFICIENT_ATTENTION):
        return aten._scaled_dot_product_efficient_attention(query, key, value, None, lse, dropout_p, is_causal,
                                                            scale=scale)[0]
    if choice == int(SDPBackend.MATH):
        return aten._scaled_dot_product_attention_math(query, key, value, None, dropout_p, is_causal, None,
                                                       scale=scale)[0]
    raise RuntimeError("No available kernel (bench.trace's mirror of torch's SDPA choice)")


_REAL_SDPA = torch.nn.functional.scaled_dot_product_attention


class _FactoriesOnCpu(torch.utils._python_dispatch.TorchDispatchMode):
    """Tensors that would be made on the GPU are made on the CPU: inductor's constant folder computes the
    uniform value of a `full` / `zeros` for real, with the same result on either device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = torch.device("cpu")
        return func(*args, **kwargs)


def _select_conv_backend(real):
    """torch._C._select_conv_backend for fake CUDA inputs: cuDNN, as torch picks on sm_90 for the clip's conv3d
    (torch 2.11 asks the driver whether cuDNN takes bf16; newer torch does not)."""

    def select(input, weight, *args, **kwargs):  # noqa: A002  (torch's argument name)
        if input.device.type == "cuda" and torch.backends.cudnn.enabled and not kwargs.get("transposed"):
            return torch._C._ConvBackend.Cudnn
        return real(input, weight, *args, **kwargs)

    return select


def _fold_on_cpu(deduce):
    def deduce_value(self, node):
        with _FactoriesOnCpu():
            return deduce(self, node)

    return deduce_value


@contextlib.contextmanager
def fake_cuda(spec: DeviceSpec = H200) -> Iterator[torch._subclasses.FakeTensorMode]:
    """This process as a machine with one `spec` GPU and no driver; yields the FakeTensorMode to make tensors in.

    Needs libnodriver preloaded (`run_isolated`). Inductor compiles in this process (compile_threads=1: workers
    would not see the patches) and lowers the backward with the forward (nothing calls backward here)."""
    if not preloaded():
        raise RuntimeError("bench.trace.fake_cuda needs libnodriver preloaded: run under bench.trace.run_isolated "
                           "(or `python -m bench.trace`)")
    if not _GUARD_LOADED:
        _, guard = build_native()
        lib = ctypes.CDLL(str(guard))
        lib.videomae_register_nodriver_guard()
        _GUARD_LOADED.append(lib)
    import torch._dynamo.device_interface as di
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    import torch._inductor.fx_passes.joint_graph as joint_graph

    answers = _cuda_answers(spec)
    patches = [mock.patch(f"torch.cuda.{name}", fn) for name, fn in answers.items()]
    # The device interface inductor asks holds the original functions: patch those that are torch.cuda's.
    for cls in (di.CudaInterface, di.CudaInterface.Worker):
        for attr, value in list(vars(cls).items()):
            fn = value.__func__ if isinstance(value, staticmethod) else None
            for name, fake in answers.items():
                if fn is not None and fn is getattr(torch.cuda, name) or attr in ("get_device_properties",
                                                                                 "current_device") and fn:
                    patches.append(mock.patch.object(cls, attr, staticmethod(answers.get(attr, fake))))
                    break
    patches += [
        mock.patch("torch.accelerator.is_available", lambda: False),  # no stream state in dynamo's trace
        # torch 2.11 allocates a real CUDA tensor for the first fake one when torch.cuda says it is available
        # (newer torch asks torch.accelerator); the no-driver guard stands in for that context.
        mock.patch("torch._subclasses.fake_tensor.init_gpu_context", lambda device: None),
        mock.patch("torch._C._select_conv_backend", _select_conv_backend(torch._C._select_conv_backend)),
        mock.patch("torch.tensor", _fake_tensor(torch.tensor)),
        mock.patch("torch.nn.functional.scaled_dot_product_attention", _sdpa),
        mock.patch.object(joint_graph.UniformValueConstantFolder, "_deduce_value",
                          _fold_on_cpu(joint_graph.UniformValueConstantFolder._deduce_value)),
        mock.patch("torch._inductor.runtime.triton_helpers.set_driver_to_gpu", lambda: None),  # keep ours
        mock.patch.object(inductor_config, "compile_threads", 1),
        mock.patch.object(functorch_config, "force_non_lazy_backward_lowering", True),
        # The same cubins; the other launcher keeps each kernel's PTX, which bench/triton_sm90a.py reads.
        mock.patch.object(inductor_config, "use_static_cuda_launcher", False),
    ]
    from triton.runtime.driver import driver

    previous = driver._active
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        di.caching_worker_device_properties.pop("cuda", None)
        driver.set_active(_NoDeviceDriver(spec))
        try:
            yield torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True)
        finally:
            driver._active = previous


# --------------------------------------------------------------------------------------------- recording


class NotRun(Exception):  # noqa: N818 (a signal, not an error)
    """Raised where compiled code would start running on the device: everything before it was traced."""


@dataclasses.dataclass
class Kernel:
    """One Triton kernel inductor generated and compiled for the traced device (one entry per config)."""

    name: str
    source: str
    ptx: str | None
    shared: int | None
    num_warps: int | None
    num_stages: int | None
    graph: str  # forward / backward / inference
    num_gb: float | None = None  # inductor's own estimate of the bytes one launch reads and writes (traffic=True)


@dataclasses.dataclass
class Trace:
    """What `torch.compile` made of one objective: the dynamo graph (fullgraph), AOTAutograd's forward and
    backward graphs, and inductor's kernels; `ops` names every `videomae::` / attention op in the dynamo graph."""

    dynamo_graphs: list = dataclasses.field(default_factory=list)  # fx.GraphModule
    aot_graphs: dict = dataclasses.field(default_factory=dict)  # "forward"/"backward" -> fx.GraphModule
    kernels: list[Kernel] = dataclasses.field(default_factory=list)
    wrappers: list[str] = dataclasses.field(default_factory=list)  # inductor's generated Python (traffic=True)
    ops: list[str] = dataclasses.field(default_factory=list)
    ran: bool = False  # True: compiled code was reached (and stopped) after everything compiled

    def summary(self) -> dict:
        return {"dynamo_graphs": len(self.dynamo_graphs), "aot_graphs": sorted(self.aot_graphs),
                "aot_nodes": {k: len(g.graph.nodes) for k, g in self.aot_graphs.items()},
                "kernels": len(self.kernels), "ops": self.ops, "reached_run": self.ran}

    def traffic(self) -> dict:
        """GB one step of inductor's own kernels reads and writes: each kernel's `num_gb` (inductor's estimate,
        its `benchmark_kernel` figure) times its launches in the generated wrappers (12 encoder blocks launch the
        same kernel 12 times), per graph and per kind (`per`sistent / `red`uction / `poi`ntwise)."""
        launches: dict[str, int] = {}
        for code in self.wrappers:
            for name in re.findall(r"\b(triton_\w+)\.run\(", code):
                launches[name] = launches.get(name, 0) + 1
        gb: dict[str, float] = {}
        seen = set()
        for k in self.kernels:
            if k.name in seen or k.num_gb is None:  # one entry per config; every config moves the same bytes
                continue
            seen.add(k.name)
            n = launches.get(k.name, 0)
            for key in (k.graph, k.name.split("_")[1]):
                gb[key] = gb.get(key, 0.0) + k.num_gb * n
        return {"launches": sum(launches.values()), "kernels": len(seen),
                "gb": {k: round(v, 3) for k, v in sorted(gb.items())},
                "total_gb": round(sum(v for k, v in gb.items() if k in ("forward", "backward", "inference")), 3)}


def _graph_ops(gm) -> list[str]:
    names = set()
    for node in gm.graph.nodes:
        if node.op == "call_function":
            name = str(getattr(node.target, "__name__", node.target))
            qual = str(node.target)
            if "videomae" in qual or "attention" in qual or "sdpa" in qual:
                names.add(qual if "videomae" in qual else name)
    return sorted(names)


@contextlib.contextmanager
def recording(trace: Trace, traffic: bool = False) -> Iterator[Trace]:
    """Record into `trace` what the next `torch.compile(..., backend="inductor")` calls compile; stop with
    `NotRun` where the compiled code would run. `traffic`: also each kernel's bytes (inductor's estimate) and the
    generated wrappers that launch them (caches off: a cache hit would skip the code generation recorded)."""
    import torch._inductor.compile_fx as cfx
    import torch._inductor.config as inductor_config
    from torch._inductor.output_code import CompiledFxGraph
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    real_compile_fx, real_inner = cfx.compile_fx, cfx.compile_fx_inner

    def inner(gm, example_inputs, **kwargs):
        kind = "backward" if kwargs.get("is_backward") else "forward" if kwargs.get("is_inference") is False \
            else "inference"
        trace.aot_graphs[kind] = gm
        trace.current = kind
        return real_inner(gm, example_inputs, **kwargs)

    def compile_fx(gm, example_inputs, *args, **kwargs):
        trace.dynamo_graphs.append(gm)
        trace.ops = sorted(set(trace.ops) | set(_graph_ops(gm)))
        kwargs.setdefault("inner_compile", inner)
        return real_compile_fx(gm, example_inputs, *args, **kwargs)

    def make_launchers(self):  # compiled for the target; loading needs the device: record instead
        for result in self.compile_results:
            k = result.kernel
            asm = getattr(k, "asm", None) or {}
            meta = getattr(k, "metadata", None)
            trace.kernels.append(Kernel(
                name=self.fn.__name__, source=self.fn.src if hasattr(self.fn, "src") else "",
                ptx=asm.get("ptx"), shared=getattr(meta, "shared", None),
                num_warps=getattr(result.config, "num_warps", None), num_stages=getattr(result.config, "num_stages",
                                                                                      None),
                graph=getattr(trace, "current", "?"), num_gb=self.inductor_meta.get("kernel_num_gb")))

    def run(self, inputs):
        trace.ran = True
        raise NotRun("compiled code reached: it would run on the device here")

    real_init = CompiledFxGraph.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        trace.wrappers.append(self.source_code)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(cfx, "compile_fx", compile_fx))
        stack.enter_context(mock.patch.object(CachingAutotuner, "_make_launchers", make_launchers))
        stack.enter_context(mock.patch.object(CompiledFxGraph, "__call__", run))
        if traffic:
            stack.enter_context(inductor_config.patch(benchmark_kernel=True, force_disable_caches=True))
            stack.enter_context(mock.patch.object(CompiledFxGraph, "__init__", init))
        yield trace


# --------------------------------------------------------------------------------------------- the CLI's step


def cli_args(command: str, argv: list[str]):
    """`videomae <command>`'s parsed flags (its own parser: the CLI's defaults, nothing re-typed here)."""
    import importlib

    mod = importlib.import_module(f"videomae.commands.{command}")
    parser = argparse.ArgumentParser(prog=f"videomae {command}")
    mod.add_arguments(parser)
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Step:
    """The step to trace: the CLI's command and flags; `depth` overrides the encoder depth (see the test)."""

    command: str = "pretrain"  # or finetune
    batch: int = 32
    frames: int = 16
    size: int = 224
    ratio: float = 0.9
    ops_backend: str = "auto"
    attention: str = "auto"
    v2: bool = False  # dual masking: the decoder's running-cell mask, the loss over `scored`
    clip_dtype: str = "uint8"  # what `prepare` feeds (DeviceFeed): uint8 clips, normalized inside the ops
    depth: int | None = None
    decoder_depth: int | None = None

    def argv(self) -> list[str]:
        argv = ["--batch_size", str(self.batch), "--num_frames", str(self.frames), "--input_size", str(self.size),
                "--ops_backend", self.ops_backend, "--attention", self.attention]
        if self.command == "pretrain":
            argv += ["--mask_ratio", str(self.ratio)]
            if self.v2:
                argv += ["--decoder_mask_type", "run_cell"]
            if self.decoder_depth is not None:
                argv += ["--decoder_depth", str(self.decoder_depth)]
        else:
            argv += ["--compile"]  # fine-tuning compiles only when asked
        return argv


NUM_CLASSES = 400  # fine-tuning's head (Kinetics-400)


def _inputs(step: Step, model, mode, args) -> tuple:
    """The fake CUDA batch the CLI's `prepare` hands its objective: pretraining (clips, TokenIds), the masks made
    on the CPU as the collate makes them; fine-tuning (float clips, target): soft targets [B, classes] under
    mixup/cutmix (the CLI's defaults), else labels [B]."""
    from videomae.masking import running_cell_mask, token_ids, tube_mask

    dtype = {"uint8": torch.uint8, "float32": torch.float32}[step.clip_dtype]
    shape = (step.batch, 3, step.frames, step.size, step.size)
    if step.command != "pretrain":
        mixing = args.mixup > 0 or args.cutmix > 0
        with mode:
            clips = torch.empty(shape, dtype=torch.float32, device="cuda")
            target = (torch.empty(step.batch, NUM_CLASSES, device="cuda") if mixing
                      else torch.empty(step.batch, dtype=torch.int64, device="cuda"))
        return clips, target
    grid = model.encoder.patch_embed.grid(shape)
    mask = tube_mask(step.batch, grid, step.ratio)
    decode = running_cell_mask(step.batch, grid, 0.5) if step.v2 else None
    ids = token_ids(mask, decode)
    with mode:
        videos = torch.empty(shape, dtype=dtype, device="cuda")
        fake = type(ids)(*(torch.empty(t.shape, dtype=t.dtype, device="cuda") if isinstance(t, torch.Tensor) else t
                           for t in ids))  # None and validated_for kept
    return videos, fake


def cli_step(step: Step, mode, compile: bool = True):
    """Inside `fake_cuda()`: the CLI's objective for `step` on fake CUDA tensors -> (config, precision, call), where
    `call()` runs the objective once (forward and loss -> the scalar loss), as the CLI's `Trainer` builds it
    (`train.step.build_objective` of the command's loss). `compile=False` keeps the CLI's every other switch and
    runs eagerly (bench/triton_sm90a.py records the kernels launched that way)."""
    from videomae.train import step as train

    args = cli_args(step.command, step.argv())
    device = torch.device("cuda", 0)
    config = train.StepConfig.from_args(args).resolve(device, pretraining=step.command == "pretrain")
    if not compile:
        config = config.replace(compile=False)
    model = build_model(step, args)
    with mode:
        model = model.to_empty(device=device)
    train.apply_config(model, config)
    precision = train.Precision(config.precision, device)
    batch = _inputs(step, model, mode, args)
    if step.command == "pretrain":
        from videomae.train.pretrain import pretrain_loss as loss
    else:
        from videomae.train.finetune import classification_loss

        loss = classification_loss(args.smoothing, args.mixup > 0 or args.cutmix > 0)
    objective = train.build_objective(model, config, loss)
    return config, precision, lambda: objective(batch)


def trace_step(step: Step, spec: DeviceSpec = H200, traffic: bool = False) -> Trace:
    """Trace the objective the CLI compiles for `step` on a `spec` GPU; returns what was compiled (`traffic`:
    with inductor's byte estimates, `Trace.traffic()`)."""
    from videomae.train.step import ops_context

    trace = Trace()
    with fake_cuda(spec) as mode:
        config, precision, call = cli_step(step, mode)
        trace.config = config.as_dict()
        with recording(trace, traffic), precision.autocast(), ops_context(config):
            try:
                call()
            except NotRun:
                pass
    return trace


def build_model(step: Step, args) -> torch.nn.Module:
    """The model exactly as the CLI builds it from `args` (on the CPU), the encoder depth replaced if asked."""
    import importlib

    module = importlib.import_module("videomae.train.pretrain" if step.command == "pretrain"
                                     else "videomae.train.classifier")
    build = module.build_model if step.command == "pretrain" else lambda a: module.build_classifier(a, NUM_CLASSES)
    if step.depth is None:
        return build(args)
    from videomae import registry

    real = registry.create_model

    def create_model(name, **kwargs):
        return real(name, **kwargs, **{"encoder_depth" if step.command == "pretrain" else "depth": step.depth})

    # The CLI reaches registry.create_model through its builders (looked up when called); a module that bound the
    # name at import is patched too.
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(registry, "create_model", create_model))
        if hasattr(module, "create_model"):
            stack.enter_context(mock.patch.object(module, "create_model", create_model))
        return build(args)


# --------------------------------------------------------------------------------------------- command line


def run_isolated(argv: list[str], timeout: float | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m bench.trace ARGV` (or another module's command line) in a fresh process with libnodriver
    preloaded: the trace needs a process of its own (it replaces the CUDA device guard for its lifetime)."""
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=isolated_env(env), capture_output=True, text=True,
                          timeout=timeout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Trace the CLI's compiled step for an H200 without a GPU.")
    ap.add_argument("--command", default="pretrain", choices=("pretrain", "finetune"))
    ap.add_argument("--ops-backend", default="auto", choices=("auto", "cuda", "triton", "torch"))
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--depth", type=int, default=None, help="encoder depth (default: the model's, 12 for ViT-B)")
    ap.add_argument("--v2", action="store_true", help="dual masking (running-cell decoder mask)")
    ap.add_argument("--clip-dtype", default="uint8", choices=("uint8", "float32"))
    ap.add_argument("--json", default=None, help="write the summary (and the kernels, with --kernels) here")
    ap.add_argument("--kernels", action="store_true", help="include inductor's kernels (source, PTX) in --json")
    ap.add_argument("--traffic", action="store_true", help="inductor's estimate of its kernels' bytes per step")
    args = ap.parse_args(argv)
    if not preloaded():  # re-run with the preload: it must be in place before torch loads
        res = run_isolated(["-m", "bench.trace", *(sys.argv[1:] if argv is None else argv)])
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.returncode
    step = Step(command=args.command, batch=args.batch, ops_backend=args.ops_backend, attention=args.attention,
                v2=args.v2, clip_dtype=args.clip_dtype, depth=args.depth)
    t0 = time.monotonic()
    trace = trace_step(step, traffic=args.traffic)
    out = {"step": dataclasses.asdict(step), "config": trace.config, **trace.summary(),
           **({"traffic": trace.traffic()} if args.traffic else {}),
           "seconds": round(time.monotonic() - t0, 1), "torch": torch.__version__}
    print(json.dumps(out))
    if args.json:
        if args.kernels:
            out["kernel_list"] = [dataclasses.asdict(k) for k in trace.kernels]
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
