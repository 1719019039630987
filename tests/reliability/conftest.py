"""Fixtures of the reliability tests: the real files the fuzzers mutate, built once per session.

`cmfuzz` (next to this file) is importable because pytest puts this folder on sys.path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session")
def real_folder(tmp_path_factory, coco_mini_root, mirflickr_root) -> Callable[[str], Path]:
    """`real_folder(target_name)`: the folder of real files a fuzz target starts from (built on first use)."""
    from cmfuzz.artifacts import build_coco
    from cmfuzz.targets import TARGETS

    root = tmp_path_factory.mktemp("real")
    ctx = {"work": root, "coco_root": coco_mini_root, "mirflickr_root": mirflickr_root}
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        target = TARGETS[name]
        key = target.builder
        if key not in built:
            if "coco_small" not in ctx:
                ctx["coco_small"] = build_coco(root / "coco-small", coco_mini_root)
            with pytest.MonkeyPatch.context() as mp:  # session scope: isolate caches like tests/conftest.py
                from cmhash import constants

                mp.setattr(constants, "CACHE_DIR", root / "cache")
                mp.setenv("CMHASH_CACHE", str(root / "cache"))  # for the child processes it starts
                mp.setenv("HF_HUB_OFFLINE", "1")
                built[key] = target.build(root / key, ctx)
        return built[key]

    return get
