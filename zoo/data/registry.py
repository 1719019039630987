"""Dataset names and folders -> readers: an explicit dict, plus format detection for folders.

Explicit because the project ships exactly two real datasets; a plugin mechanism would hide where a
name comes from. Any other dataset is loaded by pointing at its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cmhash import constants
from cmhash.errors import DataFormatError, DataNotFoundError

from .clip_mat import read_clip_mat
from .coco import read_coco
from .dataset import PairedDataset
from .dcmh_mat import read_dcmh_mat
from .dcph_text import read_dcph_text


@dataclass(frozen=True)
class DatasetEntry:
    """A known dataset: its folder under the data root, its reader, and a line for help texts."""

    folder: str
    reader: Callable[..., PairedDataset]
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "coco-mini": DatasetEntry("coco-mini", read_coco, "159 COCO 2017 images, 5 captions each, 80 labels"),
    "mirflickr25k": DatasetEntry(
        "mirflickr25k", read_dcmh_mat, "MIRFlickr-25K, 20,015 tag/label pairs (no images), DCMH format"
    ),
}

LAYOUTS = (
    "COCO JSON: annotations/captions_<split>.json + annotations/instances_<split>.json",
    "DCMH/UCCH: <prefix>-lall.mat + <prefix>-yall.mat (+ <prefix>-iall.mat)",
    "CLIP pipeline: index.mat + caption.mat (or caption.txt) + label.mat",
    "DCPH text: images_name.txt + label_hot.txt + y_vector.txt + test/database/train_ind*.txt",
)

def default_data_root() -> Path:
    """The data folder: `$CMHASH_DATA`, else `../shared/data` from the working directory or the repo
    (both parsed in `cmhash.constants`).

    Raises:
        DataNotFoundError: if none of these exists; the message says how to pass a folder.
    """
    if constants.DATA_DIR is not None:
        if not constants.DATA_DIR.is_dir():
            raise DataNotFoundError(
                f"CMHASH_DATA={constants.DATA_DIR} is not a folder. Fix: point it at the data folder.")
        return constants.DATA_DIR
    candidates = constants.data_candidates()
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise DataNotFoundError(
        f"no data folder found (looked for $CMHASH_DATA and {', '.join(str(p) for p in candidates)}). "
        "Fix: pass --data-root PATH (or root= in Python), or set CMHASH_DATA=PATH."
    )


def detect_format(folder: Path) -> Callable[..., PairedDataset]:
    """Pick the reader for a folder from the files it holds.

    Raises:
        DataFormatError: if no known layout matches; the message lists the accepted layouts.
    """
    if any((folder / "annotations").glob("captions_*.json")):
        splits = sorted(p.stem[len("captions_") :] for p in (folder / "annotations").glob("captions_*.json"))
        return lambda root, **options: read_coco(root, splits, **options)
    if any(folder.glob("*-lall.mat")):
        return read_dcmh_mat
    if (folder / "index.mat").is_file() and (folder / "label.mat").is_file():
        return read_clip_mat
    if (folder / "images_name.txt").is_file() and (folder / "label_hot.txt").is_file():
        return lambda root, **options: read_dcph_text(root, **options)[0]
    raise DataFormatError(
        f"{folder} matches no dataset layout cmhash reads. Accepted layouts:\n  - " + "\n  - ".join(LAYOUTS)
    )


def load_dataset(
    name_or_path: str | os.PathLike, root: str | os.PathLike | None = None, **options: Any
) -> PairedDataset:
    """Load a known dataset by name (from `root` or `default_data_root()`), or any folder by path.

    `options` go to the reader (e.g. `check_images=False`, `drop_unlabeled=True`). A DCPH-text
    folder's own split is kept in the returned dataset's `split` field.

    Raises:
        DataNotFoundError: unknown name that is not a folder either, or a missing dataset folder.
        DataFormatError: a folder with an unknown layout, or bad content.
    """
    key = str(name_or_path)
    if key in DATASETS:
        entry = DATASETS[key]
        folder = Path(root) if root is not None else default_data_root()
        folder = folder / entry.folder
        if not folder.is_dir():
            raise DataNotFoundError(
                f"dataset {key!r} not found at {folder}. Fix: pass --data-root PATH (root= in Python) "
                f"pointing at the folder that holds {entry.folder}/, or set CMHASH_DATA."
            )
        return entry.reader(folder, **options)
    folder = Path(name_or_path).expanduser()
    if root is not None and not folder.is_absolute():
        folder = Path(root) / folder
    if not folder.is_dir():
        raise DataNotFoundError(
            f"{key!r} is neither a known dataset name ({', '.join(DATASETS)}) nor a folder. "
            "Fix: pass one of those names or the path of a dataset folder."
        )
    return detect_format(folder)(folder, **options)
