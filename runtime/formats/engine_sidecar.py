"""The JSON sidecar of a TensorRT engine, `X.engine.json` next to `X.engine` (spec:
docs/formats/engine-sidecar.md).

It records what the engine depends on and how it was built: TensorRT and CUDA versions, GPU name and
compute capability, precision path, optimization profiles, sha256 of the engine and of its source
ONNX, and the command that built it. The one writer is `write_sidecar`, the one reader
`read_sidecar` (fields type-checked); `cmhash.runtime.engine_meta.check_sidecar` compares a sidecar
with this machine before an engine is deserialized.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from cmhash.errors import EngineMismatchError
from cmhash.runtime.io import atomic_write, read_json

SIDECAR_FORMAT = "cmhash-trt-engine/1"
SIDECAR_SUFFIX = ".json"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class EngineMeta:
    """The content of a sidecar (see the module docstring)."""

    engine_sha256: str
    tensorrt_version: str
    cuda_version: str | None
    gpu_name: str | None
    compute_capability: str | None
    precision: str  # "fp32", "fp16"
    precision_path: str  # "fp32", "builder-flag-fp16" (TensorRT 10), "fp16-onnx" (TensorRT 11)
    profiles: dict[str, dict[str, list[int]]]
    source_onnx: str
    source_onnx_sha256: str
    build_command: str
    version_compatible: bool = False
    hardware_compatibility: str = "none"  # "none", "ampere_plus", "same_compute_capability"
    workspace_mb: int | None = None
    modality: str | None = None
    cmhash_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SIDECAR_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "sidecar") -> "EngineMeta":
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise EngineMismatchError(f"{source} is not a cmhash engine sidecar (format {SIDECAR_FORMAT!r})")
        known = set(cls.__dataclass_fields__)
        missing = sorted(k for k, f in cls.__dataclass_fields__.items()
                         if k not in data and f.default is MISSING and f.default_factory is MISSING)
        if missing:
            raise EngineMismatchError(f"{source} lacks {', '.join(missing)}")
        bad = [f"{k}={str(data[k])[:40]!r}" for k, ok in _FIELD_CHECKS.items() if k in data and not ok(data[k])]
        if bad:
            raise EngineMismatchError(f"{source} has fields of the wrong type ({', '.join(bad)}): it is damaged; "
                                      "rebuild the engine with cmhash export trt")
        return cls(**{k: v for k, v in data.items() if k in known})


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _profiles(v: Any) -> bool:
    """{input name: {"min"|"opt"|"max": [int, ...]}}."""
    return isinstance(v, dict) and all(
        isinstance(p, dict) and all(isinstance(dims, list) and all(type(d) is int for d in dims) for dims in p.values())
        for p in v.values())


# The type each sidecar field must have: a damaged sidecar is refused here, not deep in check_sidecar.
_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "engine_sha256": _str, "tensorrt_version": _str, "cuda_version": _opt_str, "gpu_name": _opt_str,
    "compute_capability": _opt_str, "precision": _str, "precision_path": _str, "profiles": _profiles,
    "source_onnx": _str, "source_onnx_sha256": _str, "build_command": _str,
    "version_compatible": lambda v: isinstance(v, bool), "hardware_compatibility": _str,
    "workspace_mb": lambda v: v is None or type(v) is int, "modality": _opt_str, "cmhash_version": _opt_str,
    "extra": lambda v: isinstance(v, dict),
}


def write_sidecar(engine_path: str | os.PathLike, meta: EngineMeta) -> Path:
    """Write `engine.json` next to the engine, atomically."""
    path = sidecar_path(engine_path)
    with atomic_write(path, "w") as fh:
        json.dump(meta.to_dict(), fh, indent=2, sort_keys=True)
    return path


def read_sidecar(engine_path: str | os.PathLike) -> EngineMeta:
    """The sidecar of `engine_path`; EngineMismatchError (naming the rebuild) when missing or damaged."""
    path = sidecar_path(engine_path)
    try:
        data = read_json(path)
    except FileNotFoundError as exc:
        raise EngineMismatchError(
            f"{engine_path} has no sidecar {path.name}: cannot tell which TensorRT version and GPU built it. "
            f"Rebuild it with: cmhash export trt {Path(engine_path).parent}"
        ) from exc
    except (ValueError, OSError) as exc:
        raise EngineMismatchError(f"{path} is not valid JSON ({exc}); rebuild the engine with cmhash export trt") from exc
    return EngineMeta.from_dict(data, str(path))
