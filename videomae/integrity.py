"""Content hashes for the files we write: a SHA-256 sidecar (`<file>.sha256`) beside each checkpoint or weights file.

Written after the file itself is complete and checked before it is read, so a file with flipped bytes or cut short
after it was written is refused with one line naming it, instead of loading silently. Files without a sidecar
(official checkpoints, Hugging Face downloads) are read as they are: the sidecar is our promise, not theirs.
A sidecar rather than safetensors metadata, because one scheme then covers `.pth` and `.safetensors` alike.

`write_atomic` is how such a file is written: to a temporary name in the same folder, fsynced, renamed over the
target, then its sidecar. A full disk, a read-only folder or a refused permission leaves the previous file and its
sidecar as they were and raises `WriteFailed`, one line naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

SUFFIX = ".sha256"
_CHUNK = 1 << 22


class CorruptFile(ValueError):
    """A file's bytes do not match the hash recorded when it was written."""


class WriteFailed(OSError):
    """A file could not be written (disk full, read-only, permission): one line naming it; nothing was replaced."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}; the earlier files in its folder are unchanged"


# The errors of the place written to, not of the program: named in one line (videomae.cli prints them so).
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


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


def storage_error(err: BaseException, path: str | os.PathLike | None = None) -> OSError | None:
    """The OSError behind `err` (itself, or one it wraps), else None. torch's zip writer and safetensors report a
    failed write(2) as their own errors without the errno: those become ENOSPC when the disk of `path` is (nearly)
    full, else EIO."""
    seen, first = set(), err
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    text = str(first)
    if path is not None and ("PytorchStreamWriter" in text or "unexpected pos" in text or "code: 28" in text
                             or type(first).__name__ == "SafetensorError"):
        full = "code: 28" in text or shutil.disk_usage(Path(path).parent).free < 1 << 20
        code = errno.ENOSPC if full else errno.EIO
        return OSError(code, os.strerror(code), str(path))
    return None


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None], sidecar_too: bool = True) -> Path:
    """`write(f)` into a temporary file beside `path` (`.NAME.tmp-PID`), fsync, rename it over `path`, fsync the
    folder, then (sidecar_too) record its hash. A kill at any moment leaves the old file or the complete new one (and
    a stale temporary file, which `videomae.train.state.remove_temporaries` clears).

    The old sidecar is removed before the rename, so an interruption leaves a file without a hash (read as it is),
    never a file whose hash is another's. Raises WriteFailed (one line) when the storage refuses."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    side = sidecar(path)
    side_tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if sidecar_too:
            with open(side_tmp, "w") as f:
                f.write(f"{digest(tmp)}  {path.name}\n")
            side.unlink(missing_ok=True)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if sidecar_too:
            os.replace(side_tmp, side)
    except BaseException as err:
        for leftover in (tmp, side_tmp):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                pass
        cause = storage_error(err, path)
        if cause is None or isinstance(err, KeyboardInterrupt):
            raise
        raise WriteFailed(cause.errno, cause.strerror or os.strerror(cause.errno), str(path)) from None
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX: the folder's entry is data of its own); a no-op where folders cannot open."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
