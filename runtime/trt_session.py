"""Run a serialized TensorRT engine natively, with CuPy device buffers (no torch, no pycuda).

Thin on purpose: TensorRT cannot be installed on this project's machines (docs/PLATFORM-NOTES.md),
so this path has not run on a real engine. What it does, in the TensorRT 10/11 run API:
check the engine's sidecar first (`runtime.engine_meta.check_sidecar`: TensorRT version, GPU
architecture, engine and source-ONNX sha256) so a mismatch is a clear error naming the rebuild
command instead of "Serialization assertion ... Version tag does not match"; then
`Runtime.deserialize_cuda_engine` -> `create_execution_context`; per batch, by tensor name,
`set_input_shape` + `set_tensor_address` (CuPy `.data.ptr`), `execute_async_v3(stream)`, copy out.
tests/runtime/test_trt_session.py drives it with test doubles of `tensorrt` and `cupy`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cmhash.errors import EngineMismatchError, require
from cmhash.runtime.engine_meta import Platform, check_sidecar, current_platform
from cmhash.runtime.formats.engine_sidecar import EngineMeta


class TensorRTSession:
    """One engine; `run(feed)` -> outputs by name, like `OrtSession.run`."""

    provider = "TensorRT (native)"

    def __init__(self, engine: str | os.PathLike, *, onnx_path: str | os.PathLike | None = None,
                 trt: Any = None, cupy: Any = None, platform: Platform | None = None) -> None:
        self.trt = trt if trt is not None else require("tensorrt", "trt", "The TensorRT backend")
        self.cp = cupy if cupy is not None else require("cupy", "gpu", "The TensorRT backend's device buffers")
        self.model = Path(engine)
        platform = platform or current_platform(str(self.trt.__version__))
        self.meta: EngineMeta = check_sidecar(self.model, platform, onnx_path=onnx_path)
        self._logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._runtime = self.trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.model.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"TensorRT {self.trt.__version__} could not deserialize {self.model} although "
                                      f"its sidecar matches this machine; rebuild it with: {self.meta.build_command}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.providers = (self.provider,)
        self.metadata: dict[str, str] = {}

    def tensor_dtype(self, name: str) -> Any:
        """The numpy dtype of an input or output tensor, as the engine declares it."""
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def run(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        cp, ctx = self.cp, self.context
        stream = cp.cuda.Stream(non_blocking=True)
        keep = []  # device buffers must outlive the launch
        with stream:
            for name in self.inputs:
                host = np.ascontiguousarray(feed[name], dtype=self.tensor_dtype(name))
                device = cp.asarray(host)
                keep.append(device)
                ctx.set_input_shape(name, tuple(host.shape))
                ctx.set_tensor_address(name, int(device.data.ptr))
            results = {}
            for name in self.outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                device = cp.empty(shape, dtype=self.tensor_dtype(name))
                keep.append(device)
                results[name] = device
                ctx.set_tensor_address(name, int(device.data.ptr))
            if not ctx.execute_async_v3(stream.ptr):
                raise EngineMismatchError(f"TensorRT failed to run {self.model.name} (execute_async_v3 returned False); "
                                          f"rebuild it with: {self.meta.build_command}")
            stream.synchronize()
        wanted = list(outputs) if outputs is not None else self.outputs
        return {name: cp.asnumpy(results[name]) for name in wanted}
