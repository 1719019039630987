"""The check to run before deserializing a TensorRT engine: its sidecar against this machine.

An engine runs only on the TensorRT version and GPU architecture that built it (unless it was built
version- or hardware-compatible), and TensorRT's own error for a mismatch is an opaque
"Serialization assertion ... Version tag does not match". So every engine `X.engine` gets a sidecar
`X.engine.json` (TensorRT and CUDA versions, GPU name and compute capability, precision path,
optimization profiles, sha256 of the engine and of its source ONNX, and the command that built it),
and `check_sidecar` compares it with this machine first and names the rebuild command on a mismatch.
The sidecar file itself (fields, reader, writer) is runtime/formats/engine_sidecar.py.

Pure JSON and standard library: no torch, no TensorRT import, so the torch-free runtime can use it.
The machine's GPU is probed with CuPy, cuda-python or nvidia-smi, whichever is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cmhash.errors import EngineMismatchError
from cmhash.runtime.formats.engine_sidecar import EngineMeta, read_sidecar
from cmhash.runtime.io import sha256_file

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
