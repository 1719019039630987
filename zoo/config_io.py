"""JSON round trips for the recipe configs (frozen dataclasses), written once.

Configs are data: they are saved as JSON next to every checkpoint and export, and a key this version
does not know is an error rather than silently ignored. A field that was renamed stays readable: a
config class lists `RENAMED = {old: new}`, and `from_dict` maps the old key once, on reading (the
one upgrade step; the config is written back with the new name only).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Mapping, TypeVar

from cmhash.errors import ConfigError

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """Mixin for frozen dataclasses: `replace`, `to_dict`/`from_dict` and `to_json`/`from_json`."""

    RENAMED: ClassVar[Mapping[str, str]] = {}
    # Fields holding a nested config object (a class with `from_dict`), e.g. a backbone's preprocessing.
    NESTED: ClassVar[Mapping[str, Any]] = {}

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again by `__post_init__`)."""
        _check_keys(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__} must be read from a mapping, got {type(data).__name__}")
        kwargs = _upgrade(cls, data)
        _check_keys(cls, kwargs)
        for f in dataclasses.fields(cls):  # JSON has no tuples: restore them so configs compare equal
            if isinstance(f.default, tuple) and isinstance(kwargs.get(f.name), list):
                kwargs[f.name] = tuple(kwargs[f.name])
        for name, nested in cls.NESTED.items():
            if isinstance(kwargs.get(name), Mapping):
                try:
                    kwargs[name] = nested.from_dict(kwargs[name])
                except ValueError as exc:
                    raise ConfigError(f"{cls.__name__} {name}: {exc}") from exc
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))


def _upgrade(cls: type[JsonConfig], data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with the keys of `cls.RENAMED` given their current names (a config saved before a rename)."""
    out = dict(data)
    for old, new in cls.RENAMED.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{cls.__name__}: both {old!r} and its new name {new!r} are set; keep only {new!r}")
            out[new] = out.pop(old)
    return out


def _check_keys(cls: type, data: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(known)}")
