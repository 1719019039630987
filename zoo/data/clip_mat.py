"""Reader of the CLIP-pipeline format (DSPH, DHaPH, DMsH-LN): `index.mat`, `caption.mat`, `label.mat`.

The authors build these files with MATLAB or `scipy.io.savemat`, so the same content reaches us in
several shapes: cell arrays (object arrays, 1 x N or N x 1, nested one level per cell), char
arrays padded with trailing spaces, or plain string arrays. `mat_strings` flattens all of them.
NUS-WIDE ships `caption.txt` (one caption per line) instead of `caption.mat`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cmhash.errors import DataFormatError, DataNotFoundError

from .dataset import PairedDataset, as_binary_matrix, check_image_files, read_lines, require_file
from .dcmh_mat import load_mat_key

_PROVIDER = "the CLIP-pipeline data release (DSPH/DHaPH/DMsH-LN) provides it"


def mat_strings(value: Any) -> list[str]:
    """Every string inside a MATLAB char/cell value, in order, with MATLAB's space padding removed."""
    if isinstance(value, bytes):
        return [_utf8(value).rstrip()]
    if isinstance(value, str):
        return [value.rstrip()]
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        return [_utf8(s).rstrip() if isinstance(s, bytes) else s.rstrip() for s in arr.ravel().tolist()]
    if arr.dtype.kind == "O":
        return [s for item in arr.ravel() for s in mat_strings(item)]
    raise DataFormatError(f"expected text, got a {arr.dtype} array of shape {arr.shape}")


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"a string is not UTF-8 ({exc})") from exc


def _per_sample(value: Any, path: Path) -> list[Any]:
    """Split a MATLAB value into one entry per sample (cells of a 1 x N / N x 1 cell, or rows)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        if arr.ndim == 2 and 1 in arr.shape:
            return list(arr.ravel())
        if arr.ndim == 1:
            return list(arr)
        raise DataFormatError(
            f"{path}: expected a 1 x N or N x 1 cell array (one cell per sample), got shape {arr.shape}. "
            "Fix: save a list with one entry per sample."
        )
    if arr.dtype.kind in "US":
        return list(arr.reshape(-1)) if arr.ndim <= 1 or 1 in arr.shape else list(arr)
    raise DataFormatError(f"{path}: expected strings or a cell array, got {arr.dtype} of shape {arr.shape}.")


def _read_captions(root: Path) -> tuple[list[list[str]], Path]:
    mat, txt = root / "caption.mat", root / "caption.txt"
    if mat.is_file():
        cells = _per_sample(load_mat_key(mat, "caption"), mat)
        captions = []
        for i, cell in enumerate(cells):
            try:
                texts = [t for t in mat_strings(cell) if t]
            except DataFormatError as exc:
                raise DataFormatError(f"{mat}: sample {i}: {exc}.") from exc
            captions.append(texts)
        return captions, mat
    if txt.is_file():
        lines = read_lines(txt)
        return [[line.strip()] for line in lines], txt
    raise DataNotFoundError(f"missing {mat} (or caption.txt, as NUS-WIDE ships): {_PROVIDER}")


def read_clip_mat(
    root: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    class_names: list[str] | None = None,
    label_key: str = "category",
    check_images: bool = True,
) -> PairedDataset:
    """Read a CLIP-pipeline dataset folder.

    Args:
        root: Folder with `index.mat` (key `index`), `caption.mat` (key `caption`) or `caption.txt`,
            and `label.mat` (key `category`).
        image_root: Folder the relative image paths of `index.mat` are resolved against (default
            `root`); absolute paths are kept.
        name: Dataset name (default: the folder name).
        class_names: Label names (default `class_0`, ...; the format stores none).
        label_key: Key of the label matrix; some forks use `label`.
        check_images: Raise if an image file is missing.

    Raises:
        DataNotFoundError: a file or an image is missing.
        DataFormatError: wrong keys, shapes, empty captions, or count mismatches (naming the file).
    """
    root = Path(root)
    index_file = require_file(root / "index.mat", _PROVIDER)
    label_file = require_file(root / "label.mat", _PROVIDER)
    try:
        paths = [p.strip() for p in mat_strings(load_mat_key(index_file, "index"))]
    except DataFormatError as exc:
        raise DataFormatError(f"{index_file}: key 'index' must hold image paths: {exc}.") from exc
    labels = as_binary_matrix(load_mat_key(label_file, label_key), label_key, str(label_file))
    captions, caption_file = _read_captions(root)
    n = len(paths)
    for what, count, source in ((f"'{label_key}' rows", labels.shape[0], label_file),
                                ("caption entries", len(captions), caption_file)):  # fmt: skip
        if count != n:
            raise DataFormatError(
                f"{source} has {count} {what} but {index_file} lists {n} images: every file must describe "
                "the same pairs in the same order. Fix: regenerate the three files together."
            )
    empty = [i for i, c in enumerate(captions) if not c]
    if empty:
        raise DataFormatError(f"{caption_file}: {len(empty)} samples have no caption (first: {empty[:5]}).")
    base = Path(image_root) if image_root is not None else root
    images = [Path(p) if Path(p).is_absolute() else base / p for p in paths]
    if check_images:
        check_image_files(images, str(index_file))
    names = class_names or [f"class_{j}" for j in range(labels.shape[1])]
    return PairedDataset(name or root.name, labels, list(names), images, captions)
