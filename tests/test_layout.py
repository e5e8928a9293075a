"""The design's layout: Triton kernels in the top-level kernels/ folder, imported only as `videomae.kernels`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPS = ("cube_embed", "decoder_input", "norm_pix_mse")


def _run(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_kernels_are_videomae_kernels_one_file_per_op():
    got = _run("import videomae.kernels as k, importlib; "
               f"print('|'.join(importlib.import_module('videomae.kernels.' + op).__file__ for op in {OPS!r}))", ROOT)
    assert got.split("|") == [str(ROOT / "kernels" / f"{op}.py") for op in OPS]


def test_a_checkout_on_the_path_never_owns_the_top_level_kernels_name():
    # An unrelated PyPI package (which transformers imports) owns `kernels`: a folder with an __init__.py would
    # shadow it for every script run from the repository root.
    assert not (ROOT / "kernels" / "__init__.py").exists()
    origin = _run("import importlib.util as u; s = u.find_spec('kernels'); "
                  "print(s.origin if s is not None and s.origin else list(s.submodule_search_locations) if s else '')",
                  ROOT)
    ours = ROOT / "kernels"
    if origin.endswith("__init__.py"):
        assert Path(origin).parent != ours  # the PyPI package is installed, and it wins
    else:
        assert origin in ("", str([str(ours)]))  # at most our folder as a namespace portion, never a module


def test_setup_installs_the_folder_inside_the_package():
    text = (ROOT / "setup.py").read_text()
    assert '"videomae.kernels": "kernels"' in text
