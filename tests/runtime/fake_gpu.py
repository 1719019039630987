"""Test doubles of `tensorrt` (the run API) and `cupy` (device buffers), recording the calls.

Neither can run here (no TensorRT, no GPU: docs/PLATFORM-NOTES.md). The fake engine computes its
outputs with onnxruntime on the ONNX file named in the "engine" bytes, reading its inputs from, and
writing its outputs to, the fake device buffers registered with `set_tensor_address`. So a test sees
exactly what the session under test put into which buffer, and what it read back.
"""

from __future__ import annotations

import itertools
import types
from types import SimpleNamespace

import numpy as np

ENGINE_PREFIX = b"FAKE-ENGINE:"


class FakeCupy(types.ModuleType):
    """numpy arrays behind integer 'device pointers'; a stream; the device query _probe_cupy uses."""

    def __init__(self, gpu=("Fake H100", 9, 0)) -> None:
        super().__init__("cupy")
        self.memory: dict[int, np.ndarray] = {}
        self._ptrs = itertools.count(0x1000, 0x1000)
        name, major, minor = gpu
        props = {"name": name.encode(), "major": major, "minor": minor}
        self.cuda = SimpleNamespace(
            Stream=self._stream,
            runtime=SimpleNamespace(getDevice=lambda: 0, getDeviceProperties=lambda _i: props,
                                    runtimeGetVersion=lambda: 12080))

    def _wrap(self, host: np.ndarray):
        ptr = next(self._ptrs)
        self.memory[ptr] = host
        return SimpleNamespace(data=SimpleNamespace(ptr=ptr), host=host)

    def asarray(self, host):
        return self._wrap(np.array(host, copy=True))

    def empty(self, shape, dtype):
        return self._wrap(np.full(shape, 0xAB, dtype=dtype) if np.dtype(dtype).kind in "iu" else np.full(shape, np.nan, dtype))

    def asnumpy(self, device):
        return device.host.copy()

    def _stream(self, non_blocking=False):
        class Stream:
            ptr = 0xBEEF

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

        return Stream()


class FakeTensorRT(types.ModuleType):
    def __init__(self, cupy: FakeCupy, version: str = "10.9.0.34", *, deserialize_fails: bool = False,
                 execute_fails: bool = False) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        fake = self
        self.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
        self.nptype = lambda dtype: dtype  # the fake's tensor dtypes are numpy types already

        class Logger:
            WARNING = 2

            def __init__(self, severity=2):
                fake.calls.append(("Logger", severity))

        class Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addresses = engine, {}, {}

            def set_input_shape(self, name, shape):
                fake.calls.append(("set_input_shape", name, tuple(shape)))
                self.shapes[name] = tuple(shape)
                return True

            def set_tensor_address(self, name, ptr):
                fake.calls.append(("set_tensor_address", name))
                self.addresses[name] = ptr
                return True

            def get_tensor_shape(self, name):
                fake.calls.append(("get_tensor_shape", name))
                batch = self.shapes[self.engine.inputs[0]][0]
                return (batch, self.engine.width[name])

            def execute_async_v3(self, stream):
                fake.calls.append(("execute_async_v3", stream))
                if execute_fails:
                    return False
                feed = {n: cupy.memory[self.addresses[n]] for n in self.engine.inputs}
                for name, value in zip(self.engine.outputs, self.engine.session.run(self.engine.outputs, feed)):
                    cupy.memory[self.addresses[name]][...] = value
                return True

        class Engine:
            def __init__(self, onnx_path):
                import onnxruntime as ort

                self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
                self.inputs = [i.name for i in self.session.get_inputs()]
                self.outputs = [o.name for o in self.session.get_outputs()]
                types_ = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}
                self.dtypes = {t.name: types_[t.type] for t in [*self.session.get_inputs(), *self.session.get_outputs()]}
                self.width = {o.name: o.shape[1] for o in self.session.get_outputs()}
                self.num_io_tensors = len(self.inputs) + len(self.outputs)

            def get_tensor_name(self, i):
                return (self.inputs + self.outputs)[i]

            def get_tensor_mode(self, name):
                return "INPUT" if name in self.inputs else "OUTPUT"

            def get_tensor_dtype(self, name):
                return self.dtypes[name]

            def create_execution_context(self):
                fake.calls.append(("create_execution_context",))
                return Context(self)

        class Runtime:
            def __init__(self, logger):
                fake.calls.append(("Runtime",))

            def deserialize_cuda_engine(self, blob):
                fake.calls.append(("deserialize_cuda_engine", len(blob)))
                if deserialize_fails or not blob.startswith(ENGINE_PREFIX):
                    return None
                return Engine(blob[len(ENGINE_PREFIX):].decode())

        self.Logger, self.Runtime = Logger, Runtime
