"""Content hashes for the files we write: a SHA-256 sidecar (`<file>.sha256`) beside each checkpoint or weights file.

Written after the file itself is complete and checked before it is read, so a file with flipped bytes or cut short
after it was written is refused with one line naming it, instead of loading silently. Files without a sidecar
(official checkpoints, Hugging Face downloads) are read as they are: the sidecar is our promise, not theirs.
A sidecar rather than safetensors metadata, because one scheme then covers `.pth` and `.safetensors` alike.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SUFFIX = ".sha256"
_CHUNK = 1 << 22


class CorruptFile(ValueError):
    """A file's bytes do not match the hash recorded when it was written."""


def sidecar(path: str | os.PathLike) -> Path:
    """`model.pth` -> `model.pth.sha256`."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_digest(path: str | os.PathLike) -> Path:
    """Record `path`'s hash in its sidecar (written to a temporary name, then renamed: never half a hash)."""
    side = sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{digest(path)}  {Path(path).name}\n")
    os.replace(tmp, side)
    return side


def verify(path: str | os.PathLike) -> bool:
    """Raise `CorruptFile` when `path` has a sidecar whose hash differs; True if checked, False if no sidecar."""
    side = sidecar(path)
    if not side.is_file():
        return False
    recorded = side.read_text().split()
    if not recorded or recorded[0] != digest(path):
        raise CorruptFile(f"{path}: content does not match its recorded SHA-256 ({side.name}); the file is corrupt "
                          "or was changed after it was written")
    return True
