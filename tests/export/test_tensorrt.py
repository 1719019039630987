"""export/tensorrt.py against a fake `tensorrt` module (TensorRT cannot be installed here), plus real
build-and-run tests that skip without TensorRT and a GPU."""

import json
import sys

import numpy as np
import pytest
from fake_tensorrt import FakeTensorRT
from typer.testing import CliRunner

from cmhash.errors import ConfigError, EngineBuildError, EngineMismatchError, ExportError, MissingDependencyError
from cmhash.export.engine_meta import BuildOptions
from cmhash.runtime.engine_meta import Platform, check_sidecar
from cmhash.runtime.formats.engine_sidecar import read_sidecar
from cmhash.export.tensorrt import build_engines, precision_path, profile_shapes
from cmhash.runtime.io import sha256_file

A100 = Platform(cuda_version="12.8", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")


@pytest.mark.parametrize("version,precision,expected", [
    ("10.9.0.34", "fp16", "builder-flag-fp16"), ("11.4.0", "fp16", "fp16-onnx"), ("10.2.0", "fp32", "fp32"),
    ("11.0.1", "fp32", "fp32"),
])
def test_precision_path_follows_the_major_version(version, precision, expected):
    assert precision_path(version, precision) == expected


def test_tensorrt_9_is_refused():
    with pytest.raises(ExportError, match="TensorRT 10 or 11"):
        precision_path("8.6.1", "fp16")


def test_profiles_cover_every_dynamic_input():
    shapes = profile_shapes([("input_ids", (-1, -1)), ("attention_mask", (-1, -1)), ("pixels", (-1, 3, 224, 224)),
                             ("static", (4, 3))], (1, 32, 256), (1, 16, 64))
    assert shapes["input_ids"] == {"min": [1, 1], "opt": [32, 16], "max": [256, 64]}
    assert shapes["attention_mask"] == shapes["input_ids"]
    assert shapes["pixels"] == {"min": [1, 3, 224, 224], "opt": [32, 3, 224, 224], "max": [256, 3, 224, 224]}
    assert "static" not in shapes
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        profile_shapes([("pixels", (-1, 3))], (8, 4, 16), None)
    with pytest.raises(EngineBuildError, match="dynamic axis 2"):
        profile_shapes([("x", (-1, 3, -1))], (1, 2, 3), None)


def test_tensorrt_10_sets_the_fp16_flag_on_the_fp32_onnx(export_copy):
    folder = export_copy()
    trt = FakeTensorRT("10.9.0.34")
    options = BuildOptions(batch=(1, 32, 256), workspace_mb=512)
    engines = build_engines(folder, options, trt=trt, platform=A100)
    parsed = [c[1] for c in trt.called("parse_from_file")]
    assert parsed == [str(folder / "image.onnx"), str(folder / "text.onnx")]
    assert ("set_flag", "FP16") in trt.calls and trt.called("create_network") == [("create_network", 0)] * 2
    assert ("set_memory_pool_limit", "WORKSPACE", 512 << 20) in trt.calls
    shapes = {c[1]: c[2:] for c in trt.called("set_shape")}
    assert shapes["pixels"] == ((1, 3, 224, 224), (32, 3, 224, 224), (256, 3, 224, 224))
    assert shapes["input_ids"] == ((1, 1), (32, 16), (256, 64)) == shapes["attention_mask"]
    image = read_sidecar(folder / "image.engine")
    assert engines["image"] == image
    assert (folder / "image.engine").read_bytes() == b"FAKE-ENGINE"
    assert image.precision_path == "builder-flag-fp16" and image.tensorrt_version == "10.9.0.34"
    assert image.gpu_name == A100.gpu_name and image.compute_capability == "8.0" and image.cuda_version == "12.8"
    assert image.source_onnx == "image.onnx" and image.source_onnx_sha256 == sha256_file(folder / "image.onnx")
    assert image.engine_sha256 == sha256_file(folder / "image.engine")
    assert image.profiles["pixels"]["opt"] == [32, 3, 224, 224]
    assert image.build_command.startswith(f"cmhash export trt {folder} --min-batch 1 --opt-batch 32 --max-batch 256")
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["engines"]["text"]["precision_path"] == "builder-flag-fp16"


def test_tensorrt_11_builds_from_the_fp16_onnx_without_the_flag(export_copy):
    folder = export_copy()
    trt = FakeTensorRT("11.4.0")
    assert not hasattr(trt.BuilderFlag, "FP16")
    engines = build_engines(folder, BuildOptions(batch=(2, 8, 64), sequence=(4, 12, 48)), trt=trt, platform=A100)
    assert [c[1] for c in trt.called("parse_from_file")] == [str(folder / "image.fp16.onnx"),
                                                              str(folder / "text.fp16.onnx")]
    assert not [c for c in trt.called("set_flag") if c[1] == "FP16"]
    assert engines["text"].precision_path == "fp16-onnx"
    assert engines["text"].profiles["input_ids"] == {"min": [2, 4], "opt": [8, 12], "max": [64, 48]}
    assert engines["text"].source_onnx_sha256 == sha256_file(folder / "text.fp16.onnx")


def test_tensorrt_11_makes_the_fp16_onnx_when_the_folder_lacks_it(export_copy):
    folder = export_copy()
    manifest = json.loads((folder / "export.json").read_text())
    for enc in manifest["encoders"].values():
        enc["files"].pop("fp16")
    for name in ("image.fp16.onnx", "text.fp16.onnx"):
        manifest["files"].pop(name)
        (folder / name).unlink()
    (folder / "export.json").write_text(json.dumps(manifest))
    trt = FakeTensorRT("11.1.0")
    build_engines(folder, BuildOptions(modalities=("image",)), trt=trt, platform=A100)
    assert (folder / "image.fp16.onnx").is_file() and not (folder / "text.engine").exists()
    assert trt.called("parse_from_file") == [("parse_from_file", str(folder / "image.fp16.onnx"))]


def test_timing_cache_is_reused_across_builds(export_copy, tmp_path):
    folder = export_copy()
    cache = tmp_path / "trt.cache"
    trt = FakeTensorRT("10.9.0")
    build_engines(folder, BuildOptions(timing_cache=str(cache)), trt=trt, platform=A100)
    loads = [c[1] for c in trt.called("create_timing_cache")]
    assert loads == [b"", b"+timings"]  # the text build starts from the image build's timings
    assert cache.read_bytes() == b"+timings+timings"
    assert trt.called("set_timing_cache") == [("set_timing_cache", False)] * 2


def test_default_timing_cache_lives_in_the_folder(export_copy):
    folder = export_copy()
    build_engines(folder, BuildOptions(modalities=("image",)), trt=FakeTensorRT("10.9.0"), platform=A100)
    assert (folder / "tensorrt.timing.cache").is_file()


def test_compatibility_flags(export_copy):
    folder = export_copy()
    trt = FakeTensorRT("10.9.0")
    options = BuildOptions(version_compatible=True, hardware_compatible=True, modalities=("image",))
    meta = build_engines(folder, options, trt=trt, platform=A100)["image"]
    assert ("set_flag", "VERSION_COMPATIBLE") in trt.calls
    assert ("hardware_compatibility_level", "AMPERE_PLUS") in trt.calls
    assert meta.version_compatible and meta.hardware_compatibility == "ampere_plus"
    assert "--version-compatible --hardware-compatible" in meta.build_command


def test_parser_errors_are_all_reported(export_copy):
    folder = export_copy()
    trt = FakeTensorRT("10.9.0", parse_errors=["Unsupported op GatherND", "Invalid shape for Reshape"])
    with pytest.raises(EngineBuildError) as info:
        build_engines(folder, BuildOptions(), trt=trt, platform=A100)
    message = str(info.value)
    assert "2 parser error(s)" in message and "GatherND" in message and "Reshape" in message
    assert not (folder / "image.engine").exists()


def test_build_returning_none_is_a_typed_error_with_the_builder_log(export_copy):
    folder = export_copy()
    trt = FakeTensorRT("10.9.0", build_result=None, build_log=["Error Code 4: out of workspace memory"])
    with pytest.raises(EngineBuildError, match="(?s)returned None.*out of workspace memory.*--workspace-mb"):
        build_engines(folder, BuildOptions(modalities=("image",)), trt=trt, platform=A100)
    assert not (folder / "image.engine").exists() and not (folder / "image.engine.json").exists()


def test_unknown_modality_is_a_config_error(export_copy):
    with pytest.raises(ConfigError, match="no audio encoder"):
        build_engines(export_copy(), BuildOptions(modalities=("audio",)), trt=FakeTensorRT(), platform=A100)


def test_missing_tensorrt_names_the_extra(export_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"cmhash\[trt\]"):
        build_engines(export_copy(), BuildOptions())


def test_sidecar_mismatch_prints_the_rebuild_command(export_copy):
    folder = export_copy()
    options = BuildOptions(batch=(1, 16, 128), modalities=("image",))
    build_engines(folder, options, trt=FakeTensorRT("10.9.0.34"), platform=A100)
    engine = folder / "image.engine"
    ok = Platform("10.9.0.34", "12.8", "NVIDIA A100-PCIE-40GB", "8.0")
    assert check_sidecar(engine, ok, onnx_path=folder / "image.onnx").modality == "image"
    h100 = Platform("11.4.0", "13.0", "NVIDIA H100", "9.0")
    with pytest.raises(EngineMismatchError) as info:
        check_sidecar(engine, h100)
    message = str(info.value)
    assert "TensorRT 10.9.0.34 built it; this machine has 11.4.0" in message
    assert "sm_80" in message and "sm_90" in message
    assert f"Rebuild it with: cmhash export trt {folder} --min-batch 1 --opt-batch 16 --max-batch 128" in message
    assert message.endswith(read_sidecar(engine).build_command)


def test_cli_trt_command_with_the_fake(export_copy, monkeypatch):
    from cmhash.cli import app
    from cmhash.runtime import engine_meta

    folder = export_copy()
    trt = FakeTensorRT("10.9.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(engine_meta, "PROBES", (lambda: A100,))
    result = CliRunner().invoke(app, ["export", "trt", str(folder), "--min-batch", "1", "--opt-batch", "8",
                                      "--max-batch", "64", "--workspace-mb", "256", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"image", "text"}
    assert out["image"]["profiles"]["pixels"]["max"] == [64, 3, 224, 224]
    assert out["text"]["profiles"]["input_ids"]["max"] == [64, 64]
    command = out["image"]["build_command"]
    assert command == f"cmhash export trt {folder} --min-batch 1 --opt-batch 8 --max-batch 64 --workspace-mb 256 " \
                      f"--precision fp16 --timing-cache {folder / 'tensorrt.timing.cache'}"
    result = CliRunner().invoke(app, ["export", "trt", str(folder), "--min-seq", "4"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


# ---------------------------------------------------------------------------- real TensorRT only
def _real_tensorrt():
    try:
        import tensorrt
    except Exception as exc:  # noqa: BLE001 - the bindings can fail on missing libraries
        pytest.skip(f"TensorRT is not installed ({exc})")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return tensorrt


@pytest.mark.trt
def test_real_engine_builds_and_matches_onnxruntime(export_copy):
    trt = _real_tensorrt()
    import torch

    from cmhash.export.runner import Runner, session

    folder = export_copy()
    meta = build_engines(folder, BuildOptions(batch=(1, 4, 8), precision="fp32", modalities=("image",)))["image"]
    check_sidecar(folder / "image.engine", onnx_path=folder / meta.source_onnx)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((folder / "image.engine").read_bytes())
    assert engine is not None
    context = engine.create_execution_context()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    h = torch.empty(4, 16, device="cuda")
    codes = torch.empty(4, 2, dtype=torch.uint8, device="cuda")
    context.set_input_shape("pixels", tuple(x.shape))
    for name, t in (("pixels", x), ("hash", h), ("codes", codes)):
        context.set_tensor_address(name, t.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    ref_h, ref_c = Runner(session(folder / "image.onnx"), ("pixels",))({"pixels": x.cpu().numpy()})
    np.testing.assert_allclose(h.cpu().numpy(), ref_h, atol=1e-3)
    assert (codes.cpu().numpy() == ref_c).mean() > 0.99
