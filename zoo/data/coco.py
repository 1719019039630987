"""Reader of COCO-format JSON (`captions_{split}.json`, `instances_{split}.json`), e.g. coco-mini.

Labels are the set of an image's instance `category_id`s, mapped onto the categories in the order of
`categories`. Each image keeps its Flickr licence and URLs in `meta`: COCO images are under their
owners' licences, and whatever shows them must keep that attribution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmhash.errors import DataFormatError
from cmhash.runtime.io import read_json

from .dataset import PairedDataset, check_image_files, require_file

_PROVIDER = "the COCO annotation release provides it (https://cocodataset.org, or the coco-mini folder)"


def _load_json(path: Path) -> dict[str, Any]:
    require_file(path, _PROVIDER)
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"{path} is not valid JSON ({exc}). Fix: download the file again.") from exc
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a COCO JSON object, got {type(data).__name__}.")
    return data


def _field(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """The list of records under `key`; every record must be a JSON object."""
    value = data.get(key, [] if key == "licenses" else None)
    if not isinstance(value, list):
        raise DataFormatError(f"{path} has no {key!r} list; it is not a COCO {path.stem.split('_')[0]} file.")
    bad = next((i for i, r in enumerate(value) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataFormatError(f"{path}: {key}[{bad}] is {str(value[bad])[:60]!r}, not an object. "
                              "Fix: download the file again.")
    return value


def _get(record: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path, what: str,
         optional: bool = False) -> Any:
    """`record[key]`, which must be of `kind` (bool is never an int here): else DataFormatError."""
    if optional and record.get(key) is None:
        return None
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(f"{path}: {what} has {key}={str(value)[:60]!r}; expected "
                              f"{getattr(kind, '__name__', 'int or str')}. Fix: download the file again.")
    return value


def read_coco(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train2017", "val2017"),
    *,
    drop_unlabeled: bool = True,
    check_images: bool = True,
    name: str | None = None,
) -> PairedDataset:
    """Read COCO captions, instance labels and image paths, ordered by split and then image id.

    Args:
        root: Folder with `annotations/` and one image folder per split.
        splits: Split names, e.g. `("train2017", "val2017")`.
        drop_unlabeled: Drop images without any instance; if False, such images raise.
        check_images: Raise if an image file is missing.
        name: Dataset name (default: the folder name).

    Raises:
        DataNotFoundError: an annotation file or an image is missing.
        DataFormatError: bad JSON, unknown category ids, images without captions, differing category
            lists across splits, or (with drop_unlabeled=False) images without labels.
    """
    root = Path(root)
    if isinstance(splits, str):
        splits = (splits,)
    categories: list[dict[str, Any]] | None = None
    labels: list[np.ndarray] = []
    images: list[Path] = []
    texts: list[list[str]] = []
    meta: list[dict[str, Any]] = []
    for split in splits:
        cap_path = root / "annotations" / f"captions_{split}.json"
        ins_path = root / "annotations" / f"instances_{split}.json"
        captions, instances = _load_json(cap_path), _load_json(ins_path)
        cats = _field(instances, "categories", ins_path)
        for c in cats:
            _get(c, "id", int, ins_path, "a category")
            _get(c, "name", str, ins_path, f"category {c['id']}")
        if categories is None:
            categories = cats
        elif [c["id"] for c in cats] != [c["id"] for c in categories]:
            raise DataFormatError(
                f"{ins_path} lists other categories than the first split; splits must share them."
            )
        column = {c["id"]: j for j, c in enumerate(categories)}
        by_image: dict[int, set[int]] = {}
        for ann in _field(instances, "annotations", ins_path):
            category = ann.get("category_id")
            if type(category) is not int or category not in column:
                raise DataFormatError(f"{ins_path}: annotation {str(ann.get('id'))[:40]} has unknown category_id "
                                      f"{str(ann.get('category_id'))[:40]!r}.")  # fmt: skip
            image_id = _get(ann, "image_id", int, ins_path, "an instance annotation")
            by_image.setdefault(image_id, set()).add(column[ann["category_id"]])
        caps: dict[int, list[tuple[int, str]]] = {}
        for ann in _field(captions, "annotations", cap_path):
            image_id = _get(ann, "image_id", int, cap_path, "a caption annotation")
            caption = _get(ann, "caption", str, cap_path, f"a caption of image {image_id}")
            order = _get(ann, "id", int, cap_path, f"a caption of image {image_id}", optional=True) or 0
            caps.setdefault(image_id, []).append((order, caption.strip()))
        licenses = {}
        for lic in _field(captions, "licenses", cap_path):
            licenses[_get(lic, "id", (int, str), cap_path, "a licence")] = lic
        records = _field(captions, "images", cap_path)
        for img in records:
            _get(img, "id", int, cap_path, "an image")
            _get(img, "file_name", str, cap_path, f"image {img['id']}")
            _get(img, "license", (int, str), cap_path, f"image {img['id']}", optional=True)
        ids = [img["id"] for img in records]
        if len(set(ids)) != len(ids):
            raise DataFormatError(f"{cap_path} lists some image ids more than once. Fix: download the file again.")
        for img in sorted(records, key=lambda im: im["id"]):
            image_id = img["id"]
            if image_id not in caps:
                raise DataFormatError(
                    f"{cap_path}: image {image_id} has no caption. Fix: remove it from 'images'."
                )
            if image_id not in by_image:
                if drop_unlabeled:
                    continue
                raise DataFormatError(
                    f"{ins_path}: image {image_id} ({img.get('file_name')}) has no instance, so no label. "
                    "Fix: pass drop_unlabeled=True (only annotated images are kept, as in coco-mini)."
                )
            row = np.zeros(len(categories), dtype=np.uint8)
            row[sorted(by_image[image_id])] = 1
            labels.append(row)
            images.append(root / split / img["file_name"])
            texts.append([c for _, c in sorted(caps[image_id])])
            lic = licenses.get(img.get("license"), {})
            meta.append({
                "split": split, "image_id": image_id, "file_name": img["file_name"],
                "license": lic.get("name"), "license_url": lic.get("url"),
                "flickr_url": img.get("flickr_url"), "coco_url": img.get("coco_url"),
            })  # fmt: skip
    if categories is None:
        raise DataFormatError("read_coco needs at least one split name, got none.")
    if check_images:
        check_image_files(images, f"{root / 'annotations'}/captions_*.json")
    class_names = [str(c["name"]) for c in categories]
    stacked = np.stack(labels) if labels else np.zeros((0, len(categories)), np.uint8)
    return PairedDataset(name or root.name, stacked, class_names, images, texts, meta=meta)
