"""Shared fixtures: the real data in ../shared/data, and isolated caches.

Tests that need the data skip with a reason outside CI, and fail loudly in CI (CI=true), where the
data must be present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cmhash import constants

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = constants.DATA_DIR or REPO.parent / constants.SHARED_DATA


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
        isolate(mp, tmp_path_factory.getbasetemp() / "cache")
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every cache the code under test writes out of the user's home."""
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "cache")


def isolate(mp: pytest.MonkeyPatch, cache: Path) -> None:
    """Point cmhash's cache at `cache`: the settings module in this process (`cmhash.constants`, parsed
    once at import), and `$CMHASH_CACHE` only for the child processes (CLI runs) a test starts, which
    parse it once themselves."""
    from cmhash import constants

    mp.setattr(constants, "CACHE_DIR", cache)
    mp.setenv("CMHASH_CACHE", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
