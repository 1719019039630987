"""onnxruntime sessions that fail loudly when the asked-for GPU provider is not what they got.

onnxruntime-gpu lists CUDA and TensorRT in `get_available_providers()` even on a machine without a
GPU (that is the list compiled in), and a session asked for them falls back to the CPU with only a
warning (docs/PLATFORM-NOTES.md). Only `session.get_providers()` tells what a session really runs
on, so `OrtSession` compares it with the request after creation and raises
`ProviderUnavailableError`, unless the caller passed `allow_fallback=True` (then it warns with
`ProviderFallbackWarning` and runs on what it got).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cmhash.errors import (EncoderError, ExportFolderError, InvalidInputError, ProviderFallbackWarning,
                           ProviderUnavailableError, require)
from cmhash.validators import optional_positive_int

PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _fix_hint(ort: Any) -> str:
    pkg = "onnxruntime-gpu" if "onnxruntime-gpu" in _installed_ort() else "onnxruntime (CPU-only build)"
    return (f"installed: {pkg} {ort.__version__}, compiled-in providers: {', '.join(ort.get_available_providers())}. "
            f"Fix: install the GPU build instead of the CPU one (pip uninstall onnxruntime; pip install "
            f"'cmhash[gpu]'), check that a CUDA GPU is visible (nvidia-smi) and that the CUDA/cuDNN libraries "
            f"onnxruntime-gpu needs are on the library path; or pass allow_fallback=True "
            f"(CLI: --allow-cpu-fallback) to run on the CPU")


def _installed_ort() -> str:
    from importlib import metadata

    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
    return "onnxruntime"


def _load_errors() -> tuple[type[BaseException], ...]:
    """What onnxruntime raises for a model it cannot load: its own pybind exceptions (InvalidProtobuf,
    InvalidGraph, Fail, ...: no common base class but Exception) and the builtins its Python side raises
    (RuntimeError, ValueError (UnicodeDecodeError included), OSError). Not MemoryError."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # pragma: no cover - every onnxruntime build has it
        state = None
    own = tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception)
                and not issubclass(c, MemoryError)) if state else ()
    return (*own, RuntimeError, ValueError, OSError)


def _unloadable(model: Path, provider: str, exc: BaseException) -> ExportFolderError:
    """The typed error for a model onnxruntime refused: which file, why, and what to do."""
    hint = "" if provider == "cpu" else f" (if the {provider} setup is the suspect, try provider='cpu')"
    return ExportFolderError(
        f"onnxruntime cannot load {model} ({type(exc).__name__}: {str(exc).strip()[:300]}): the file is damaged "
        f"or not an ONNX model this onnxruntime reads; copy the export folder again or export the checkpoint "
        f"again (cmhash export onnx CHECKPOINT --out DIR){hint}")


class OrtSession:
    """One ONNX model in onnxruntime, on the provider asked for (checked), with typed inputs.

    `threads`: intra-op threads (None: onnxruntime's default, all cores).
    """

    def __init__(self, model: str | os.PathLike, provider: str = "cpu", *, allow_fallback: bool = False,
                 threads: int | None = None, device_id: int = 0) -> None:
        if provider not in PROVIDERS:
            raise InvalidInputError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
        optional_positive_int(threads, "threads")
        ort = require("onnxruntime", "cpu", "Running ONNX encoders")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # onnxruntime's own warnings would bury ours
        if threads is not None:
            opts.intra_op_num_threads = threads
        wanted = PROVIDERS[provider]
        # device_id only for providers compiled in: onnxruntime logs an error line for the others.
        compiled = set(ort.get_available_providers())
        options = [{"device_id": device_id} if p != "CPUExecutionProvider" and p in compiled else {} for p in wanted]
        self.model = Path(model)
        with warnings.catch_warnings():  # "Specified provider ... is not in available provider names"
            warnings.simplefilter("ignore")
            try:
                self.session = ort.InferenceSession(str(model), opts, providers=list(wanted),
                                                    provider_options=options)
            except _load_errors() as exc:
                raise _unloadable(self.model, provider, exc) from exc
        self.requested = provider
        self.providers = tuple(self.session.get_providers())
        if self.providers[:1] != wanted[:1]:
            message = (f"asked for onnxruntime provider {wanted[0]} for {self.model.name}, but the session runs on "
                       f"{', '.join(self.providers)}; " + _fix_hint(ort))
            if not allow_fallback:
                raise ProviderUnavailableError(message)
            warnings.warn(f"{message}. Running on {self.providers[0]} (allow_fallback=True).",
                          ProviderFallbackWarning, stacklevel=3)
        try:
            self.inputs = {i.name: i for i in self.session.get_inputs()}
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        except _load_errors() as exc:  # e.g. UnicodeDecodeError: metadata or names that are not UTF-8
            raise _unloadable(self.model, provider, exc) from exc

    @property
    def provider(self) -> str:
        """The provider that actually runs the model's first node group."""
        return self.providers[0]

    def input_dtype(self, name: str) -> Any:
        return _NUMPY.get(self.inputs[name].type, np.float32)

    def run(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs by name; inputs are cast to the model's declared input types."""
        typed = {name: np.ascontiguousarray(value, dtype=self.input_dtype(name)) for name, value in feed.items()}
        names = list(outputs) if outputs is not None else self.outputs
        try:
            values = self.session.run(names, typed)
        except Exception as exc:  # onnxruntime's pybind errors (Fail, InvalidArgument, ...) share no base class
            shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in typed.items())
            raise EncoderError(f"onnxruntime ({self.provider}) could not run {self.model.name} on {shapes}: "
                               f"{str(exc).strip()[:500]}") from exc
        return dict(zip(names, values))
