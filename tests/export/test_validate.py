"""export/validate.py: the checks in optimum's order, failures collected, the report and the table."""

import json
import shutil

import numpy as np
import onnx
import pytest
from rich.console import Console

from cmhash.errors import ExportError, ExportValidationError
from cmhash.export.runner import flips_of
from cmhash.export.validate import CHECKS, report_table, validate_export
from cmhash.runtime.codes import pack


def test_session_export_passes_every_check_on_all_of_coco_mini(session_export):
    report = session_export.validation
    assert session_export.validation_error is None, session_export.validation_error
    assert report["passed"] and report["failures"] == []
    assert [c["check"] for c in report["checks"] if c["modality"] in ("all", "image")] == list(CHECKS)
    image, text = report["encoders"]["image"], report["encoders"]["text"]
    assert image["samples"] == 159 and text["samples"] == 159 * 5  # every image, every caption
    for r in (image, text):
        assert r["max_abs_diff"] <= 1e-4
        assert r["bit_agreement"] == 1.0 and r["bits_flipped"] == 0
        assert r["torch_packing_matches_pack"] and r["codes_match_own_hash"]
    runs = [r["run"] for r in text["axis_runs"]]
    assert runs == ["batch 1", "batch 37", "batch 2, sequence 64"]
    assert [r["hash_shape"][0] for r in image["axis_runs"]] == [1, 37]
    on_disk = json.loads((session_export.folder / "validation.json").read_text())
    assert on_disk["passed"] and on_disk["encoders"]["text"]["samples"] == 795


def test_table_title_says_all_values_close(session_export):
    console = Console(record=True, width=200)
    console.print(report_table(session_export.validation))
    text = console.export_text()
    assert "all values close (atol 0.0001)" in text
    for check in CHECKS:
        assert check in text


def _break_model(path):
    """Rename the `hash` output and pin the batch axis to 2: two independent defects."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == "hash":
                node.output[i] = "hashes"
        for i, name in enumerate(node.input):
            if name == "hash":
                node.input[i] = "hashes"
    model.graph.output[0].name = "hashes"
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 2
    onnx.save(model, str(path))


def test_validation_collects_every_failure_before_raising(session_export, export_copy, reference_encoders):
    folder = export_copy(link_models=True)
    (folder / "image.onnx").unlink()
    shutil.copy2(session_export.folder / "image.onnx", folder / "image.onnx")
    _break_model(folder / "image.onnx")
    small = session_export.dataset.subset(np.arange(40))  # enough for the batch-37 run
    with pytest.raises(ExportValidationError) as info:
        validate_export(folder, encoders=reference_encoders, dataset=small)
    failed = {(c["modality"], c["check"]) for c in info.value.report["checks"] if not c["passed"]}
    assert ("all", "files") in failed  # image.onnx no longer matches its sha256
    assert ("image", "names") in failed
    assert ("image", "dynamic axes") in failed
    assert len(info.value.failures) >= 3
    assert "hashes" in str(info.value) and "fixed to 2" in str(info.value)
    text_checks = [c for c in info.value.report["checks"] if c["modality"] == "text"]
    assert text_checks and all(c["passed"] for c in text_checks)  # the text encoder was still checked
    report = json.loads((folder / "validation.json").read_text())
    assert report["passed"] is False and len(report["failures"]) == len(info.value.failures)
    assert json.loads((folder / "export.json").read_text())["validation"]["passed"] is False


def test_flips_are_counted_with_the_magnitude_of_each_flipped_bit():
    h = np.array([[0.5, -0.002, 0.3, -0.4] * 4, [0.1] * 16], np.float32)
    other = h.copy()
    other[0, 1] = 0.001  # flips bit 1 of row 0
    other[1, 9] = -0.1  # flips bit 9 of row 1
    report = flips_of(pack(h), pack(other), h)
    assert report["bits_flipped"] == 2 and report["bits_total"] == 32
    assert report["bit_agreement"] == pytest.approx(30 / 32)
    assert [(f["sample"], f["bit"]) for f in report["flips"]] == [(0, 1), (1, 9)]
    assert [f["abs_h"] for f in report["flips"]] == pytest.approx([0.002, 0.1])
    assert report["max_abs_h_flipped"] == pytest.approx(0.1)


def test_a_different_checkpoint_is_refused(session_export, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(session_export.checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["note"] = "changed"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="config.json sha256 differ"):
        validate_export(session_export.folder, checkpoint=other, dataset=session_export.dataset, write_report=False)
