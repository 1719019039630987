"""runtime/formats/export_manifest.py: export.json's one reader and writer, its typed sections, and the
upgrade of version-1 files (cmhash 0.1.0)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmhash.errors import ExportFolderError
from cmhash.runtime.encoder import load_encoder
from cmhash.runtime.formats import export_manifest as em
from tiny_exports import TINY_BOW


def _copy(tmp_path):
    return shutil.copytree(TINY_BOW, tmp_path / "bow")


def _as_version_1(folder) -> None:
    """Rewrite export.json as cmhash 0.1.0 wrote it: format 1, file entries {"sha256", "bytes"}."""
    data = json.loads((folder / "export.json").read_text())
    data["format"] = "cmhash-export/1"
    data["files"] = {n: {"sha256": e["sha256"], "bytes": e["size"]} for n, e in data["files"].items()}
    (folder / "export.json").write_text(json.dumps(data))


def test_a_version_1_export_loads_and_encodes_as_before(tmp_path):
    folder = _copy(tmp_path)
    texts = ["a dog in the street", "two red buses"]
    want = load_encoder(folder, "text").encode(texts, progress=False).codes
    _as_version_1(folder)
    data = em.read_export_manifest(folder).data
    assert data["format"] == em.FORMAT and all(set(e) == {"sha256", "size"} for e in data["files"].values())
    np.testing.assert_array_equal(load_encoder(folder, "text").encode(texts, progress=False).codes, want)


def test_a_version_1_export_with_a_changed_file_is_still_caught(tmp_path):
    folder = _copy(tmp_path)
    _as_version_1(folder)
    (folder / "vocabulary.json").write_text((folder / "vocabulary.json").read_text().replace('"dog"', '"cow"'))
    with pytest.raises(ExportFolderError, match="vocabulary.json does not match its sha256"):
        load_encoder(folder, "text")


def test_sections_are_added_through_the_writer(tmp_path):
    folder = _copy(tmp_path)
    (folder / "text.fp16.onnx").write_bytes(b"half")
    em.add_sections(folder, em.Variant("text", "fp16", "text.fp16.onnx", {"converter": "x"}),
                    em.Validation(passed=True, atol=1e-4, data={"dataset": "d"}, encoders={}, failures=[]),
                    em.Engine("text", "text.engine", "text.engine.json", "fp32", "10.9", "text.onnx"))
    data = json.loads((folder / "export.json").read_text())
    assert data["format"] == "cmhash-export/2"
    assert data["encoders"]["text"]["files"] == {"fp32": "text.onnx", "fp16": "text.fp16.onnx"}
    assert data["files"]["text.fp16.onnx"]["size"] == 4
    assert data["validation"]["passed"] is True and data["validation"]["report"] == "validation.json"
    assert data["engines"]["text"] == {"file": "text.engine", "sidecar": "text.engine.json", "precision_path": "fp32",
                                       "tensorrt_version": "10.9", "source_onnx": "text.onnx"}
    assert em.check_files(folder, em.read_export_manifest(folder)) == []


def test_the_writer_refuses_an_object_the_reader_would_refuse(tmp_path):
    data = em.read_export_manifest(TINY_BOW).data
    with pytest.raises(ExportFolderError, match="bits must be a positive multiple of 8"):
        em.write_export_manifest(tmp_path, {**data, "bits": 12})
    assert not (tmp_path / "export.json").exists()


def test_a_newer_export_format_names_the_fix(tmp_path):
    folder = _copy(tmp_path)
    data = json.loads((folder / "export.json").read_text())
    (folder / "export.json").write_text(json.dumps({**data, "format": "cmhash-export/3"}))
    with pytest.raises(ExportFolderError, match="cmhash-export/3.*upgrade cmhash"):
        em.read_export_manifest(folder)
