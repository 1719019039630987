"""TensorRT engines from an export folder's ONNX encoders, with a sidecar that says what built them.

Two half-precision paths, chosen by `tensorrt.__version__`:
- TensorRT 10.x: parse the float32 ONNX and set `BuilderFlag.FP16` (weak typing);
- TensorRT 11.x: the flag is gone (strong typing only), so parse the fp16 ONNX variant
  (`<modality>.fp16.onnx`, made here with `export.fp16` when the folder lacks it).
int8 has one path, explicit quantization: parse the int8 ONNX variant (`cmhash export int8`), whose
Q/DQ nodes carry the scales (TensorRT 10 also gets `BuilderFlag.INT8`).

Every dynamic input gets an optimization profile (batch min/opt/max, and sequence min/opt/max for
token inputs); the workspace is capped; a timing cache file is loaded before and saved after every
build, so later builds (the other encoder, the next export) reuse the timings. Parser failures list
every parser message; `build_serialized_network` returning None is an `EngineBuildError` with the
builder's error log. TensorRT is import-guarded; tests drive this module with a fake `tensorrt`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from cmhash.errors import ConfigError, EngineBuildError, ExportError, require
from cmhash.runtime.engine_meta import Platform, current_platform
from cmhash.runtime.formats.engine_sidecar import EngineMeta, sidecar_path, write_sidecar
from cmhash.runtime.formats.export_manifest import Engine, add_sections, read_export_manifest
from cmhash.runtime.io import atomic_write

from .engine_meta import BuildOptions, make_meta, rebuild_command
from .fp16 import add_fp16_variants

SUPPORTED_MAJORS = (10, 11)
TIMING_CACHE_NAME = "tensorrt.timing.cache"


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:
        raise ExportError(f"cannot read the TensorRT version {version!r}") from exc


def precision_path(version: str, precision: str) -> str:
    """'fp32', 'builder-flag-fp16' (TensorRT 10) or 'fp16-onnx' (TensorRT 11 and later), or for int8
    'int8-qdq': explicit quantization from the int8 ONNX's Q/DQ nodes (TensorRT 10 also sets the INT8
    flag, which its explicit-quantization path still asks for; 11 is strongly typed and needs none)."""
    major = tensorrt_major(version)
    if major < SUPPORTED_MAJORS[0]:
        raise ExportError(f"TensorRT {version} is too old: cmhash builds with TensorRT 10 or 11 "
                          "(pip install 'cmhash[trt]')")
    if precision not in ("fp16", "fp32", "int8"):
        raise ConfigError(f"precision must be fp16, fp32 or int8, got {precision!r}")
    if precision in ("fp32", "int8"):
        return {"fp32": "fp32", "int8": "int8-qdq"}[precision]
    return "builder-flag-fp16" if major == 10 else "fp16-onnx"


def _check_range(name: str, r: tuple[int, int, int]) -> None:
    if len(r) != 3 or not all(isinstance(v, int) and v >= 1 for v in r) or not r[0] <= r[1] <= r[2]:
        raise ConfigError(f"{name} must satisfy 1 <= min <= opt <= max, got min={r[0]}, opt={r[1]}, max={r[2]}")


def profile_shapes(inputs: list[tuple[str, tuple[int, ...]]], batch: tuple[int, int, int],
                   sequence: tuple[int, int, int] | None) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shapes for every input with a dynamic (-1) dimension.

    Axis 0 is the batch; axis 1 of a rank-2 input (token ids, attention mask) is the sequence.
    """
    _check_range("the batch range", batch)
    shapes: dict[str, dict[str, list[int]]] = {}
    for name, dims in inputs:
        if all(d >= 0 for d in dims):
            continue
        profile = {"min": list(dims), "opt": list(dims), "max": list(dims)}
        for axis, d in enumerate(dims):
            if d >= 0:
                continue
            if axis == 0:
                values = batch
            elif axis == 1 and len(dims) == 2 and sequence is not None:
                _check_range("the sequence range", sequence)
                values = sequence
            else:
                raise EngineBuildError(f"input {name} has a dynamic axis {axis} (shape {list(dims)}) that is neither "
                                       "the batch nor a token sequence; cmhash cannot give it a profile")
            for key, v in zip(("min", "opt", "max"), values):
                profile[key][axis] = v
        shapes[name] = profile
    return shapes


def _make_logger(trt: Any):
    """A TensorRT logger that keeps the messages, so errors can carry the builder's own words."""

    class Recorder(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((str(getattr(severity, "name", severity)), str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if "ERROR" in s.upper()]

    return Recorder()


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, options: BuildOptions, command: str,
                 modality: str | None = None, trt: Any = None, platform: Platform | None = None) -> EngineMeta:
    """Parse one ONNX file, build and serialize its engine, write the engine, sidecar and timing cache."""
    trt = trt if trt is not None else require("tensorrt", "trt", "Building TensorRT engines")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    version = str(trt.__version__)
    path = precision_path(version, options.precision)
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        messages = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["(the parser gave no message)"]
        raise EngineBuildError(f"TensorRT {version} cannot parse {onnx_path} ({len(messages)} parser error(s)):\n  - "
                               + "\n  - ".join(messages))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if path == "builder-flag-fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if path == "int8-qdq" and tensorrt_major(version) == 10:
        config.set_flag(trt.BuilderFlag.INT8)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = profile_shapes([(t.name, tuple(int(d) for d in t.shape)) for t in inputs], options.batch, options.sequence)
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    _load_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        log = "\n  - ".join(logger.errors()[-10:]) or "(no error in the TensorRT log)"
        raise EngineBuildError(f"TensorRT {version} could not build an engine from {onnx_path.name} "
                               f"(build_serialized_network returned None). TensorRT said:\n  - {log}\n"
                               f"A larger --workspace-mb or a narrower --max-batch often helps.")
    with atomic_write(engine_path) as fh:
        fh.write(memoryview(serialized))
    if cache_path is not None:
        with atomic_write(cache_path) as fh:
            fh.write(memoryview(config.get_timing_cache().serialize()))
    platform = platform or current_platform(version)
    meta = make_meta(engine_path=engine_path, onnx_path=onnx_path, platform=replace(platform, tensorrt_version=version),
                     precision=options.precision, precision_path=path, profiles=shapes, options=options,
                     command=command, modality=modality)
    write_sidecar(engine_path, meta)
    return meta


def build_engines(folder: str | Path, options: BuildOptions, *, trt: Any = None, platform: Platform | None = None,
                  on_step: Callable[[str], None] | None = None) -> dict[str, EngineMeta]:
    """`<modality>.engine` (+ `.engine.json`) for the encoders of an export folder."""
    trt = trt if trt is not None else require("tensorrt", "trt", "Building TensorRT engines")
    step = on_step or (lambda _msg: None)
    folder = Path(folder)
    manifest = read_export_manifest(folder)
    path = precision_path(str(trt.__version__), options.precision)
    wanted = options.modalities or tuple(manifest.encoders)
    unknown = [m for m in wanted if m not in manifest.encoders]
    if unknown:
        raise ConfigError(f"{folder} has no {', '.join(unknown)} encoder; it has {', '.join(manifest.encoders)}")
    if options.timing_cache is None:
        options = replace(options, timing_cache=str(folder / TIMING_CACHE_NAME))
    if path == "int8-qdq" and any("int8" not in manifest.encoders[m].files for m in wanted):
        raise ConfigError(f"{folder} has no int8 variants to build from; make them first with: "
                          f"cmhash export int8 {folder}")
    conversions = ({m: manifest.encoders[m].fields.get("int8_conversion", {}) for m in wanted}
                   if path == "int8-qdq" else {})
    dynamic = [m for m, c in conversions.items() if c.get("format") != "QDQ"]
    if dynamic:
        raise ConfigError(f"the int8 {', '.join(dynamic)} encoder of {folder} is dynamically quantized "
                          "(DynamicQuantizeLinear/MatMulInteger), which TensorRT does not build; build it in fp16 "
                          f"and the QDQ ones in int8: cmhash export trt {folder} --precision int8 --modality image")
    for_cpu = [m for m, c in conversions.items() if c.get("target") != "tensorrt"]
    if for_cpu:
        raise ConfigError(f"the int8 {', '.join(for_cpu)} encoder of {folder} was quantized for onnxruntime on CPUs "
                          "(uint8 activations with zero points, which TensorRT refuses); quantize for TensorRT with: "
                          f"cmhash export int8 {folder} --target tensorrt")
    if path == "fp16-onnx" and any("fp16" not in manifest.encoders[m].files for m in wanted):
        step("making the fp16 ONNX variants (TensorRT 11 builds half precision from them)")
        manifest = add_fp16_variants(folder, manifest)
    results: dict[str, EngineMeta] = {}
    for modality in wanted:
        enc = manifest.encoders[modality]
        opts = options
        if enc.input_kind == "tokens" and opts.sequence is None:
            top = enc.max_length
            opts = replace(opts, sequence=(1, min(16, top), top))
        onnx_name = enc.files[{"fp16-onnx": "fp16", "int8-qdq": "int8"}.get(path, "fp32")]
        engine_name = f"{modality}.engine"
        step(f"building the {modality} engine from {onnx_name} ({path})")
        results[modality] = build_engine(folder / onnx_name, folder / engine_name, options=opts,
                                         command=rebuild_command(folder, options), modality=modality, trt=trt,
                                         platform=platform)
    add_sections(folder, *(Engine(m, f"{m}.engine", sidecar_path(f"{m}.engine").name, meta.precision_path,
                                  meta.tensorrt_version, meta.source_onnx) for m, meta in results.items()),
                 manifest=manifest)
    return results


__all__ = ["BuildOptions", "build_engine", "build_engines", "precision_path", "profile_shapes"]
