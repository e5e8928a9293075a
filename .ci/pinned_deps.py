"""Print the project's dependencies (+ the dev, hf and timm extras: the GPU machine has transformers and timm, which
the official code's peer needs) from pyproject.toml, less those it lacks (av, decord), for `make install-pinned`:
one list of dependencies, in pyproject.toml."""

import re
from pathlib import Path

import tomllib

MISSING_ON_GPU_MACHINE = {"av", "decord"}

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
deps = project["dependencies"] + extras["dev"] + extras["hf"] + extras["timm"]
print(" ".join(d for d in deps if re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] not in MISSING_ON_GPU_MACHINE))
