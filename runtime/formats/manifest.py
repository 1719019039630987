"""File integrity: the sha256 and size of each file of a folder, one scheme for checkpoints, the Hub
and exports (spec: docs/formats/manifest.md).

A file entry is `{"sha256": HEX, "size": BYTES}`. It is stored in two places with the same shape and
checked by the same code (`entry_problem`):
- `manifest.json` of a checkpoint or Hub folder: `{"format": "cmhash-manifest/1", "cmhash_version",
  "files": {posix path: entry}}`; the one writer is `write_manifest`, the one reader `read_manifest`;
- the `files` section of an export's `export.json` (runtime/formats/export_manifest.py), built by
  `entries`.
"""

from __future__ import annotations

import hashlib
import json
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from cmhash.errors import ChecksumError
from cmhash.runtime.io import atomic_write, read_json

FORMAT = "cmhash-manifest/1"
MANIFEST_NAME = "manifest.json"


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 60, 60, 3


def short(value: Any) -> str:
    """A bounded repr for messages: a damaged file may hold 100,000-character strings or deep nesting."""
    return _REPR.repr(value)


@dataclass(frozen=True)
class FileEntry:
    """What a file must be: its sha256 (hex) and its size in bytes."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, raw: Any) -> "FileEntry":
        """Raises ValueError naming the expected shape; callers wrap it in their typed error."""
        if (not isinstance(raw, dict) or set(raw) != {"sha256", "size"} or not isinstance(raw["sha256"], str)
                or type(raw["size"]) is not int or raw["size"] < 0):
            raise ValueError(f'an entry must be {{"sha256": HEX, "size": BYTES}}, got {short(raw)}')
        return cls(raw["sha256"], raw["size"])


def digest(path: str | os.PathLike) -> FileEntry:
    """The entry of a file as it is now (sha256 read in 1 MiB chunks)."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return FileEntry(sha.hexdigest(), size)


def inside(name: Any) -> bool:
    """A relative path that stays inside its folder (no absolute path, no `..`, no NUL)."""
    return (isinstance(name, str) and bool(name) and "\x00" not in name and not name.startswith("/")
            and not Path(name).is_absolute() and ".." not in Path(name).parts)


def entries(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, FileEntry]:
    """The entries of `names` (paths inside `folder`), as they are now."""
    return {name: digest(Path(folder) / name) for name in names}


def parse_files(raw: Any) -> dict[str, FileEntry]:
    """A `files` mapping (name -> entry) from JSON; ValueError on the first bad name or entry."""
    if not isinstance(raw, dict):
        raise ValueError(f'files must map file names to {{"sha256": HEX, "size": BYTES}}, got {short(raw)}')
    out = {}
    for name, entry in raw.items():
        if not inside(name):
            raise ValueError(f"files lists {short(name)}, which is not a path inside the folder")
        try:
            out[name] = FileEntry.from_dict(entry)
        except ValueError as exc:
            raise ValueError(f"the entry of {short(name)} in files: {exc}") from None
    return out


def entry_problem(folder: str | os.PathLike, name: str, entry: FileEntry, listed_in: str) -> str | None:
    """Why `folder/name` does not match `entry` (missing, unreadable, other bytes), or None if it does.

    `listed_in` names the file holding the entry (manifest.json, export.json) for the message."""
    path = Path(folder) / name
    try:
        if not path.is_file():
            return f"{name} is listed in {listed_in} but missing from {folder}"
        now = digest(path)
    except OSError as exc:  # a name too long for the file system, no permission
        return f"{name} in {folder} cannot be read ({exc.strerror or exc})"
    if now != entry:
        return (f"{name} in {folder} does not match {listed_in}: sha256 {now.sha256[:16]}…, {now.size} bytes; "
                f"{listed_in} records sha256 {entry.sha256[:16]}…, {entry.size} bytes. The file is corrupted, "
                "truncated or was changed after it was written")
    return None


def verify_files(folder: str | os.PathLike, files: Mapping[str, FileEntry], listed_in: str) -> list[str]:
    """One message per listed file that is missing or differs (empty when all match)."""
    return [p for name, entry in sorted(files.items()) if (p := entry_problem(folder, name, entry, listed_in))]


def write_manifest(folder: str | os.PathLike, names: Iterable[str] | None = None) -> Path:
    """Write `manifest.json` atomically: `names`, or every regular file under `folder` but itself.

    The one writer of manifest.json (checkpoints, `cmhash publish`, the shipped hashers).
    """
    folder = Path(folder)
    if names is None:
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    names = sorted(n for n in names if n != MANIFEST_NAME and not Path(n).name.startswith(f".{MANIFEST_NAME}."))
    from cmhash import __version__  # cmhash/__init__.py holds only the version

    data = {"format": FORMAT, "cmhash_version": __version__,
            "files": {n: e.to_dict() for n, e in entries(folder, names).items()}}
    path = folder / MANIFEST_NAME
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return path


def read_manifest(folder: str | os.PathLike, *, fix: str, required: bool = True,
                  must_list: Iterable[str] = ()) -> dict[str, FileEntry] | None:
    """Read `manifest.json` and check every file it lists; the one reader and verifier.

    Files it does not list (such as the `.gitattributes` the Hub adds) are ignored: only listed files
    are ever loaded, and `must_list` names those that must be listed. `fix` says what to do about a
    problem. Returns the entries, or None when there is no manifest and `required` is False. Raises
    ChecksumError.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        if not required:
            return None
        raise ChecksumError(f"{folder} has no {MANIFEST_NAME}, so its files cannot be checked: it was not "
                            f"published with `cmhash publish`, or the download is incomplete. Fix: {fix}")
    try:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else data!r:.80}, "
                             f"expected {FORMAT!r}")
        files = parse_files(data.get("files"))
    except (ValueError, OSError) as exc:
        raise ChecksumError(f"{path} is not a cmhash manifest ({exc}). Fix: {fix}") from exc
    unlisted = [name for name in must_list if name not in files]
    if unlisted:
        raise ChecksumError(f"{path} does not list {', '.join(unlisted)}: the checkpoint cannot be checked. Fix: {fix}")
    problems = verify_files(folder, files, MANIFEST_NAME)
    if problems:
        raise ChecksumError(f"{problems[0]}. Fix: {fix}")
    return files
