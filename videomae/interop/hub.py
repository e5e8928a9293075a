"""Hugging Face Hub ids wherever a weights path is accepted: `ORG/NAME`, `ORG/NAME@REVISION`, `ORG/NAME/FILE.pth`.

    folder = download("MCG-NJU/videomae-base")                # config.json + model.safetensors, cached
    file = download("ORG/NAME/checkpoint.pth", revision="v1")  # one file of a repository

Downloads go through `huggingface_hub`, so its cache (`HF_HOME`, `HF_HUB_CACHE`), its token (`HF_TOKEN`,
`hf auth login`) and its offline mode (`HF_HUB_OFFLINE=1`: cached files only) apply as they do to transformers.
A repository with a `config.json` is a Hugging Face model folder (its `model.safetensors`, else
`pytorch_model.bin`); one without is a repository of checkpoint files, of which it must hold exactly one unless
the id names the file. Every failure is one line naming the id and what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# A model folder's files, and a checkpoint repository's (never both weight formats of one model).
_WANTED = ["config.json", "preprocessor_config.json", "model.safetensors", "*.pth", "*.pt", "*.ckpt"]
_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<file>(/[\w.-]+)+)?(@(?P<revision>[\w./-]+))?")


def parse(text: str) -> tuple[str, str | None, str | None] | None:
    """'ORG/NAME[/FILE][@REVISION]' -> (repo id, file or None, revision or None); None when `text` is no Hub id."""
    m = _ID.fullmatch(text)
    if m is None or text.startswith((".", "~")):
        return None
    file = m["file"][1:] if m["file"] else None
    if file is None and m["repo"].endswith(WEIGHT_SUFFIXES):  # `runs/model.pth`: a local path that is not there
        return None
    if file is not None and not file.endswith(WEIGHT_SUFFIXES):  # `runs/x/config`: a local path
        return None
    return m["repo"], file, m["revision"]


def is_hub_id(text) -> bool:
    """A string that names a Hub repository (or a file in one) and no local file or folder."""
    if not isinstance(text, str) or os.path.exists(text) or parse(text) is None:
        return False
    return not os.path.isdir(text.split("/")[0])  # `existing_folder/missing` is a mistyped local path


def download(spec: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A Hub id -> the local folder (model repository) or file it names, from the cache or downloaded.
    `revision` (a branch, tag or commit) overrides an `@REVISION` in `spec`; `cache_dir` replaces huggingface_hub's
    cache folder. ValueError: one line."""
    parsed = parse(spec)
    if parsed is None:
        raise ValueError(f"{spec!r} is not a Hugging Face Hub id (ORG/NAME, ORG/NAME@REVISION or ORG/NAME/FILE)")
    repo, file, rev = parsed
    revision = revision or rev
    try:
        import huggingface_hub as hub
        from huggingface_hub import constants
    except ImportError:
        raise ValueError(f"{spec}: a Hub id needs huggingface_hub (pip install huggingface_hub)") from None
    # Offline, said explicitly: some huggingface_hub versions otherwise ask the Hub which files a commit holds.
    kw = dict(revision=revision, cache_dir=cache_dir, local_files_only=bool(constants.HF_HUB_OFFLINE))
    try:
        if file is not None:
            return Path(hub.hf_hub_download(repo, file, **kw))
        folder = Path(hub.snapshot_download(repo, allow_patterns=_WANTED, **kw))
        if (folder / "config.json").is_file() and not (folder / "model.safetensors").is_file():
            hub.hf_hub_download(repo, "pytorch_model.bin", **kw)  # older repositories: pickle only
    except Exception as err:  # noqa: BLE001 - huggingface_hub's errors, and the network's, become one line
        raise ValueError(f"{spec}: {_why(err, revision)}") from None
    return pick(folder, spec)


def pick(folder: Path, spec: str) -> Path:
    """A downloaded repository -> the folder (a model folder) or its one weights file."""
    if (folder / "config.json").is_file():
        return folder
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(files) == 1:
        return folder / files[0]
    if not files:
        raise ValueError(f"{spec}: the repository holds no config.json and no weights file "
                         f"({', '.join(WEIGHT_SUFFIXES)})")
    raise ValueError(f"{spec}: the repository holds {len(files)} weights files ({', '.join(files[:4])}"
                     f"{', ...' if len(files) > 4 else ''}): name one as {spec.split('@')[0]}/FILE")


def _why(err: Exception, revision: str | None) -> str:
    from huggingface_hub import constants, errors

    # LocalEntryNotFoundError is an EntryNotFoundError: asked first.
    if isinstance(err, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled):
        where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
        if constants.HF_HUB_OFFLINE:
            return f"not in {where}, and HF_HUB_OFFLINE=1 allows no download"
        return f"not in {where}, and the Hub could not be reached"
    if isinstance(err, errors.GatedRepoError):
        return "a gated repository: accept its terms on the Hub and log in (hf auth login, or HF_TOKEN)"
    if isinstance(err, errors.RepositoryNotFoundError):
        return "no such repository on the Hugging Face Hub (or a private one: log in with hf auth login or HF_TOKEN)"
    if isinstance(err, errors.RevisionNotFoundError):
        return f"the repository has no revision {revision!r}"
    if isinstance(err, errors.EntryNotFoundError):
        return "no such file in the repository"
    if isinstance(err, OSError) and err.errno is not None:
        return f"{err.strerror or err} ({getattr(err, 'filename', None) or constants.HF_HUB_CACHE})"
    text = str(err).strip().splitlines()
    return f"download failed ({type(err).__name__}: {text[0] if text else 'no details'})"
