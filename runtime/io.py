"""Crash-safe file writing (a temporary file in the same folder, fsync, then an atomic rename), and
reading JSON files that may be damaged or hostile.

A reader therefore sees either the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from cmhash.errors import OutputExistsError


def refuse_to_replace(path: str | os.PathLike, overwrite: bool, what: str) -> None:
    """Raise OutputExistsError when `path` exists and `overwrite` is false: nothing is replaced silently.
    Called before any work starts, so a refused run costs nothing."""
    path = Path(path)
    empty_folder = path.is_dir() and not any(path.iterdir())
    if not overwrite and path.exists() and not empty_folder:
        raise OutputExistsError(f"{path} already exists ({what}); pass --overwrite (overwrite=True) to "
                                "replace it, or choose another --out")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to `path`; on success, fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file open()'s usual mode
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (manifests, export.json, engine sidecars, cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; every kind of bad content raises ValueError (missing files: FileNotFoundError).

    Why: `json.loads` raises RecursionError, not ValueError, on deeply nested input (`[[[[...`), and
    invalid UTF-8 must not escape as a decoding error of its own; callers then need one `except
    ValueError` to turn any damaged file into their typed error.
    """
    raw = Path(path).read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None
