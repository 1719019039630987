"""Shared fixtures: the real data in ../shared/data, and isolated caches.

Tests that need the data skip with a reason outside CI, and fail loudly in CI (CI=true), where the
data must be present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("CMHASH_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if path.exists():
        return path
    reason = (
        f"real data not found at {path}: the project's shared data lives in ../shared/data next to the "
        "repository (or set CMHASH_DATA)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must have it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _require(DATA_ROOT)


@pytest.fixture(scope="session")
def coco_mini_root() -> Path:
    return _require(DATA_ROOT / "coco-mini")


@pytest.fixture(scope="session")
def mirflickr_root() -> Path:
    return _require(DATA_ROOT / "mirflickr25k")


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory):
    """The isolation of `_isolated_home` below, for session- and module-scoped fixtures (an autouse
    per-test fixture does not cover them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMHASH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every cache the code under test writes out of the user's home."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("CMHASH_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
