"""Make `videomae.kernels` the checkout's top-level `kernels/` folder when running from a source tree.

setup.py installs that folder inside the package (`package_dir`), so an installed package finds `videomae/kernels/`
and this does nothing; a checkout on `sys.path` (tests, benchmarks, a copy of the tree on the GPU machine) maps the
same name to the folder beside `videomae/`. Never a top-level `kernels` import: an unrelated PyPI package owns it.
"""

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_INIT = _HERE.parent / "kernels" / "__init__.py"

if "videomae.kernels" not in sys.modules and not (_HERE / "kernels").is_dir() and _INIT.is_file():
    _spec = importlib.util.spec_from_file_location("videomae.kernels", _INIT,
                                                   submodule_search_locations=[str(_INIT.parent)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _module
    _spec.loader.exec_module(_module)
    sys.modules["videomae"].kernels = _module  # what the import system does for a found submodule
