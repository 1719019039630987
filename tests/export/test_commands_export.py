"""cmhash/commands/export.py: the thin CLI (the library calls are tested in the other modules)."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmhash.cli import app
from cmhash.errors import ExportValidationError

runner = CliRunner()


@pytest.mark.parametrize("command", ["onnx", "validate", "trt"])
def test_help_has_examples(command):
    result = runner.invoke(app, ["export", command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"cmhash export {command}" in result.output


def test_validate_prints_the_tables(session_export, monkeypatch):
    import cmhash.export.fp16 as fp16
    import cmhash.export.validate as validate

    calls = {}

    def fake_validate(folder, **kwargs):
        calls["validate"] = (folder, kwargs)
        return session_export.validation

    monkeypatch.setattr(validate, "validate_export", fake_validate)
    monkeypatch.setattr(fp16, "validate_fp16", lambda folder, **kw: session_export.fp16)
    result = runner.invoke(app, ["export", "validate", str(session_export.folder), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "all values close (atol 0.0001)" in result.stdout and "mAP i2t" in result.stdout
    assert calls["validate"][1]["checkpoint"] is None
    result = runner.invoke(app, ["export", "validate", str(session_export.folder), "--json", "--no-fp16"])
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["validation"]["passed"] and out["fp16"] is None


def test_validate_failure_exits_with_the_table_and_a_typed_error(session_export, monkeypatch):
    import cmhash.export.validate as validate

    broken = dict(session_export.validation, passed=False, failures=["image: names: outputs ['hashes', 'codes']"])

    def failing(folder, **kwargs):
        raise ExportValidationError("1 validation check(s) failed", broken["failures"], broken)

    monkeypatch.setattr(validate, "validate_export", failing)
    result = runner.invoke(app, ["export", "validate", str(session_export.folder), "--no-fp16", "--no-progress"])
    assert isinstance(result.exception, ExportValidationError)
    assert "check" in result.stdout  # the table was printed before the error


def test_onnx_command_calls_the_library_and_summarises(session_export, monkeypatch, tmp_path):
    import cmhash.export.onnx as onnx_module
    from cmhash.export.onnx import ExportResult
    from cmhash.runtime.formats.export_manifest import read_export_manifest as read_manifest

    seen = {}

    def fake_export(checkpoint, out, **kwargs):
        seen.update(kwargs, checkpoint=checkpoint, out=out)
        kwargs["on_step"]("exporting")
        return ExportResult(session_export.folder, read_manifest(session_export.folder), session_export.validation,
                            session_export.fp16)

    monkeypatch.setattr(onnx_module, "export_checkpoint", fake_export)
    result = runner.invoke(app, ["export", "onnx", str(session_export.checkpoint), "--out", str(tmp_path / "e"),
                                 "--fp16"])
    assert result.exit_code == 0, result.output
    assert seen["fp16"] is True and seen["validate"] is True and seen["opset"] == 18
    assert "all values close" in result.stdout and "fp16 within limits" in result.stdout
    assert "exported image, text encoder(s)" in result.stderr


def test_validate_on_your_own_photos_and_captions(session_export, coco_mini, tmp_path):
    """--images/--texts replace the dataset: the real checks run on those inputs (no labels needed)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in list(coco_mini.images)[:3]:
        (photos / Path(path).name).write_bytes(Path(path).read_bytes())
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog on a sofa\n\na plate of food\na man riding a bike\nan extra caption\n", encoding="utf-8")
    folder = tmp_path / "export"  # validate rewrites validation.json: keep the session's export as it is
    shutil.copytree(session_export.folder, folder)
    result = runner.invoke(app, ["export", "validate", str(folder), "--images", str(photos),
                                 "--texts", str(captions), "--no-fp16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["validation"]
    # every photo and every caption is checked (before: "3 captions", the 4th was silently dropped)
    assert report["passed"] and report["data"]["image"] == "3 images" and report["data"]["text"].startswith("4 captions")
    assert report["encoders"]["text"]["samples"] == 4 and report["encoders"]["image"]["samples"] == 3
    half = runner.invoke(app, ["export", "validate", str(folder), "--images", str(photos)])
    assert half.exit_code != 0 and "--texts" in half.output
