"""A test double of the `tensorrt` module: the calls cmhash makes, recorded, with no GPU.

TensorRT cannot be installed on this project's machines (docs/PLATFORM-NOTES.md). The fake follows
the Python API of TensorRT 10 and 11 closely enough for `cmhash.export.tensorrt`: the parser reads the
real ONNX file's inputs (dynamic dims as -1), and TensorRT 11's module has no `BuilderFlag.FP16`, so
touching it fails as it would on the real 11.x.
"""

from __future__ import annotations

import enum
import types
from types import SimpleNamespace


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class FakeTensorRT(types.ModuleType):
    def __init__(self, version: str = "10.9.0.34", *, parse_errors: list[str] | None = None,
                 build_result: bytes | None = b"FAKE-ENGINE", build_log: list[str] | None = None) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        self.parse_errors = list(parse_errors or [])
        self.build_result = build_result
        self.build_log = list(build_log or [])
        fake = self
        major = int(version.split(".")[0])
        flags = {"VERSION_COMPATIBLE": "VERSION_COMPATIBLE", "TF32": "TF32"}
        if major < 11:
            flags.update(FP16="FP16", INT8="INT8")
        self.BuilderFlag = SimpleNamespace(**flags)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.HardwareCompatibilityLevel = SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS")

        class ILogger:
            Severity = Severity

            def __init__(self) -> None:
                fake.calls.append(("ILogger",))

        class Logger(ILogger):
            WARNING = Severity.WARNING

            def __init__(self, severity=Severity.WARNING) -> None:
                super().__init__()

            def log(self, severity, msg):
                pass

        class Tensor:
            def __init__(self, name, shape):
                self.name, self.shape = name, tuple(shape)

        class Network:
            def __init__(self) -> None:
                self.inputs: list[Tensor] = []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class ParserError:
            def __init__(self, desc):
                self._desc = desc

            def desc(self):
                return self._desc

            def __str__(self):
                return f"In node 7 (parseGraph): UNSUPPORTED_NODE: {self._desc}"

        class OnnxParser:
            def __init__(self, network, logger) -> None:
                self.network, self.logger = network, logger
                fake.calls.append(("OnnxParser",))

            def parse_from_file(self, path):
                import onnx

                fake.calls.append(("parse_from_file", str(path)))
                if fake.parse_errors:
                    return False
                model = onnx.load(str(path), load_external_data=False)
                for v in model.graph.input:
                    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                    self.network.inputs.append(Tensor(v.name, dims))
                return True

            @property
            def num_errors(self):
                return len(fake.parse_errors)

            def get_error(self, i):
                return ParserError(fake.parse_errors[i])

        class TimingCache:
            def __init__(self, data: bytes) -> None:
                self.data = bytes(data)

            def serialize(self):
                return memoryview(self.data + b"+timings")

        class Profile:
            def __init__(self) -> None:
                self.shapes = {}

            def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's own argument names
                self.shapes[name] = (tuple(min), tuple(opt), tuple(max))
                fake.calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))

        class BuilderConfig:
            def __init__(self) -> None:
                self.flags: list[str] = []
                self.profiles: list[Profile] = []
                self.cache = None
                self._hw = "NONE"

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag):
                self.flags.append(flag)
                fake.calls.append(("set_flag", flag))

            @property
            def hardware_compatibility_level(self):
                return self._hw

            @hardware_compatibility_level.setter
            def hardware_compatibility_level(self, level):
                self._hw = level
                fake.calls.append(("hardware_compatibility_level", level))

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                fake.calls.append(("add_optimization_profile", dict(profile.shapes)))
                return len(self.profiles) - 1

            def create_timing_cache(self, data):
                fake.calls.append(("create_timing_cache", bytes(data)))
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                fake.calls.append(("set_timing_cache", ignore_mismatch))
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger) -> None:
                self.logger = logger
                fake.calls.append(("Builder",))

            def create_network(self, flags=0):
                fake.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return BuilderConfig()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build_serialized_network", tuple(config.flags)))
                for message in fake.build_log:
                    self.logger.log(Severity.ERROR, message)
                return None if fake.build_result is None else memoryview(fake.build_result)

        self.ILogger, self.Logger, self.OnnxParser, self.Builder = ILogger, Logger, OnnxParser, Builder

    def called(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]
