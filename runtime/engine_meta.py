"""The JSON sidecar of a TensorRT engine, and the check to run before deserializing one.

An engine runs only on the TensorRT version and GPU architecture that built it (unless it was built
version- or hardware-compatible), and TensorRT's own error for a mismatch is an opaque
"Serialization assertion ... Version tag does not match". So every engine `X.engine` gets a sidecar
`X.engine.json` (TensorRT and CUDA versions, GPU name and compute capability, precision path,
optimization profiles, sha256 of the engine and of its source ONNX, and the command that built it),
and `check_sidecar` compares it with this machine first and names the rebuild command on a mismatch.

Pure JSON and standard library: no torch, no TensorRT import, so the torch-free runtime can use it.
The machine's GPU is probed with CuPy, cuda-python or nvidia-smi, whichever is there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from cmhash.errors import EngineMismatchError
from cmhash.runtime.io import read_json, sha256_file

SIDECAR_FORMAT = "cmhash-trt-engine/1"
SIDECAR_SUFFIX = ".json"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class Platform:
    """What an engine depends on: TensorRT version, CUDA runtime version, GPU name and compute capability."""

    tensorrt_version: str | None = None
    cuda_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None  # "8.0", "9.0", ...

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability.replace('.', '')}" if self.compute_capability else "sm_?"


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
    from cmhash.runtime.io import atomic_write

    path = sidecar_path(engine_path)
    with atomic_write(path, "w") as fh:
        json.dump(meta.to_dict(), fh, indent=2, sort_keys=True)
    return path


def read_sidecar(engine_path: str | os.PathLike) -> EngineMeta:
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


# ------------------------------------------------------------------------------------- probing
def _version_text(v: int | None) -> str | None:
    """CUDA encodes 12.8 as 12080."""
    return None if v is None else f"{v // 1000}.{(v % 1000) // 10}"


def _probe_cupy() -> Platform | None:
    try:
        import cupy
    except Exception:  # noqa: BLE001 - an absent or broken CuPy is the same here
        return None
    try:
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(rt.getDevice())
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return Platform(cuda_version=_version_text(rt.runtimeGetVersion()), gpu_name=name,
                        compute_capability=f"{props['major']}.{props['minor']}")
    except Exception:  # noqa: BLE001 - no device
        return None


def _probe_cuda_python() -> Platform | None:
    try:
        from cuda.bindings import runtime as cudart
    except Exception:  # noqa: BLE001
        return None
    try:
        err, version = cudart.cudaRuntimeGetVersion()
        err2, props = cudart.cudaGetDeviceProperties(0)
        if int(err) or int(err2):
            return None
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return Platform(cuda_version=_version_text(version), gpu_name=name,
                        compute_capability=f"{props.major}.{props.minor}")
    except Exception:  # noqa: BLE001
        return None


def _probe_nvidia_smi() -> Platform | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, cap = first.rpartition(",")
    return Platform(gpu_name=name.strip() or None, compute_capability=cap.strip() or None) if first else None


PROBES: tuple[Callable[[], Platform | None], ...] = (_probe_cupy, _probe_cuda_python, _probe_nvidia_smi)


def current_platform(tensorrt_version: str | None = None) -> Platform:
    """This machine's GPU (first device) and CUDA runtime; fields stay None where nothing can tell."""
    for probe in PROBES:
        found = probe()
        if found is not None:
            return Platform(tensorrt_version, found.cuda_version, found.gpu_name, found.compute_capability)
    return Platform(tensorrt_version=tensorrt_version)


# -------------------------------------------------------------------------------------- checks
def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _cc(text: str | None) -> tuple[int, ...]:
    return _parse_version(text) if text else ()


def check_sidecar(engine_path: str | os.PathLike, platform: Platform | None = None, *,
                  onnx_path: str | os.PathLike | None = None, check_engine_hash: bool = True) -> EngineMeta:
    """Refuse an engine this machine cannot run, before TensorRT tries to deserialize it.

    Checks, all collected into one error: the engine file's sha256; the TensorRT version (exact,
    or same major and not older when built version-compatible); the compute capability (same, or
    >= 8.0 for Ampere-plus hardware compatibility); and, with `onnx_path`, that the engine was built
    from that ONNX file (an engine left over from an older export is stale). `platform` defaults to
    `current_platform()` with the TensorRT version of the installed `tensorrt` module, if any.
    """
    engine_path = Path(engine_path)
    meta = read_sidecar(engine_path)
    if platform is None:
        platform = current_platform(_installed_tensorrt_version())
    problems: list[str] = []
    if not engine_path.is_file():
        problems.append(f"the engine file {engine_path} is missing")
    elif check_engine_hash and sha256_file(engine_path) != meta.engine_sha256:
        problems.append(f"{engine_path.name} does not match the sha256 in its sidecar (truncated or replaced)")
    built, here = _parse_version(meta.tensorrt_version), _parse_version(platform.tensorrt_version or "")
    if not here:
        problems.append("TensorRT is not installed here (pip install 'cmhash[trt]')")
    elif meta.version_compatible:
        if here[:1] != built[:1] or here < built:
            problems.append(f"a version-compatible engine from TensorRT {meta.tensorrt_version} runs on later "
                            f"{built[0]}.x releases only; this machine has {platform.tensorrt_version}")
    elif here != built:
        problems.append(f"TensorRT {meta.tensorrt_version} built it; this machine has {platform.tensorrt_version}")
    built_cc, here_cc = _cc(meta.compute_capability), _cc(platform.compute_capability)
    if not here_cc:
        problems.append("no CUDA GPU found on this machine")
    elif meta.hardware_compatibility == "ampere_plus":
        if here_cc < (8, 0):
            problems.append(f"an Ampere-plus engine needs compute capability >= 8.0; this GPU is {platform.sm}")
    elif built_cc and here_cc != built_cc:
        problems.append(f"it was built on sm_{meta.compute_capability.replace('.', '')} ({meta.gpu_name}); "
                        f"this GPU is {platform.sm} ({platform.gpu_name})")
    if onnx_path is not None:
        onnx_path = Path(onnx_path)
        if onnx_path.is_file() and sha256_file(onnx_path) != meta.source_onnx_sha256:
            problems.append(f"{onnx_path.name} changed since the engine was built from it (stale engine)")
    if problems:
        raise EngineMismatchError(
            f"cannot use {engine_path}: " + "; ".join(problems) + f". Rebuild it with: {meta.build_command}"
        )
    return meta


def _installed_tensorrt_version() -> str | None:
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - absent, or the bindings without their libraries
        return None
    return str(getattr(tensorrt, "__version__", "")) or None
