"""The model zoo: every hasher `load_hasher("zoo:NAME")` knows, shipped and published alike.

Two kinds of entry, listed together by `list_models` (as timm's `list_pretrained` lists its tags):

- **shipped**: a folder in the package (`zoo/pretrained/<name>/`, made by bench/make_default_hasher.py).
  Each is found by its config.json, and its method, bits, dataset and test mAP are read from that file
  (`cmhash.runtime.formats.checkpoint`), so the listing cannot drift from the weights.
- **published**: a Hub repository pinned to a 40-hex commit, added here by hand with `register` after
  `cmhash publish` printed the commit. Pinning the commit (never a branch) means `zoo:NAME` always
  loads the same bytes, and works offline once cached. None is registered yet:

      register(PublishedModel(
          name="dmsh-coco-mini-64-hub", repo_id="ORG/dmsh-coco-mini-64", revision="<40-hex commit>",
          method="dmsh", bits=64, dataset="coco-mini", metrics={"map_i2t": 0.338, "map_t2i": 0.335},
      ))

This module imports neither torch nor `cmhash.zoo.hub` (the hub imports it to resolve `zoo:` names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

from cmhash.errors import CheckpointNotFoundError, ConfigError
from cmhash.runtime.codes import check_bits
from cmhash.runtime.formats.checkpoint import read_checkpoint
from cmhash.zoo import pretrained
from cmhash.zoo.repo_id import check_repo_id

METRICS = ("map_i2t", "map_t2i")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def shipped_name(method: str, dataset: str, bits: int) -> str:
    """The zoo name of a shipped hasher, e.g. `dhaph-coco-mini-64`."""
    return f"{method}-{dataset}-{bits}"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-'")


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint; `metrics` are its test mAP@all (`map_i2t`, `map_t2i`) from config.json."""

    name: str
    repo_id: str
    revision: str
    method: str
    bits: int
    dataset: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    shipped = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        check_repo_id(self.repo_id)
        if not isinstance(self.revision, str) or not _COMMIT.match(self.revision):
            raise ConfigError(f"{self.name}: revision {self.revision!r} is not a 40-hex commit id; pin the commit "
                              "that `cmhash publish` printed, never a branch or tag")
        check_bits(self.bits)

    @property
    def source(self) -> str:
        """The `load_hasher` source of exactly this commit."""
        return f"hf-hub:{self.repo_id}@{self.revision}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shipped": False, "method": self.method, "bits": self.bits,
                "dataset": self.dataset, "metrics": dict(self.metrics), "repo_id": self.repo_id,
                "revision": self.revision, "source": self.source}


@dataclass(frozen=True)
class ShippedModel:
    """A hasher inside the package; everything but the folder comes from its config.json."""

    name: str
    folder: Path
    method: str
    bits: int
    dataset: str
    metrics: Mapping[str, float]
    shipped = True

    @classmethod
    def from_folder(cls, folder: Path) -> "ShippedModel":
        config = read_checkpoint(folder).config
        test = (config.metrics or {}).get("test", {})
        return cls(folder.name, folder, config.method, config.bits, config.data.get("dataset", ""),
                   {k: float(test[k]) for k in METRICS if k in test})

    @property
    def source(self) -> str:
        return f"local-dir:{self.folder}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shipped": True, "method": self.method, "bits": self.bits,
                "dataset": self.dataset, "metrics": dict(self.metrics), "path": str(self.folder),
                "source": f"zoo:{self.name}"}


ZooModel = Union[ShippedModel, PublishedModel]
MODELS: dict[str, PublishedModel] = {}  # the published entries; the shipped ones are found on disk


def shipped_models() -> dict[str, ShippedModel]:
    """The hashers in zoo/pretrained/ (`cmhash.zoo.pretrained.names`), by name."""
    return {name: ShippedModel.from_folder(pretrained.ROOT / name) for name in pretrained.names()}


def register(model: PublishedModel) -> PublishedModel:
    """Add a published entry; a name can only be used once, shipped names included."""
    if model.name in MODELS or model.name in shipped_models():
        taken = MODELS[model.name].source if model.name in MODELS else "a shipped hasher"
        raise ConfigError(f"a model named {model.name!r} is already registered ({taken}); pick another name")
    MODELS[model.name] = model
    return model


def list_models() -> list[ZooModel]:
    """Every entry, shipped and published, sorted by name."""
    models: dict[str, ZooModel] = {**MODELS, **shipped_models()}
    return [models[name] for name in sorted(models)]


def get_model(name: str) -> ZooModel:
    """The entry called `name`, or a CheckpointNotFoundError listing the known names."""
    shipped = shipped_models()
    if name in shipped:
        return shipped[name]
    if name in MODELS:
        return MODELS[name]
    known = ", ".join(sorted({*shipped, *MODELS})) or "none (reinstall cmhash: its shipped hashers are missing)"
    raise CheckpointNotFoundError(f"no zoo model named {name!r}; the zoo has: {known} (see `cmhash zoo list`)")
