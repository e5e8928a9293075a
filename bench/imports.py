"""The GPU machine's image in a rehearsal: a step may import only what the image holds or what is carried.

bench/gpu.sh's header names the image's packages and the wheels carried with the tree. `setup` computes what that
allows (those distributions and everything they require, transitively, from this interpreter's metadata) and writes
a `sitecustomize.py` into a folder; with that folder first on PYTHONPATH, every Python process of a rehearsed step
(subprocesses and loader workers too) finds every other installed distribution absent, as on the GPU machine: its
modules cannot be imported (`importlib.util.find_spec` says None) and its metadata and entry points are gone (pytest
loads no plugin of it). A step that needs such a package fails as it would there; one that merely probes for it takes
the path the GPU machine takes. Each refused import is logged to `$VIDEOMAE_REFUSED_IMPORTS`, which bench/gpu.sh
reads into the step's note (`refused`).

    python -m bench.imports setup --dir DIR --image "torch triton ..." [--carried "name ..."]
    python -m bench.imports refused LOG          # the distinct module names a step was refused, one line
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import re
import sys
from pathlib import Path

_SITECUSTOMIZE = '''"""Written by bench/imports.py for a bench/gpu.sh rehearsal: the GPU image's packages only."""
import json
import os
import sys
from importlib.machinery import PathFinder


def _image_only():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "refused.json")) as f:
        data = json.load(f)
    modules, dists = set(data["modules"]), set(data["distributions"])
    log = os.environ.get("VIDEOMAE_REFUSED_IMPORTS")

    def norm(name):
        return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))

    class ImageOnly(PathFinder):
        """sys.path's finder, less the distributions the GPU image lacks (their modules and their metadata)."""

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if path is None and name in modules:
                if log:
                    with open(log, "a") as f:
                        f.write(name + "\\n")
                return None
            return super().find_spec(name, path, target)

        @classmethod
        def find_distributions(cls, *args, **kwargs):
            for d in super().find_distributions(*args, **kwargs):
                if norm(d.metadata["Name"] or "") not in dists:
                    yield d

    sys.meta_path[:] = [ImageOnly if f is PathFinder else f for f in sys.meta_path]


_image_only()
'''


def normalize(name: str) -> str:
    """A distribution's canonical name (PEP 503): `Pillow`, `typing_extensions` -> `pillow`, `typing-extensions`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: metadata.Distribution) -> list[str]:
    """Names `dist` requires on this interpreter (extras left out: nobody installs them by default)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover  (packaging ships with every stack here)
        Requirement = None  # noqa: N806
    names = []
    for text in dist.requires or []:
        if Requirement is None:
            if "extra" not in text:
                names.append(re.split(r"[ ;<>=!~\[(]", text, maxsplit=1)[0])
            continue
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(req.name)
    return names


def allowed(image: list[str], carried: list[str]) -> set[str]:
    """The canonical names of `image` + `carried` and of everything they require, transitively, as installed here
    (a requirement not installed here adds nothing)."""
    todo = [normalize(n) for n in [*image, *carried]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        todo += [normalize(r) for r in _requirements(dist)]
    return seen


def refused(image: list[str], carried: list[str], own: set[str] | None = None) -> dict:
    """{"modules": top-level modules of the installed distributions outside the image, "distributions": those
    distributions} (a module shared with an allowed distribution stays importable). `own`: this project's
    distributions (the tree itself, always there)."""
    ok = allowed(image, carried) | (own or set())
    modules, dists = set(), set()
    for module, owners in metadata.packages_distributions().items():
        names = {normalize(o) for o in owners}
        if not names & ok:
            modules.add(module)
            dists |= names
    return {"modules": sorted(modules), "distributions": sorted(dists), "allowed": sorted(ok)}


def own_distributions() -> set[str]:
    """The distributions whose files are this checkout (the editable install of the project)."""
    root = Path(__file__).resolve().parents[1]
    name = re.search(r'^name\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    return {normalize(name.group(1))} if name else set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="write DIR/sitecustomize.py and DIR/refused.json")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--image", required=True, help="the image's distributions, space-separated")
    s.add_argument("--carried", default="", help="carried wheels' distributions, space-separated")
    r = sub.add_parser("refused", help="the distinct modules a log lists, on one line")
    r.add_argument("log", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "refused":
        names = args.log.read_text().split() if args.log.is_file() else []
        print(" ".join(sorted(set(names))))
        return 0
    data = refused(args.image.split(), args.carried.split(), own_distributions())
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "refused.json").write_text(json.dumps(data, indent=1))
    (args.dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    print(f"rehearsal image: {len(data['allowed'])} distributions allowed; {len(data['distributions'])} installed "
          f"here hidden: {' '.join(data['distributions'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
