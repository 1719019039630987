"""An export never replaces another model's export silently (before: exporting a 32-bit DMsH-LN
checkpoint into a folder holding a 64-bit DHaPH export replaced it without a word)."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from cmhash.cli import app
from cmhash.errors import OutputExistsError
from cmhash.export.onnx import export_checkpoint
from cmhash.export.sources import check_out_folder, source_hashes
from cmhash.runtime.formats.export_manifest import read_export_manifest
from cmhash.zoo.pretrained import ROOT as SHIPPED

OTHER = SHIPPED / "dcph-coco-mini-64"  # another checkpoint than the session export's


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_exporting_another_checkpoint_into_an_export_is_refused_and_leaves_it_intact(session_export, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(session_export.folder, folder)
    before = _snapshot(folder)
    result = CliRunner().invoke(app, ["export", "onnx", str(OTHER), "--out", str(folder), "--no-validate"])
    assert isinstance(result.exception, OutputExistsError)
    assert "holds the export of another checkpoint (dmsh 16-bit" in str(result.exception)
    assert "--overwrite" in str(result.exception)
    assert _snapshot(folder) == before


def test_the_same_checkpoint_may_be_exported_again_and_overwrite_replaces(session_export, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(session_export.folder, folder)
    check_out_folder(folder, source_hashes(session_export.checkpoint), overwrite=False)  # no error: same model
    export_checkpoint(OTHER, folder, validate=False, overwrite=True)
    assert read_export_manifest(folder).model_id.startswith("dcph/64/")


def test_a_non_empty_folder_that_is_no_export_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds no cmhash export"):
        export_checkpoint(OTHER, tmp_path, validate=False)
    assert (tmp_path / "notes.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1
