"""Fixtures of the runtime tests (helpers and the tiny-export references live in tiny_exports.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tiny_exports import DATA, load_weights


@pytest.fixture(scope="session")
def tiny_weights() -> dict[str, np.ndarray]:
    return load_weights()


@pytest.fixture
def tiny_copy(tmp_path):
    """`tiny_copy(name="tiny")`: a private copy of a tiny export folder that a test may damage."""

    def make(name: str = "tiny") -> Path:
        dst = tmp_path / name
        shutil.copytree(DATA / name, dst)
        return dst

    return make


@pytest.fixture(scope="session")
def coco_images(coco_mini_root) -> list[Path]:
    images = sorted((coco_mini_root / "val2017").glob("*.jpg")) + sorted((coco_mini_root / "train2017").glob("*.jpg"))
    assert len(images) == 159, f"coco-mini should hold 159 images, found {len(images)}"
    return images
