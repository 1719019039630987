"""Every setting cmhash takes from the environment, parsed once, at import (huggingface_hub's
`constants.py` is the model).

Why one module: a setting read in three places drifts into three defaults. Code reads these as
`constants.NAME` at call time (never `from cmhash.constants import NAME`), so that a test
monkeypatches the attribute here instead of the environment. A child process (a CLI run in a
subprocess) parses its own environment once, here.

Torch-free and dependency-free: the runtime imports it.
"""

from __future__ import annotations

import os
from pathlib import Path


def _path(name: str) -> Path | None:
    """`$name` as a path (with `~` expanded), or None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


# The repository root in a source checkout (cmhash/ sits in it); it is where ../shared/data is looked for.
REPO_ROOT: Path = Path(__file__).resolve().parents[1]

# `$CMHASH_CACHE`, else `~/.cache/cmhash`: the feature cache (features/), the demo's exports and sheet.
CACHE_DIR: Path = _path("CMHASH_CACHE") or Path.home() / ".cache" / "cmhash"

# `$CMHASH_DATA`: the folder holding the named datasets. None: look for ../shared/data (see
# `SHARED_DATA` and `cmhash.zoo.data.default_data_root`).
DATA_DIR: Path | None = _path("CMHASH_DATA")

# Where the data folder is looked for when `$CMHASH_DATA` is unset, relative to the working
# directory's parent and to the repository's parent.
SHARED_DATA: Path = Path("shared") / "data"


def features_cache_dir() -> Path:
    """The frozen-backbone feature cache: `CACHE_DIR/features`."""
    return CACHE_DIR / "features"


def data_candidates() -> list[Path]:
    """The folders tried, in order, when `DATA_DIR` is None (the working directory is read now)."""
    return [Path.cwd().parent / SHARED_DATA, REPO_ROOT.parent / SHARED_DATA]
