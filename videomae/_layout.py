"""Make `videomae.kernels` the checkout's top-level `kernels/` folder when running from a source tree.

setup.py installs that folder inside the package (`package_dir`), so an installed package finds `videomae/kernels/`
and this does nothing; a checkout on `sys.path` (tests, benchmarks, a copy of the tree on the GPU machine) maps the
same name to the folder beside `videomae/`. The folder has no `__init__.py` (kernels/README.md says why), so the
mapping is a package module whose `__path__` is that folder.
"""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SOURCE = _HERE.parent / "kernels"

if "videomae.kernels" not in sys.modules and not (_HERE / "kernels").is_dir() and (_SOURCE / "_common.py").is_file():
    _spec = importlib.machinery.ModuleSpec("videomae.kernels", None, is_package=True)
    _spec.submodule_search_locations = [str(_SOURCE)]
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _module
    sys.modules["videomae"].kernels = _module  # what the import system does for a found submodule
