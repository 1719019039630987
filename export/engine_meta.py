"""Build-side half of the engine sidecar: the rebuild command and the metadata of a fresh engine.

The sidecar file is runtime/formats/engine_sidecar.py (its one reader and writer) and the check against
this machine `cmhash.runtime.engine_meta` (torch-free, so the runtime can check an engine before
deserializing it).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cmhash
from cmhash.runtime.engine_meta import Platform
from cmhash.runtime.formats.engine_sidecar import EngineMeta
from cmhash.runtime.io import sha256_file

__all__ = ["BuildOptions", "make_meta", "rebuild_command"]


@dataclass(frozen=True)
class BuildOptions:
    """Everything `cmhash export trt` takes; `sequence=None` means (1, min(16, max_length), max_length)."""

    batch: tuple[int, int, int] = (1, 32, 256)
    sequence: tuple[int, int, int] | None = None
    workspace_mb: int = 1024
    timing_cache: str | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    precision: str = "fp16"
    modalities: tuple[str, ...] | None = None


def rebuild_command(folder: str | Path, options: BuildOptions) -> str:
    """The exact `cmhash export trt` command line that builds engines with `options`."""
    parts = ["cmhash", "export", "trt", str(folder),
             "--min-batch", str(options.batch[0]), "--opt-batch", str(options.batch[1]),
             "--max-batch", str(options.batch[2])]
    if options.sequence is not None:
        parts += ["--min-seq", str(options.sequence[0]), "--opt-seq", str(options.sequence[1]),
                  "--max-seq", str(options.sequence[2])]
    parts += ["--workspace-mb", str(options.workspace_mb), "--precision", options.precision]
    if options.timing_cache:
        parts += ["--timing-cache", str(options.timing_cache)]
    if options.version_compatible:
        parts.append("--version-compatible")
    if options.hardware_compatible:
        parts.append("--hardware-compatible")
    for m in options.modalities or ():
        parts += ["--modality", m]
    return shlex.join(parts)


def make_meta(*, engine_path: Path, onnx_path: Path, platform: Platform, precision: str, precision_path: str,
              profiles: dict[str, dict[str, list[int]]], options: BuildOptions, command: str,
              modality: str | None = None, extra: dict[str, Any] | None = None) -> EngineMeta:
    return EngineMeta(
        engine_sha256=sha256_file(engine_path),
        tensorrt_version=str(platform.tensorrt_version),
        cuda_version=platform.cuda_version,
        gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability,
        precision=precision,
        precision_path=precision_path,
        profiles=profiles,
        source_onnx=onnx_path.name,
        source_onnx_sha256=sha256_file(onnx_path),
        build_command=command,
        version_compatible=options.version_compatible,
        hardware_compatibility="ampere_plus" if options.hardware_compatible else "none",
        workspace_mb=options.workspace_mb,
        modality=modality,
        cmhash_version=cmhash.__version__,
        extra=dict(extra or {}),
    )
