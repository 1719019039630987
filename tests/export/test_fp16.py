"""export/fp16.py: half-precision variants with float32 I/O, checked by bit agreement and mAP change."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from rich.console import Console

from cmhash.errors import ExportError, ExportValidationError
from cmhash.export.fp16 import convert_fp16, validate_fp16
from cmhash.export.variant_check import variant_table
from cmhash.export.runner import session


def test_fp16_bit_agreement_on_coco_mini(session_export):
    report = session_export.fp16
    assert report["bit_agreement"] >= 0.995, report
    for modality in ("image", "text"):
        r = report["encoders"][modality]
        assert r["bit_agreement"] >= 0.995
        assert r["codes_match_own_hash"]  # codes are pack(hash) of the fp16 model's own output
        assert len(r["flips"]) == min(r["bits_flipped"], 200) and all(f["abs_h"] >= 0 for f in r["flips"])
    assert report["encoders"]["text"]["samples"] == 795
    assert set(report["map"]["change"]) == {"map_i2t", "map_t2i"}  # both directions
    for key, delta in report["map"]["change"].items():
        assert delta == pytest.approx(report["map"]["fp16"][key] - report["map"]["fp32"][key])


def test_fp32_map_of_the_export_matches_the_checkpoint(session_export):
    """Bit-identical codes give the checkpoint's own test mAP on its split."""
    test = json.loads((session_export.checkpoint / "config.json").read_text())["metrics"]["test"]
    fp32 = session_export.fp16["map"]["fp32"]
    assert fp32["map_i2t"] == pytest.approx(test["map_i2t"], abs=1e-9)
    assert fp32["map_t2i"] == pytest.approx(test["map_t2i"], abs=1e-9)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_fp16_model_keeps_float32_inputs_and_outputs(session_export, modality):
    path = session_export.folder / f"{modality}.fp16.onnx"
    model = onnx.load(str(path))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert types["hash"] == TensorProto.FLOAT and types["codes"] == TensorProto.UINT8
    if modality == "image":
        assert types["pixels"] == TensorProto.FLOAT
    weights = [i for i in model.graph.initializer
               if len(i.dims) >= 2 and i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights if not i.name.startswith("cmhash_pack/"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "fp16" and meta["bits"] == "16"
    sess = session(path)
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)", "tensor(uint8)"]
    assert (session_export.folder / f"{modality}.onnx").stat().st_size > 1.8 * path.stat().st_size


def test_fp16_report_and_table(session_export):
    on_disk = json.loads((session_export.folder / "validation.fp16.json").read_text())
    assert on_disk["bit_agreement"] == session_export.fp16["bit_agreement"]
    console = Console(record=True, width=200)
    console.print(variant_table(session_export.fp16))
    text = console.export_text()
    assert "mAP i2t" in text and "mAP t2i" in text and "image bit agreement" in text


def test_fp16_limits_are_enforced(session_export, export_copy):
    folder = export_copy()
    with pytest.raises(ExportValidationError, match="bit agreement") as info:
        validate_fp16(folder, dataset=session_export.dataset.subset(np.arange(12)), min_agreement=1.01)
    assert info.value.report["passed"] is False


def test_convert_refuses_a_model_without_the_cmhash_outputs(tmp_path):
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="hash, codes"):
        convert_fp16(tmp_path / "m.onnx", tmp_path / "m.fp16.onnx")
