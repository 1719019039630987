"""One real export per test session: a tiny dmsh checkpoint (16 bits, 2 epochs) trained on coco-mini,
exported to ONNX with its fp16 variant, and validated once. Exporting EfficientNet-Lite0 + MiniLM and
checking them on every coco-mini image and caption takes a minute or two on 2 cores, so every test
reads this folder (and copies what it wants to change).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cmhash.errors import ExportValidationError


@dataclass
class SessionExport:
    checkpoint: Path
    folder: Path
    dataset: Any
    validation: dict
    fp16: dict
    validation_error: ExportValidationError | None
    fp16_error: ExportValidationError | None


@pytest.fixture(scope="session")
def coco_mini(coco_mini_root):
    from cmhash.zoo.data import load_dataset

    return load_dataset(coco_mini_root)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, coco_mini, isolated_env) -> Path:
    from cmhash.zoo.recipes import make_config
    from cmhash.zoo.train import train

    out = tmp_path_factory.mktemp("checkpoint") / "dmsh16"
    train("dmsh", make_config("dmsh", "offline", bits=16, seed=0, epochs=2), coco_mini, out, progress=False)
    return out


@pytest.fixture(scope="session")
def session_export(tmp_path_factory, tiny_checkpoint, coco_mini, isolated_env) -> SessionExport:
    """Export once (fp32 + fp16) and validate; failures are kept for the tests to assert on."""
    from cmhash.export.fp16 import validate_fp16
    from cmhash.export.onnx import export_checkpoint
    from cmhash.export.validate import validate_export

    folder = tmp_path_factory.mktemp("export") / "dmsh16"
    export_checkpoint(tiny_checkpoint, folder, fp16=True, validate=False, dataset=coco_mini)
    errors: dict[str, ExportValidationError | None] = {"fp32": None, "fp16": None}
    try:
        validation = validate_export(folder, dataset=coco_mini)
    except ExportValidationError as exc:
        validation, errors["fp32"] = exc.report, exc
    try:
        fp16 = validate_fp16(folder, dataset=coco_mini)
    except ExportValidationError as exc:
        fp16, errors["fp16"] = exc.report, exc
    return SessionExport(tiny_checkpoint, folder, coco_mini, validation, fp16, errors["fp32"], errors["fp16"])


@pytest.fixture(scope="session")
def reference_encoders(tiny_checkpoint, isolated_env):
    """The PyTorch encoders the export was made from (backbone + head + packing)."""
    from cmhash.export.encoders import build_encoders
    from cmhash.zoo.model import CrossModalHasher

    return build_encoders(CrossModalHasher.from_pretrained(tiny_checkpoint))


def copy_export(src: Path, dst: Path, *, link_models: bool = True) -> Path:
    """A private copy of an export folder; models are symlinked unless a test changes them."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.suffix == ".onnx" and link_models:
            (dst / path.name).symlink_to(path)
        elif path.is_file():
            shutil.copy2(path, dst / path.name)
    return dst


@pytest.fixture
def export_copy(session_export, tmp_path):
    """`export_copy(link_models=True)`: a private copy of the session export folder in tmp_path."""

    def make(link_models: bool = True) -> Path:
        return copy_export(session_export.folder, tmp_path / "export", link_models=link_models)

    return make
