"""Published checkpoints: name → Hub repo, pinned to a 40-hex commit.

Nothing is published yet, so `MODELS` holds no entries. An entry is added here, by hand, after
`cmhash publish` printed its commit; pinning the commit (never a branch) means `zoo:NAME` always
loads the same bytes, and works offline once cached (a cached commit needs no HTTP call).

    register(PublishedModel(
        name="dmsh-coco-mini-64", repo_id="ORG/dmsh-coco-mini-64", revision="<40-hex commit>",
        method="dmsh", bits=64, dataset="coco-mini", metrics={"map_i2t": 0.338, "map_t2i": 0.335},
    ))

`load_hasher("zoo:dmsh-coco-mini-64")` then downloads exactly that commit.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from cmhash.errors import ConfigError
from cmhash.runtime.codes import check_bits

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


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

    def __post_init__(self) -> None:
        from cmhash.zoo.hub import check_repo_id

        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", self.name):
            raise ConfigError(f"model name {self.name!r}: use lower-case letters, digits, '.', '_' and '-'")
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
        return {**asdict(self), "metrics": dict(self.metrics), "source": self.source}


MODELS: dict[str, PublishedModel] = {}


def register(model: PublishedModel) -> PublishedModel:
    """Add an entry; a name can only be registered once."""
    if model.name in MODELS:
        raise ConfigError(f"a published model named {model.name!r} is already registered ({MODELS[model.name].source})")
    MODELS[model.name] = model
    return model


def get_model(name: str) -> PublishedModel:
    """The entry called `name`, or a ConfigError listing the known names."""
    if name not in MODELS:
        known = ", ".join(sorted(MODELS)) or "none yet: nothing has been published"
        raise ConfigError(f"no published model named {name!r}; known models: {known} (see `cmhash zoo list`)")
    return MODELS[name]


def list_models() -> list[PublishedModel]:
    """Every registered entry, sorted by name."""
    return [MODELS[name] for name in sorted(MODELS)]
