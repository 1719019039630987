"""The user's own inputs, one rule for every command: a folder of photos, and a file of texts.

- **A folder of photos** is every file below it, in sub-folders too, whose suffix (in any case) is
  one of `IMAGE_SUFFIXES`, sorted by path. Files named one by one are taken as given.
- **A text file** (captions, queries) is UTF-8, one text per line: each line is stripped, blank lines
  are skipped, and a text's id is its 0-based line number.

`cmhash encode`, `cmhash search` (runtime/pipeline.py, runtime/distributed/pipeline.py),
`cmhash demo --images/--texts` and `cmhash export ... --images/--texts` (zoo/data/loose.py) all read
their inputs here, so a folder that one command accepts, every command accepts.
Torch-free, like the rest of the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cmhash.errors import DataFormatError, DataNotFoundError, InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_folder(folder: str | os.PathLike) -> list[Path]:
    """The photos of a folder (see the module docstring), sorted by path.

    Raises:
        DataNotFoundError: `folder` is not a folder.
        InvalidInputError: it holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} is not a folder: pass a folder of photos ({', '.join(IMAGE_SUFFIXES)})")
    found = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InvalidInputError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def other_files(paths: Sequence[str | os.PathLike]) -> int:
    """How many files below the folders of `paths` are skipped for not having an image suffix (reported,
    so a folder of .heic photos does not look empty by mistake)."""
    return sum(1 for p in map(Path, paths) if p.is_dir()
               for f in p.rglob("*") if f.is_file() and f.suffix.lower() not in IMAGE_SUFFIXES)


def readable_images(files: Sequence[Path]) -> tuple[list[int], list[tuple[Path, str]]]:
    """(positions of the files that decode, [(file, why) for the others]): each is opened and decoded
    the way the encoder will (`runtime.preprocess.load_rgb`), so what is kept will encode."""
    from cmhash.runtime.preprocess import load_rgb

    keep, skipped = [], []
    for i, f in enumerate(files):
        try:
            load_rgb(f).close()
            keep.append(i)
        except DataFormatError as exc:
            skipped.append((f, str(exc)))
    return keep, skipped


def image_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded by `image_folder`.

    Raises:
        InvalidInputError: no path given, or a folder with no image file.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        out += image_folder(p) if p.is_dir() else [p]
    if not out:
        raise InvalidInputError("no images given")
    return out


def read_texts(path: str | os.PathLike, lines: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The texts of a text file (see the module docstring) and their ids (0-based line numbers).

    `lines` stands in for the file's content (the CLI reads stdin for FILE "-").

    Raises:
        DataNotFoundError: the file does not exist.
        DataFormatError: it cannot be read, or is not UTF-8.
        InvalidInputError: it holds no text.
    """
    path = Path(path)
    if lines is None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"cannot read {path}: no such file (a text file, one text per line)") from exc
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{path} is not UTF-8 text ({exc}); convert it, e.g. iconv -t utf-8") from exc
        except OSError as exc:
            raise DataFormatError(f"cannot read {path}: {exc}") from exc
    keep = [(i, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not keep:
        raise InvalidInputError(f"{path} holds no text (one text per line; blank lines are skipped)")
    return [t for _, t in keep], np.array([i for i, _ in keep], dtype=np.int64)
