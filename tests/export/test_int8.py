"""int8 variants (export/int8.py): dynamic for the text tower, static QDQ calibrated on real images for
the image tower, checked against fp32 on real data, loaded by the runtime, and built by TensorRT
(against the fake `tensorrt`: TensorRT cannot be installed here)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from fake_tensorrt import FakeTensorRT

from cmhash.errors import ConfigError, ExportFolderError, ExportValidationError
from cmhash.export.engine_meta import BuildOptions
from cmhash.export.int8 import add_int8_variants, calibration_images, validate_int8
from cmhash.export.tensorrt import build_engines, precision_path
from cmhash.runtime.codes import pack
from cmhash.runtime.encoder import load_encoder
from cmhash.runtime.engine_meta import Platform
from cmhash.runtime.formats.export_manifest import read_export_manifest

A100 = Platform(cuda_version="12.8", gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
CALIBRATION = 8


@pytest.fixture(scope="module")
def photos(session_export, tmp_path_factory):
    """A folder of CALIBRATION of the checkpoint's training images (`--calibration DIR`)."""
    folder = tmp_path_factory.mktemp("photos")
    for src in calibration_images(session_export.dataset)[:CALIBRATION]:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture(scope="module")
def int8_export(session_export, photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8") / "export"
    shutil.copytree(session_export.folder, folder)
    add_int8_variants(folder, calibration=photos)
    return folder


def test_the_variants_are_written_recorded_and_smaller(int8_export):
    manifest = read_export_manifest(int8_export)
    for modality in ("image", "text"):
        enc = manifest.encoders[modality]
        assert enc.files["int8"] == f"{modality}.int8.onnx" and f"{modality}.int8.onnx" in manifest.files
        fp32 = (int8_export / enc.files["fp32"]).stat().st_size
        int8 = (int8_export / enc.files["int8"]).stat().st_size
        assert fp32 / int8 >= 3, (modality, fp32, int8)
    image, text = (manifest.encoders[m].fields["int8_conversion"] for m in ("image", "text"))
    assert image["method"] == "static" and image["format"] == "QDQ" and image["calibration_images"] == CALIBRATION
    assert image["target"] == "cpu" and image["activations"] == "uint8 with zero point"
    assert text["method"] == "dynamic" and "hash layer" in text["kept_in_float"]
    graph = onnx.load(str(int8_export / "image.int8.onnx")).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}


def test_the_runtime_encodes_with_int8_and_codes_are_pack_of_hash(int8_export, session_export):
    images = list(session_export.dataset.images[:4])
    captions = [c[0] for c in session_export.dataset.texts[:4]]
    for modality, inputs in (("image", images), ("text", captions)):
        encoder = load_encoder(int8_export, modality, precision="int8")
        result = encoder.encode(inputs, progress=False, return_hash=True)
        np.testing.assert_array_equal(result.codes, pack(result.hash))
        fp32 = load_encoder(int8_export, modality).encode(inputs, progress=False).codes
        agreement = 1 - np.unpackbits(fp32 ^ result.codes).mean()
        assert agreement > 0.8, (modality, agreement)  # a sanity bound; the real check is validate_int8


def test_validation_writes_the_report_and_names_what_fails(int8_export, session_export):
    subset = session_export.dataset.subset(np.arange(12))
    try:
        report = validate_int8(int8_export, dataset=subset)
    except ExportValidationError as exc:
        report = exc.report
    assert report["precision"] == "int8"
    assert report["thresholds"] == {"min_bit_agreement": 0.99, "max_map_change": 0.01}
    assert set(report["map"]) == {"fp32", "int8", "change"} and report["encoders"]["image"]["samples"] == 12
    saved = json.loads((int8_export / "validation.int8.json").read_text())
    assert saved["bit_agreement"] == report["bit_agreement"]
    assert read_export_manifest(int8_export).data["int8"]["report"] == "validation.int8.json"
    with pytest.raises(ExportValidationError, match=r"(?s)int8 variant .* fails .*bit agreement .* < 101\.00%"):
        validate_int8(int8_export, dataset=subset, min_agreement=1.01, write_report=False)


def test_an_export_without_int8_names_the_command_that_makes_it(session_export):
    with pytest.raises(ExportFolderError, match=f"cmhash export int8 {session_export.folder}"):
        load_encoder(session_export.folder, "text", precision="int8")


def test_tensorrt_builds_the_qdq_image_tower_and_refuses_the_dynamic_text_tower(int8_export, photos, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(int8_export, folder)
    assert precision_path("10.9.0", "int8") == precision_path("11.4.0", "int8") == "int8-qdq"
    with pytest.raises(ConfigError, match=f"quantized for onnxruntime.*cmhash export int8 {folder} --target tensorrt"):
        build_engines(folder, BuildOptions(precision="int8", modalities=("image",)), trt=FakeTensorRT("11.4.0"),
                      platform=A100)
    add_int8_variants(folder, calibration=photos, target="tensorrt")
    graph = onnx.load(str(folder / "image.int8.onnx")).graph
    zero_points = [i for i in graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(z.data_type != onnx.TensorProto.UINT8 and not onnx.numpy_helper.to_array(z).any()
                               for z in zero_points)  # symmetric int8 (zero points 0): what TensorRT accepts
    for version, flag in (("10.9.0", True), ("11.4.0", False)):
        trt = FakeTensorRT(version)
        meta = build_engines(folder, BuildOptions(precision="int8", modalities=("image",)), trt=trt,
                             platform=A100)["image"]
        assert trt.called("parse_from_file") == [("parse_from_file", str(folder / "image.int8.onnx"))]
        assert (("set_flag", "INT8") in trt.calls) == flag
        assert meta.precision_path == "int8-qdq" and meta.source_onnx == "image.int8.onnx"
    with pytest.raises(ConfigError, match="dynamically quantized.*--modality image"):
        build_engines(folder, BuildOptions(precision="int8"), trt=FakeTensorRT("11.4.0"), platform=A100)


def test_cmhash_encode_and_search_take_precision_int8(int8_export, session_export, tmp_path):
    from typer.testing import CliRunner

    from cmhash.cli import app
    from cmhash.runtime.formats.codes_file import load_codes

    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(c[0] for c in session_export.dataset.texts[:5]) + "\n")
    runner = CliRunner()
    for precision in ("fp32", "int8"):
        result = runner.invoke(app, ["encode", "texts", str(captions), "--model", str(int8_export), "--out",
                                     str(tmp_path / f"{precision}.npz"), "--precision", precision])
        assert result.exit_code == 0, result.output
    int8, fp32 = load_codes(tmp_path / "int8.npz"), load_codes(tmp_path / "fp32.npz")
    assert int8.model_id == fp32.model_id  # one export, one model: both precisions search the same index
    assert 1 - np.unpackbits(int8.codes ^ fp32.codes).mean() > 0.8
    assert runner.invoke(app, ["index", "build", str(tmp_path / "fp32.npz"), "--out", str(tmp_path / "t.cmhx")]).exit_code == 0
    found = runner.invoke(app, ["search", "--index", str(tmp_path / "t.cmhx"), "--model", str(int8_export),
                                "--text", "a dog", "--precision", "int8", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["queries"][0]["results"]) == 5
