"""Where the hashers shipped inside the package live, so the demo and first use need no download.

One folder per hasher holds the trained hash heads (model.safetensors), config.json, manifest.json and
the model card README.md; the frozen backbones come from their own PyPI packages. This module only
locates them (cheaply: `cmhash --help` lists the names); `cmhash.zoo.registry` turns them into zoo
entries read from their config.json, and `bench/make_default_hasher.py` regenerates them.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT = "dhaph-coco-mini-64"  # the demo's hasher: DHaPH, the best of the three at 64 bits in RESULTS.md


def names() -> list[str]:
    """The shipped hashers: the folders here that hold a config.json."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())
