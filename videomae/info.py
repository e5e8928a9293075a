"""`python -m videomae info`: versions, devices, and which backends can run here and, if not, why.

Every optional module is imported lazily inside a try: a missing or broken one becomes a reason in
the report, never a crash of the command.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import platform
import sys
from pathlib import Path

OK, NO = "yes", "no"


def _version(module: str) -> tuple[str | None, str]:
    """-> (version or None, reason it cannot be imported)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        return None, "not installed" if e.name == module.split(".")[0] else f"import failed: {e}"
    except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
        return None, f"import failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return str(getattr(mod, "__version__", "installed")), ""


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "torch CUDA": torch.version.cuda or "none (CPU build)",
           "cuDNN": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none"}
    for name, module in (("videomae", "videomae"), ("triton", "triton"), ("numpy", "numpy"), ("PyAV", "av"),
                         ("decord", "decord"), ("einops", "einops"), ("safetensors", "safetensors"),
                         ("tensorboard", "tensorboard"), ("transformers", "transformers"), ("timm", "timm")):
        version, why = _version(module)
        out[name] = version or why
    return out


def devices() -> dict:
    import torch

    out = {"cpu cores": os.cpu_count(), "torch threads": torch.get_num_threads(), "cuda": []}
    if not torch.cuda.is_available():
        out["cuda_reason"] = ("torch is a CPU build" if torch.version.cuda is None
                              else "no CUDA device visible (driver missing or CUDA_VISIBLE_DEVICES empty)")
        return out
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out["cuda"].append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                            "memory_gib": round(p.total_memory / 2**30, 1),
                            "bf16": torch.cuda.is_bf16_supported()})
    return out


def _entry(available: bool, detail: str = "", reasons: list[str] | None = None) -> dict:
    return {"available": available, "detail": detail, "reasons": reasons or []}


def triton_status() -> dict:
    import torch

    version, why = _version("triton")
    if version is None:
        return _entry(False, reasons=[f"triton {why} (pip install triton; Linux x86-64/aarch64 wheels)"])
    if torch.cuda.is_available():
        return _entry(True, f"triton {version} on CUDA")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return _entry(True, f"triton {version} in the CPU interpreter (TRITON_INTERPRET=1, for tests only)")
    return _entry(False, f"triton {version}", ["no CUDA device (set TRITON_INTERPRET=1 to run kernels on the "
                                               "CPU interpreter, slowly)"])


def extension_status() -> dict:
    try:
        from videomae import _ext
    except Exception as e:  # noqa: BLE001
        return _entry(False, reasons=[f"videomae._ext failed to import: {type(e).__name__}: {e}"])
    info = _ext.build_info()
    detail = ", ".join(f"{k} {v}" for k, v in info.items()) if info else "no build metadata (not built)"
    ok = _ext.available()
    reasons = [] if ok else [_ext.reason()]
    import torch

    if ok and not torch.cuda.is_available():
        reasons, ok = ["loaded, but no CUDA device to run its kernels on"], False
    return _entry(ok, detail, reasons)


def optional_library(module: str, hint: str, needs_cuda: bool = True) -> dict:
    import torch

    version, why = _version(module)
    if version is None:
        return _entry(False, reasons=[f"{module} {why} ({hint})"])
    if needs_cuda and not torch.cuda.is_available():
        return _entry(False, f"{module} {version}", ["needs a CUDA device"])
    return _entry(True, f"{module} {version}")


def sdpa_status() -> dict:
    import torch

    out = {"math": _entry(True, "reference kernel, any device")}
    if not torch.cuda.is_available():
        why = ["needs a CUDA device"]
        for name in ("flash", "mem_efficient", "cudnn"):
            out[name] = _entry(False, reasons=why)
        out["cpu flash"] = _entry(True, "torch's CPU flash-attention kernel")
        return out
    cuda = torch.backends.cuda
    for name, enabled in (("flash", cuda.flash_sdp_enabled()), ("mem_efficient", cuda.mem_efficient_sdp_enabled()),
                          ("cudnn", getattr(cuda, "cudnn_sdp_enabled", lambda: False)())):
        out[name] = _entry(enabled, "enabled" if enabled else "", [] if enabled else ["disabled in torch.backends"])
    return out


def decoder_status() -> dict:
    """The video decoder backends, each with why it cannot run here (the data package decides, not this file)."""
    from videomae.data.decode import decoder_report

    return decoder_report()


def fused_ops() -> dict:
    """The `ops` family of the one dispatcher: its switch, and per op and backend whether it can run here."""
    try:
        from videomae import dispatch, ops  # noqa: F401 - importing ops registers its backends

        return {**dispatch.switches()["ops"], "report": dispatch.backend_report("ops")}
    except Exception as e:  # noqa: BLE001
        return {"error": f"videomae.ops failed to import: {type(e).__name__}: {e}"}


def attention() -> dict:
    """The `attention` family of the same dispatcher, checked on ViT-B encoder and decoder shapes."""
    try:
        from videomae import attention as attn

        return attn.backend_report()
    except Exception as e:  # noqa: BLE001
        return {"error": f"attention backend report failed: {type(e).__name__}: {e}"}


STEP_REPORT = ("videomae.train.step", "step_report")  # imported only here: `info` must not need the trainer


def fast_path() -> dict:
    """The switches of the training step (precision, compile, fused ops, attention...) and whether each can run."""
    module, name = STEP_REPORT
    try:
        report = getattr(importlib.import_module(module), name)()
    except Exception as e:  # noqa: BLE001 - a broken optional piece must not break `info`
        return {"error": f"no training step report: {module}.{name}: {type(e).__name__}: {e}"}
    report.pop("attention", None)  # shown in its own section
    return {"source": f"{module}.{name}", **report}


def layout() -> dict:
    """Where each kernel family lives: the design's folders (kernels/, csrc/) and the names they have in the
    package (`videomae.kernels` is the top-level kernels/ folder, installed inside the package)."""
    import videomae

    out = {}
    try:
        kernels = importlib.import_module("videomae.kernels")
        out["Triton kernels"] = f"videomae.kernels = {list(kernels.__path__)[0]}"
    except Exception as e:  # noqa: BLE001 - reported, not raised
        out["Triton kernels"] = f"videomae.kernels not importable: {type(e).__name__}: {e}"
    here = Path(videomae.__file__).parent
    ext = next((here / f"_C{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
                if (here / f"_C{suffix}").is_file()), None)  # this interpreter's build, not another stack's
    out["CUDA kernels"] = f"videomae._C = {ext}" if ext else "videomae._C not built (sources: csrc/)"
    out["ops (one module per op)"] = f"videomae.ops = {here / 'ops'}"
    return out


def collect() -> dict:
    return {
        "versions": versions(),
        "devices": devices(),
        "layout": layout(),
        "backends": {
            "triton": triton_status(),
            "compiled extension (videomae._C)": extension_status(),
            "flash-attn": optional_library("flash_attn", "pip install flash-attn --no-build-isolation"),
            "xformers": optional_library("xformers", "pip install xformers"),
            **{f"SDPA {k}": v for k, v in sdpa_status().items()},
            **decoder_status(),
        },
        "fused ops": fused_ops(),
        "attention": attention(),
        "fast path": fast_path(),
    }


# ---------------------------------------------------------------- text


def _line(name: str, entry: dict) -> str:
    mark = OK if entry["available"] else NO
    text = f"  {name:<34} {mark:<4}"
    if entry["detail"]:
        text += f" {entry['detail']}"
    if entry["reasons"]:
        text += ("; " if entry["detail"] else " ") + "; ".join(entry["reasons"])
    return text.rstrip()


def format_report(r: dict) -> str:
    lines = ["videomae environment", "", "versions"]
    lines += [f"  {k:<34} {v}" for k, v in r["versions"].items()]
    d = r["devices"]
    lines += ["", "devices", f"  {'cpu cores':<34} {d['cpu cores']} (torch threads {d['torch threads']})"]
    if d["cuda"]:
        lines += [f"  cuda:{g['index']:<29} {g['name']}, sm {g['capability']}, {g['memory_gib']} GiB, "
                  f"bf16 {OK if g['bf16'] else NO}" for g in d["cuda"]]
    else:
        lines.append(f"  {'cuda':<34} none: {d['cuda_reason']}")
    lines += ["", "layout"] + [f"  {k:<34} {v}" for k, v in r["layout"].items()]
    lines += ["", "backends (can run here?)"]
    lines += [_line(name, entry) for name, entry in r["backends"].items()]
    ops = r["fused ops"]
    lines += ["", "fused ops (videomae.ops; auto picks the first that can run a call, in videomae.dispatch.PRIORITY "
              "order: cuda > triton > torch)"]
    if "error" in ops:
        lines.append(f"  {ops['error']}")
    else:
        lines.append(f"  switch {ops.get('switch')} (env {ops.get('env')})")
        for op, backends in ops["report"].items():
            for name, e in backends.items():
                lines.append(_line(f"{op} / {name}", {"available": e["available"], "detail": "",
                                                      "reasons": e["reasons"]}))
    lines += ["", "attention"]
    a = r["attention"]
    if "error" in a:
        lines.append(f"  {a['error']}")
    elif "backends" in a:
        lines.append(f"  switch {a.get('switch')} (env {a.get('env')}), checked for {a.get('dtype')} on "
                     f"{a.get('device')}; auto picks: " + ", ".join(f"{k} -> {v}" for k, v in a["auto"].items()))
        for name, parts in a["backends"].items():
            ok = all(p["available"] for p in parts.values())
            reasons = sorted({why for p in parts.values() for why in p["reasons"]})
            lines.append(_line(name, {"available": ok, "detail": "", "reasons": reasons}))
    else:
        lines.append(f"  switch {a.get('switch')}")
    fp = r["fast path"]
    lines += ["", f"training step ({fp.get('source', 'unavailable')} defaults; trainer flags --precision, --compile)"]
    if "error" in fp:
        lines.append(f"  {fp['error']}")
    else:
        lines += [f"  {k:<34} {v}" for k, v in fp.get("config", {}).items()]
        lines += [f"  {k + ' here':<34} {v}" for k, v in fp.items() if k not in ("config", "source")]
    return "\n".join(lines)


def main(as_json: bool = False) -> int:
    report = collect()
    if as_json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(format_report(report))
    sys.stdout.flush()
    return 0
