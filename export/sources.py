"""The checkpoint an export comes from: its files' sha256s and the dataset it trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmhash.runtime.formats.checkpoint import CONFIG_NAME, VOCABULARY_NAME, WEIGHTS_NAME
from cmhash.runtime.io import sha256_file


def source_hashes(checkpoint: str | Path) -> dict[str, str]:
    checkpoint = Path(checkpoint)
    return {name: sha256_file(checkpoint / name) for name in (WEIGHTS_NAME, CONFIG_NAME, VOCABULARY_NAME)
            if (checkpoint / name).is_file()}


def check_out_folder(out: Path, hashes: dict[str, str], overwrite: bool) -> None:
    """Refuse to export into a non-empty folder that is not an export of the same checkpoint (same
    sha256s), unless `overwrite`: another model's export is never replaced silently."""
    from cmhash.errors import ExportFolderError, OutputExistsError
    from cmhash.runtime.formats.export_manifest import read_export_manifest
    from cmhash.runtime.formats.model_id import describe

    if overwrite or not out.is_dir() or not any(out.iterdir()):
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"--out {out} is a file; give a folder for the export")
        return
    try:
        manifest = read_export_manifest(out)
    except ExportFolderError:
        raise OutputExistsError(f"{out} is not empty and holds no cmhash export; pass --overwrite "
                                "(overwrite=True) to export into it anyway, or choose another --out") from None
    if dict(manifest.source.sha256) != hashes:
        raise OutputExistsError(f"{out} holds the export of another checkpoint ({describe(manifest.model_id)}); "
                                "pass --overwrite (overwrite=True) to replace it, or choose another --out")


def load_source_dataset(name: str | None, data_root: str | None = None) -> Any:
    """The dataset a checkpoint trained on (its config's `data.dataset`), from the data root."""
    from cmhash.errors import DataNotFoundError
    from cmhash.zoo.data import load_dataset

    name = name or "coco-mini"
    try:
        return load_dataset(name, data_root)
    except DataNotFoundError as exc:
        raise DataNotFoundError(
            f"the export is checked against PyTorch on real inputs, by default the data the checkpoint trained on "
            f"({name}), which is not here: {exc} Or check on your own photos and captions: "
            "--images DIR --texts FILE (one caption per line).") from exc
