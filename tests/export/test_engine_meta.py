"""runtime/formats/engine_sidecar.py (the sidecar file), runtime/engine_meta.py (checking it, torch-free) and
export/engine_meta.py."""

import json

import pytest

from cmhash.errors import EngineMismatchError
from cmhash.export.engine_meta import BuildOptions, make_meta, rebuild_command
from cmhash.runtime import engine_meta
from cmhash.runtime.engine_meta import Platform, check_sidecar, current_platform
from cmhash.runtime.formats.engine_sidecar import EngineMeta, read_sidecar, sidecar_path, write_sidecar
from cmhash.runtime.io import sha256_file

BUILT = Platform("10.9.0.34", "12.8", "NVIDIA A100-SXM4-80GB", "8.0")
COMMAND = "cmhash export trt exports/m --min-batch 1 --opt-batch 32 --max-batch 256"


@pytest.fixture
def engine(tmp_path):
    onnx_path = tmp_path / "image.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    path = tmp_path / "image.engine"
    path.write_bytes(b"engine bytes")

    def make(**changes):
        options = BuildOptions(**{k: v for k, v in changes.items() if k in BuildOptions.__dataclass_fields__})
        meta = make_meta(engine_path=path, onnx_path=onnx_path, platform=changes.get("platform", BUILT),
                         precision="fp16", precision_path="builder-flag-fp16",
                         profiles={"pixels": {"min": [1, 3, 224, 224], "opt": [32, 3, 224, 224],
                                              "max": [256, 3, 224, 224]}},
                         options=options, command=COMMAND, modality="image")
        write_sidecar(path, meta)
        return path

    return make


def test_sidecar_round_trip(engine):
    path = engine()
    assert sidecar_path(path).name == "image.engine.json"
    data = json.loads(sidecar_path(path).read_text())
    assert data["format"] == "cmhash-trt-engine/1"
    for key in ("tensorrt_version", "cuda_version", "gpu_name", "compute_capability", "precision_path", "profiles",
                "source_onnx_sha256", "engine_sha256", "build_command"):
        assert key in data
    meta = read_sidecar(path)
    assert isinstance(meta, EngineMeta) and meta.source_onnx == "image.onnx"
    assert meta.source_onnx_sha256 == sha256_file(path.with_name("image.onnx"))


def test_same_platform_passes(engine):
    path = engine()
    other_a100 = Platform("10.9.0.34", "12.9", "NVIDIA A100-PCIE-40GB", "8.0")
    assert check_sidecar(path, other_a100).tensorrt_version == "10.9.0.34"


def test_every_problem_is_named_with_the_rebuild_command(engine):
    path = engine()
    path.write_bytes(b"another engine")
    with pytest.raises(EngineMismatchError) as info:
        check_sidecar(path, Platform("11.4.0", "13.0", "NVIDIA H100 80GB HBM3", "9.0"))
    message = str(info.value)
    assert "does not match the sha256" in message
    assert "TensorRT 10.9.0.34 built it; this machine has 11.4.0" in message
    assert "built on sm_80 (NVIDIA A100-SXM4-80GB); this GPU is sm_90 (NVIDIA H100 80GB HBM3)" in message
    assert message.endswith(f"Rebuild it with: {COMMAND}")


def test_version_compatible_engines_run_on_later_releases_of_the_same_major(engine):
    path = engine(version_compatible=True)
    check_sidecar(path, Platform("10.12.0", None, "A100", "8.0"))
    for version in ("10.8.0", "11.0.0"):
        with pytest.raises(EngineMismatchError, match="version-compatible"):
            check_sidecar(path, Platform(version, None, "A100", "8.0"))


def test_hardware_compatible_engines_need_ampere_or_newer(engine):
    path = engine(hardware_compatible=True)
    check_sidecar(path, Platform("10.9.0.34", None, "H100", "9.0"))
    with pytest.raises(EngineMismatchError, match="compute capability >= 8.0; this GPU is sm_75"):
        check_sidecar(path, Platform("10.9.0.34", None, "T4", "7.5"))


def test_no_gpu_or_no_tensorrt_is_a_mismatch(engine):
    path = engine()
    with pytest.raises(EngineMismatchError, match="TensorRT is not installed.*no CUDA GPU"):
        check_sidecar(path, Platform())


def test_a_stale_engine_is_refused(engine, tmp_path):
    path = engine()
    (tmp_path / "image.onnx").write_bytes(b"re-exported onnx")
    with pytest.raises(EngineMismatchError, match="changed since the engine was built"):
        check_sidecar(path, BUILT, onnx_path=tmp_path / "image.onnx")


def test_missing_or_broken_sidecar(tmp_path):
    path = tmp_path / "x.engine"
    path.write_bytes(b"e")
    with pytest.raises(EngineMismatchError, match="no sidecar x.engine.json.*cmhash export trt"):
        check_sidecar(path, BUILT)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="not valid JSON"):
        read_sidecar(path)
    sidecar_path(path).write_text(json.dumps({"format": "other"}))
    with pytest.raises(EngineMismatchError, match="not a cmhash engine sidecar"):
        read_sidecar(path)


def test_current_platform_uses_the_first_probe_that_answers(monkeypatch):
    monkeypatch.setattr(engine_meta, "PROBES", (lambda: None, lambda: Platform(None, "12.4", "L4", "8.9")))
    assert current_platform("10.3.0") == Platform("10.3.0", "12.4", "L4", "8.9")
    monkeypatch.setattr(engine_meta, "PROBES", (lambda: None,))
    assert current_platform() == Platform()


def test_rebuild_command_round_trips_every_option():
    options = BuildOptions(batch=(2, 16, 64), sequence=(1, 8, 32), workspace_mb=2048, timing_cache="/tmp/c d",
                           version_compatible=True, hardware_compatible=True, precision="fp32",
                           modalities=("text",))
    assert rebuild_command("exports/my model", options) == (
        "cmhash export trt 'exports/my model' --min-batch 2 --opt-batch 16 --max-batch 64 --min-seq 1 --opt-seq 8 "
        "--max-seq 32 --workspace-mb 2048 --precision fp32 --timing-cache '/tmp/c d' --version-compatible "
        "--hardware-compatible --modality text")
