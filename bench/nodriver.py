"""A CUDA device with no driver behind it: this process looks like a machine with one H200 (nothing runs).

- tensors are FakeTensors on `cuda:0` (made under `torch._subclasses.FakeTensorMode`);
- `torch.cuda`'s queries answer from `H200` (sm_90, 132 SMs, ~141 GB) instead of the driver;
- two native pieces, built once with the host compiler into a cache folder: a CUDA device guard with one stream and
  no events (the autograd engine asks every CUDA node for its stream), registered in-process, and `libnodriver`,
  preloaded (LD_PRELOAD) before torch loads, which answers the two CUDA calls the autograd engine makes behind the
  guard's back (device count 1, primary context active). `run_isolated` re-executes a command with it.

Enough for dynamo, AOTAutograd's joint graph and inductor's lowering and Triton code generation: bench/trace.py
traces the CLI's compiled step with it, bench/triton_sm90a.py records our kernels' launches. (bench/fake_step.py
is the in-process variant for eager graph capture, with the same `H200`.)
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import os
import subprocess
import sys
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
        raise RuntimeError(f"bench.nodriver: building {out.name} failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
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
        raise RuntimeError("bench.nodriver: no device to load a Triton kernel on (compiled, not loaded)")


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
        raise RuntimeError("bench.nodriver: no device to launch a Triton kernel on")


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
    raise RuntimeError("No available kernel (bench.nodriver's mirror of torch's SDPA choice)")


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
        raise RuntimeError("bench.nodriver.fake_cuda needs libnodriver preloaded: run under "
                           "bench.nodriver.run_isolated (or `python -m bench.trace`)")
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


def run_isolated(argv: list[str], timeout: float | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python ARGV` (e.g. `-m bench.trace ...`) in a fresh process with libnodriver
    preloaded: the trace needs a process of its own (it replaces the CUDA device guard for its lifetime)."""
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=isolated_env(env), capture_output=True, text=True,
                          timeout=timeout)
