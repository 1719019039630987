"""One readable case per bug the fuzzers found in modules this work may not change (the runtime encoder
work: runtime/export_folder.py, bow.py, ort_session.py, encoder.py, codes_file.py, preprocess.py).

Each is xfail(strict=True): it documents the failure today and fails loudly once it is fixed, so the
mark gets removed. The expected behaviour is always the same: a typed `CmhashError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cmhash.errors import CmhashError


def _export_copy(real_folder, tmp_path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(real_folder("runtime-export"), dst)
    return dst


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "export.json").read_text())
    change(manifest)
    (folder / "export.json").write_text(json.dumps(manifest))


def _replace(folder: Path, name: str, data: bytes) -> None:
    """Write `name` and record its sha256 in export.json, as a careful forger (or a bad export) would."""
    (folder / name).write_bytes(data)
    _edit_manifest(folder, lambda m: m["files"].__setitem__(
        name, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}))


def _load_text_encoder(folder: Path):
    from cmhash.runtime.encoder import load_encoder

    return load_encoder(folder, "text", threads=1).encode(["a dog"], progress=False)


def _vocabulary_with_a_dict(folder: Path) -> None:
    vocab = json.loads((folder / "vocabulary.json").read_text())
    vocab["words"][0] = {"a": 1}
    _replace(folder, "vocabulary.json", json.dumps(vocab).encode())


def _non_utf8_metadata(model: bytes) -> bytes:
    """The model with the first byte of its "cmhash-encoder/1" metadata value set to 0xff."""
    at = model.index(b"cmhash-encoder/1")
    return model[:at] + b"\xff" + model[at + 1:]


def _ort_error(name: str) -> type[BaseException]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return getattr(state, name)


# case -> (damage, the untyped exception that escapes today)
EXPORT_CASES = {
    # runtime/bow.py:41 `len(set(words))` on a non-string word
    "vocabulary word is an object (TypeError, runtime/bow.py)": (_vocabulary_with_a_dict, TypeError),
    # runtime/ort_session.py: onnxruntime's own InvalidProtobuf escapes OrtSession
    "truncated text.onnx (onnxruntime InvalidProtobuf, runtime/ort_session.py)":
        (lambda f: _replace(f, "text.onnx", (f / "text.onnx").read_bytes()[:1000]), _ort_error("InvalidProtobuf")),
    # runtime/ort_session.py: custom_metadata_map decodes metadata as UTF-8 and raises UnicodeDecodeError
    "ONNX metadata that is not UTF-8 (UnicodeDecodeError, runtime/ort_session.py)":
        (lambda f: _replace(f, "text.onnx", _non_utf8_metadata((f / "text.onnx").read_bytes())), UnicodeDecodeError),
    # runtime/export_folder.py `_read_manifest`: json.loads raises RecursionError, not ValueError
    "deeply nested export.json (RecursionError, runtime/export_folder.py)":
        (lambda f: (f / "export.json").write_text("[" * 100_000 + "]" * 100_000), RecursionError),
    # runtime/export_folder.py `file`: manifest["files"].get on a non-object
    "export.json files is true (AttributeError, runtime/export_folder.py)":
        (lambda f: _edit_manifest(f, lambda m: m.__setitem__("files", True)), AttributeError),
    # runtime/export_folder.py `ExportFolder.__init__`: int(float('inf'))
    "export.json bits is Infinity (OverflowError, runtime/export_folder.py)":
        (lambda f: _edit_manifest(f, lambda m: m.__setitem__("bits", float("inf"))), OverflowError),
    # runtime/encoder.py `Encoder.__init__`: input names that are not strings
    "export.json inputs hold a list (TypeError, runtime/encoder.py)":
        (lambda f: _edit_manifest(f, lambda m: m["encoders"]["text"].__setitem__("inputs", [["bow"]])), TypeError),
}


def _known(cases: dict) -> list:
    return [pytest.param(k, marks=pytest.mark.xfail(strict=True, raises=exc, reason=k)) for k, (_, exc) in cases.items()]


@pytest.mark.parametrize("case", _known(EXPORT_CASES))
def test_runtime_export_folder_bug(case, real_folder, tmp_path):
    folder = _export_copy(real_folder, tmp_path)
    EXPORT_CASES[case][0](folder)
    try:
        _load_text_encoder(folder)
    except CmhashError:
        return
    raise AssertionError("a damaged export folder loaded without any error")


def _codes_with(real_folder, tmp_path, **changes) -> Path:
    src = real_folder("codes-file") / "codes.npz"
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    path = tmp_path / "codes.npz"
    np.savez(path, **arrays)
    return path


def _codes_unsupported_compression(real_folder, tmp_path) -> Path:
    """The .npz with its zip entries' compression method set to one zipfile cannot read (99, AES)."""
    raw = bytearray((real_folder("codes-file") / "codes.npz").read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        start = 0
        while (i := raw.find(sig, start)) >= 0:
            offset = 8 if sig == b"PK\x03\x04" else 10
            raw[i + offset:i + offset + 2] = (99).to_bytes(2, "little")
            start = i + 4
    path = tmp_path / "codes.npz"
    path.write_bytes(bytes(raw))
    return path


CODES_CASES = {
    # runtime/codes_file.py:78 int(arrays["bits"]) outside the try
    "bits is a string (ValueError, runtime/codes_file.py)":
        (lambda rf, tp: _codes_with(rf, tp, bits=np.array("abc")), ValueError),
    "bits is an array (TypeError, runtime/codes_file.py)":
        (lambda rf, tp: _codes_with(rf, tp, bits=np.array([1, 2, 3])), TypeError),
    # np.load: zipfile raises NotImplementedError for an unknown compression method
    "zip entry with an unknown compression method (NotImplementedError, runtime/codes_file.py)":
        (_codes_unsupported_compression, NotImplementedError),
}


@pytest.mark.parametrize("case", _known(CODES_CASES))
def test_runtime_codes_file_bug(case, real_folder, tmp_path):
    from cmhash.runtime.codes_file import load_codes

    path = CODES_CASES[case][0](real_folder, tmp_path)
    with pytest.raises(CmhashError):
        load_codes(path)


def test_the_fixtures_of_these_cases_load_when_intact(real_folder, tmp_path):
    """So the xfails above fail because of the damage, not because of the fixture."""
    from cmhash.runtime.codes_file import load_codes

    result = _load_text_encoder(_export_copy(real_folder, tmp_path))
    assert result.codes.shape == (1, 2)
    assert load_codes(real_folder("codes-file") / "codes.npz").bits == 64
    assert zipfile.is_zipfile(io.BytesIO((real_folder("codes-file") / "codes.npz").read_bytes()))
