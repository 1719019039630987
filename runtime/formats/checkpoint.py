"""The checkpoint folder of a trained hasher (spec: docs/formats/checkpoint.md).

    config.json         CheckpointConfig (format "cmhash-hasher/2"), written last: the commit
    model.safetensors   the weights (never a pickle): the heads, plus the backbones if they trained
    vocabulary.json     the BoW vocabulary of a bag-of-words text tower (runtime/bow.py's format)
    manifest.json       sha256 and size of the files above (runtime/formats/manifest.py)

Everything needed to rebuild the inputs is in the folder: the backbone configs pin preprocessing and
tokenizer, and a BoW tower's vocabulary is saved, so exporting needs no dataset. The one writer is
`write_checkpoint`, the one reader `read_checkpoint`; the zoo turns the typed config into a model
(the method settings in `recipe` go through the method config's own from-dict path, which also
upgrades old key names). Version 1 configs (cmhash 0.1.0: no `vocabulary` field, no manifest) load
through `CheckpointConfig.from_dict`, which upgrades them in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from cmhash.errors import ConfigError, WeightsError
from cmhash.runtime.formats import manifest
from cmhash.runtime.io import atomic_write, read_json

FORMAT = "cmhash-hasher/2"
V1 = "cmhash-hasher/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCABULARY_NAME = "vocabulary.json"
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
MODALITIES = ("image", "text")


@dataclass(frozen=True)
class CheckpointConfig:
    """The content of config.json, typed: what a loader needs to rebuild and feed the model.

    - `recipe`: the method's settings (the zoo's method config `to_dict`), opaque here;
    - `image_backbone` / `text_backbone`: the zoo's `BackboneConfig.to_dict`, opaque here;
    - `vocabulary`: the file (in the folder) of the BoW text tower's vocabulary, or None;
    - `data`: `dataset`, `split_seed`, `split` sizes; `training` and `metrics`: set when a run ends.
    """

    method: str
    bits: int
    recipe: Mapping[str, Any]
    modalities: tuple[str, ...]
    image_backbone: Mapping[str, Any]
    text_backbone: Mapping[str, Any]
    backbones_trained: bool = False
    vocabulary: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    cmhash_version: str = ""

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ConfigError(f"checkpoint config: {'; '.join(problems)}")

    def backbone(self, modality: str) -> Mapping[str, Any]:
        return self.image_backbone if modality == "image" else self.text_backbone

    @property
    def dataset(self) -> str | None:
        return self.data.get("dataset")

    @property
    def split_seed(self) -> int:
        return int(self.data.get("split_seed") or 0)

    def replace(self, **changes: Any) -> "CheckpointConfig":
        unknown = sorted(set(changes) - _KEYS)
        if unknown:
            raise ConfigError(f"unknown checkpoint config field(s) {unknown}; known: {sorted(_KEYS)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, with `"format": FORMAT`."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["modalities"] = list(self.modalities)
        return {"format": FORMAT, **json.loads(json.dumps(out))}

    @classmethod
    def from_dict(cls, raw: Any, source: str = CONFIG_NAME) -> "CheckpointConfig":
        """Parse (and upgrade) a config.json object; WeightsError if it is not one, ConfigError if a
        field is wrong."""
        if not isinstance(raw, dict):
            raise WeightsError(f"{source} must hold a JSON object, got {type(raw).__name__}: not a cmhash checkpoint config")
        fmt = raw.get("format")
        if fmt not in (V1, FORMAT):
            newer = isinstance(fmt, str) and fmt.startswith("cmhash-hasher/")
            raise WeightsError(f"{source} has format {str(fmt)[:40]!r}; this cmhash reads {V1!r} and {FORMAT!r}"
                               + (": upgrade cmhash" if newer else ": not a cmhash checkpoint config"))
        data = {k: v for k, v in raw.items() if k != "format"}
        missing = [k for k in ("method", "recipe", "modalities", "image_backbone", "text_backbone") if k not in data]
        if missing:
            raise WeightsError(f"{source} lacks {', '.join(missing)}: not a cmhash checkpoint config")
        if fmt == V1 and "bits" not in data:  # v1 wrote bits at the top level too, but only as a copy
            data["bits"] = data["recipe"].get("bits", data["recipe"].get("n_bits")) if isinstance(data["recipe"], dict) else None
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; this cmhash knows {sorted(_KEYS)} "
                              "(restore the config.json saved with the weights, or upgrade cmhash)")
        if isinstance(data.get("modalities"), list):
            data["modalities"] = tuple(data["modalities"])
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}; restore the config.json saved with the weights") from None


_KEYS = {f.name for f in fields(CheckpointConfig)}


def _problems(c: CheckpointConfig) -> list[str]:
    out = []
    if not isinstance(c.method, str) or not c.method:
        out.append(f"method must be a non-empty string, got {str(c.method)[:40]!r}")
    if type(c.bits) is not int or c.bits <= 0 or c.bits % 8:
        out.append(f"bits must be a positive multiple of 8, got {str(c.bits)[:40]!r}")
    if (not isinstance(c.modalities, tuple) or not c.modalities or any(m not in MODALITIES for m in c.modalities)
            or len(set(c.modalities)) != len(c.modalities)):
        out.append(f"modalities must be a list of distinct 'image' / 'text', got {str(c.modalities)[:80]!r}")
    for name in ("recipe", "image_backbone", "text_backbone", "data"):
        if not isinstance(getattr(c, name), Mapping):
            out.append(f"{name} must be an object, got {type(getattr(c, name)).__name__}")
    for name in ("training", "metrics"):
        if getattr(c, name) is not None and not isinstance(getattr(c, name), Mapping):
            out.append(f"{name} must be an object or null, got {type(getattr(c, name)).__name__}")
    if not isinstance(c.backbones_trained, bool):
        out.append(f"backbones_trained must be true or false, got {str(c.backbones_trained)[:40]!r}")
    if c.vocabulary is not None and (not manifest.inside(c.vocabulary) or "/" in c.vocabulary):
        out.append(f"vocabulary must name a file in the checkpoint folder, got {str(c.vocabulary)[:80]!r}")
    if not isinstance(c.cmhash_version, str):
        out.append(f"cmhash_version must be a string, got {str(c.cmhash_version)[:40]!r}")
    return out


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder as read: its config and the paths of its files."""

    folder: Path
    config: CheckpointConfig

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_NAME

    @property
    def vocabulary(self) -> Path | None:
        """The vocabulary file of a BoW text tower, when the checkpoint saved one."""
        return self.folder / self.config.vocabulary if self.config.vocabulary else None


def read_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """The one reader: parse (and upgrade) `folder/config.json`.

    Raises WeightsError when the folder is not a checkpoint (no or unreadable config.json, or a
    config.json of another kind), ConfigError when a field is wrong. The weights are read by the zoo
    (safetensors, shapes checked against the config before anything is allocated).
    """
    folder = Path(folder)
    path = folder / CONFIG_NAME
    try:
        raw = read_json(path)
    except FileNotFoundError as exc:
        raise WeightsError(f"{folder} has no {CONFIG_NAME}: not a cmhash checkpoint folder") from exc
    except (ValueError, OSError) as exc:
        raise WeightsError(f"{path} is not valid JSON ({exc})") from exc
    checkpoint = Checkpoint(folder, CheckpointConfig.from_dict(raw, str(path)))
    if checkpoint.vocabulary is not None and not checkpoint.vocabulary.is_file():
        raise WeightsError(f"{path} names the vocabulary {checkpoint.config.vocabulary}, which is missing from "
                           f"{folder}: copy the whole checkpoint folder")
    return checkpoint


def write_checkpoint(folder: str | os.PathLike, config: CheckpointConfig, weights: bytes,
                     assets: Mapping[str, bytes] | None = None) -> Path:
    """The one writer: assets (the vocabulary), weights, config.json, then manifest.json, each atomic.

    The old manifest goes first, so a crash midway leaves a folder without a manifest (loadable, the
    files unchecked) rather than one whose manifest no longer matches. `assets` must hold the file
    `config.vocabulary` names, if any.
    """
    folder = Path(folder)
    assets = dict(assets or {})
    if config.vocabulary is not None and config.vocabulary not in assets:
        raise ConfigError(f"the config names the vocabulary {config.vocabulary!r}; pass its bytes in assets")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / manifest.MANIFEST_NAME).unlink(missing_ok=True)
    for name, data in {**assets, WEIGHTS_NAME: weights}.items():
        with atomic_write(folder / name) as fh:
            fh.write(data)
    with atomic_write(folder / CONFIG_NAME, "w") as fh:
        json.dump(config.to_dict(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    manifest.write_manifest(folder, [*assets, WEIGHTS_NAME, CONFIG_NAME])
    return folder
