"""Build script: the pure-Python package plus, when a CUDA toolkit and a CUDA-enabled torch are present (a GPU is
not needed), the `videomae._C` extension: the CUDA kernels of csrc/, implementing torch.ops.videomae.*_cuda* (whose
schemas videomae/ops/cuda_backend.py defines from videomae.ops.library.SCHEMAS).

Install with `pip install --no-build-isolation .` so that the build sees the installed torch. Environment:
  TORCH_CUDA_ARCH_LIST="8.0;9.0"  archs to build; default sm_80 and sm_90, those the installed nvcc supports
  MAX_JOBS=2                      parallel compile jobs (ninja)
  VIDEOMAE_SKIP_CUDA_BUILD=1      pure-Python install
  VIDEOMAE_FORCE_CUDA=1           no toolkit / CPU-only torch is an error instead of a pure-Python install
The build writes its record (archs, torch, CUDA and nvcc versions) next to the extension, named after the
extension's suffix (videomae/_build_info.cpython-312-x86_64-linux-gnu.json beside _C.cpython-312-...so), so that
builds for other Pythons in one tree keep their own.
"""

import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = ("8.0", "9.0")  # A100, H100/H200

# The Triton kernels live in the top-level kernels/ folder (the design's layout) and install inside the package as
# videomae.kernels; never as a top-level `kernels` module (an unrelated PyPI package owns that name).
packages = find_packages(include=["videomae", "videomae.*"]) + ["videomae.kernels"]
package_dir = {"videomae.kernels": "kernels"}


def log(msg):
    print(f"videomae setup: {msg}", file=sys.stderr, flush=True)


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class NoCudaBuild(Exception):
    """Why videomae._C cannot be built here."""


def find_cuda_home():
    """The toolkit root: CUDA_HOME / CUDA_PATH, else where nvcc lives, else /usr/local/cuda.

    Unlike torch's own lookup this skips an `nvcc` on PATH that is a wrapper script outside the toolkit
    (e.g. /usr/local/bin/nvcc exec'ing /usr/local/cuda-13.0/bin/nvcc), which has no include/ beside it.
    """
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    candidates += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for home in filter(None, candidates):
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and os.path.exists(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            return home
    return None


def nvcc_info(cuda_home):
    """-> (nvcc version, archs it can compile such as '9.0')."""
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if not os.path.exists(nvcc):
        raise NoCudaBuild(f"no nvcc at {nvcc}")
    text = subprocess.check_output([nvcc, "--version"], text=True)
    match = re.search(r"release (\d+)\.(\d+), V([\d.]+)", text)
    if match is None:
        raise NoCudaBuild(f"cannot parse `nvcc --version`: {text!r}")
    try:
        listed = subprocess.check_output([nvcc, "--list-gpu-arch"], text=True, stderr=subprocess.DEVNULL).split()
        archs = {f"{int(a[8:]) // 10}.{int(a[8:]) % 10}" for a in listed if re.fullmatch(r"compute_\d+", a)}
    except (OSError, subprocess.CalledProcessError):  # nvcc before 11.0: no --list-gpu-arch
        archs = set(DEFAULT_ARCHS) if int(match.group(1)) >= 11 else set()
    return match.group(3), archs


def arch_list(supported):
    """TORCH_CUDA_ARCH_LIST as given, else the default archs this nvcc supports; exported for torch's builder."""
    given = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if given:
        return given
    archs = [a for a in DEFAULT_ARCHS if a in supported]
    if not archs:
        raise NoCudaBuild(f"nvcc supports none of the default archs {DEFAULT_ARCHS}; set TORCH_CUDA_ARCH_LIST")
    value = ";".join(archs)
    os.environ["TORCH_CUDA_ARCH_LIST"] = value  # without a GPU, torch's default would be empty
    return value


def cuda_extension():
    """-> (ext_modules, cmdclass): videomae._C when it can be built, else nothing, with one line saying why."""
    if env_flag("VIDEOMAE_SKIP_CUDA_BUILD"):
        log("VIDEOMAE_SKIP_CUDA_BUILD=1: skipping the CUDA extension videomae._C (pure-Python install)")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension

        if torch.version.cuda is None:
            raise NoCudaBuild(f"torch {torch.__version__} is built without CUDA")
        cuda_home = find_cuda_home()
        if cuda_home is None:
            raise NoCudaBuild("no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)")
        os.environ["CUDA_HOME"] = cpp_extension.CUDA_HOME = cuda_home  # torch's builder reads both
        nvcc_version, supported = nvcc_info(cuda_home)
        if nvcc_version.split(".")[0] != torch.version.cuda.split(".")[0]:
            raise NoCudaBuild(f"nvcc {nvcc_version} and torch's CUDA {torch.version.cuda} differ in major version")
        archs = arch_list(supported)
    except (ImportError, NoCudaBuild, OSError, subprocess.CalledProcessError) as e:
        reason = f"no torch at build time ({e}; use --no-build-isolation)" if isinstance(e, ImportError) else str(e)
        if env_flag("VIDEOMAE_FORCE_CUDA"):
            raise RuntimeError(f"VIDEOMAE_FORCE_CUDA=1 but videomae._C cannot be built: {reason}") from e
        log(f"{reason}: skipping the CUDA extension videomae._C (pure-Python install)")
        return [], {}

    info = {
        "archs": archs,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nvcc": nvcc_version,
        "cuda_home": cuda_home,
        "max_jobs": os.environ.get("MAX_JOBS"),
    }

    class BuildExtension(cpp_extension.BuildExtension):
        def run(self):
            super().run()
            info["built_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            so = self.get_ext_fullpath("videomae._C")
            suffix = os.path.basename(so)[len("_C"):].removesuffix(".so")  # .cpython-312-x86_64-linux-gnu
            path = os.path.join(os.path.dirname(so), f"_build_info{suffix}.json")
            with open(path, "w") as f:
                json.dump(info, f, indent=2)

    # Headers the toolkit lacks (cuBLAS & co. when only the CUDA runtime is installed) come from the nvidia-* wheels,
    # searched after the toolkit's own so that they never shadow it.
    site = os.path.dirname(os.path.dirname(torch.__file__))
    extra = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    cxx_after = [flag for d in extra for flag in ("-idirafter", d)]
    ext = cpp_extension.CUDAExtension(
        name="videomae._C",
        sources=sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*.cu")),
        depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/*.cuh") + glob.glob("csrc/emu/*.h")),  # sdist, rebuilds
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={
            "cxx": ["-O3", "-g0", *cxx_after],  # no debug info: a third less compile time
            "nvcc": ["-O3", "-lineinfo"],  # line info: compute-sanitizer reports source lines
        },
    )
    log(f"building videomae._C for TORCH_CUDA_ARCH_LIST={archs} with nvcc {nvcc_version}, torch {torch.__version__}")
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extension()

setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
