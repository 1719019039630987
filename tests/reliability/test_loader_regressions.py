"""One readable case per bug the fuzzers found in the runtime's loaders of export folders and codes files
(runtime/export_folder.py, bow.py, ort_session.py, encoder.py, codes_file.py). Each was an untyped
exception escaping (listed in RELIABILITY.md, run of commit d44f14e); each must now be a typed
`CmhashError` whose message names the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cmfuzz.runner import classify, memory_cap
from cmhash.errors import CmhashError, DataFormatError, ExportError, ExportFolderError

REEXPORT = "export the checkpoint again"


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
        name, {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}))


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


def _unknown_operator(model: bytes) -> bytes:
    """A well-formed protobuf whose first node is an operator no opset defines (onnxruntime: a graph error)."""
    import onnx

    proto = onnx.load_from_string(model)
    proto.graph.node[0].op_type = "NoSuchOperator"
    return proto.SerializeToString()


def _long_vocabulary_name(folder: Path) -> None:
    """A 100,000-character vocabulary file name, listed in files: too long for the file system (OSError)."""
    name = "v" * 100_000
    _edit_manifest(folder, lambda m: (m["encoders"]["text"].__setitem__("vocabulary", name),
                                      m["files"].__setitem__(name, m["files"]["vocabulary.json"])))


DEEP = "[" * 100_000 + "]" * 100_000

# case -> (damage, the typed error, a regex its message must match: the file, the bad value, the fix)
EXPORT_CASES = {
    # was TypeError at runtime/bow.py: len(set(words)) on a non-string word
    "vocabulary word is an object":
        (_vocabulary_with_a_dict, DataFormatError,
         rf'vocabulary.json: "words" must be "size" distinct strings; {REEXPORT}'),
    # was RecursionError (json.loads in runtime/bow.py)
    "deeply nested vocabulary.json":
        (lambda f: _replace(f, "vocabulary.json", DEEP.encode()), DataFormatError,
         rf"cannot read the vocabulary .*vocabulary.json \(the JSON nests too deeply\); {REEXPORT}"),
    # was onnxruntime's InvalidProtobuf escaping runtime/ort_session.py
    "truncated text.onnx":
        (lambda f: _replace(f, "text.onnx", (f / "text.onnx").read_bytes()[:1000]), ExportFolderError,
         rf"onnxruntime cannot load .*text.onnx \(InvalidProtobuf: .*the file is damaged.*{REEXPORT}"),
    # was onnxruntime's InvalidGraph escaping runtime/ort_session.py
    "text.onnx with an unknown operator":
        (lambda f: _replace(f, "text.onnx", _unknown_operator((f / "text.onnx").read_bytes())), ExportFolderError,
         rf"onnxruntime cannot load .*text.onnx \((InvalidGraph|NotImplemented|Fail): .*NoSuchOperator.*{REEXPORT}"),
    # was UnicodeDecodeError from custom_metadata_map in runtime/ort_session.py
    "ONNX metadata that is not UTF-8":
        (lambda f: _replace(f, "text.onnx", _non_utf8_metadata((f / "text.onnx").read_bytes())), ExportFolderError,
         rf"onnxruntime cannot load .*text.onnx \(UnicodeDecodeError: .*{REEXPORT}"),
    # was RecursionError from json.loads in runtime/export_folder.py
    "deeply nested export.json":
        (lambda f: (f / "export.json").write_text(DEEP), ExportFolderError,
         rf"export.json is not valid JSON \(the JSON nests too deeply\); {REEXPORT}"),
    # was AttributeError: manifest["files"].get on a non-object
    "export.json files is true":
        (lambda f: _edit_manifest(f, lambda m: m.__setitem__("files", True)), ExportFolderError,
         rf'export.json is damaged: files must map file names to {{"sha256": HEX, "size": BYTES}}, got True; {REEXPORT}'),
    # was AttributeError / TypeError on encoders of the wrong type
    "export.json encoders is a list":
        (lambda f: _edit_manifest(f, lambda m: m.__setitem__("encoders", ["text"])), ExportFolderError,
         rf"export.json is damaged: encoders must hold one object per modality \(text\), got \['text'\]; {REEXPORT}"),
    # was OverflowError: int(float('inf'))
    "export.json bits is Infinity":
        (lambda f: _edit_manifest(f, lambda m: m.__setitem__("bits", float("inf"))), ExportFolderError,
         rf"export.json is damaged: bits must be a positive multiple of 8, got inf; {REEXPORT}"),
    # was ValueError: int("sixteen")
    "export.json bits is a string":
        (lambda f: _edit_manifest(f, lambda m: m.__setitem__("bits", "sixteen")), ExportFolderError,
         rf"export.json is damaged: bits must be a positive multiple of 8, got 'sixteen'; {REEXPORT}"),
    # was TypeError at runtime/encoder.py: input names that are not strings
    "export.json inputs hold a list":
        (lambda f: _edit_manifest(f, lambda m: m["encoders"]["text"].__setitem__("inputs", [["bow"]])),
         ExportFolderError, rf"encoders.text.inputs must be a list of input names, got \[\['bow'\]\]; {REEXPORT}"),
    # would have been OSError (file name too long) from pathlib
    "a vocabulary name too long for the file system":
        (_long_vocabulary_name, ExportFolderError,
         rf"cannot read .*vvv.* \(File name too long\); copy the folder again or {REEXPORT}"),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_a_damaged_export_folder_is_a_typed_error(case, real_folder, tmp_path):
    folder = _export_copy(real_folder, tmp_path)
    damage, error, message = EXPORT_CASES[case]
    damage(folder)
    with pytest.raises(error, match=message):
        _load_text_encoder(folder)


def test_export_and_runtime_read_export_json_with_one_reader(real_folder, tmp_path):
    """The runtime's ExportFolder and the export side read export.json through the one reader
    (runtime/formats/export_manifest.py): same checks, and its error is an ExportError too."""
    from cmhash.runtime.export_folder import ExportFolder
    from cmhash.runtime.formats.export_manifest import read_export_manifest

    folder = _export_copy(real_folder, tmp_path)
    assert read_export_manifest(folder) == ExportFolder(folder).manifest
    assert read_export_manifest(folder).data == json.loads((folder / "export.json").read_text())
    _edit_manifest(folder, lambda m: m.__setitem__("modalities", "text"))
    with pytest.raises(ExportError) as from_export:
        read_export_manifest(folder)
    with pytest.raises(ExportFolderError) as from_runtime:
        ExportFolder(folder)
    assert isinstance(from_export.value, ExportFolderError) and isinstance(from_export.value, CmhashError)
    assert str(from_export.value) == str(from_runtime.value)
    assert "modalities must list 'image' and/or 'text' once each, got 'text'" in str(from_runtime.value)


def test_a_hostile_preprocess_config_is_a_typed_error():
    """Values export.json's preprocess could hold: infinite sizes, two-channel means, zero std."""
    from cmhash.runtime.preprocess import ImagePreprocess

    good = {"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
    assert ImagePreprocess.from_dict(good).crop == 224
    for change, message in (({"resize": float("inf")}, "cannot convert float infinity"),
                            ({"resize": 10**6, "crop": 224}, "resize <= 8192"),
                            ({"mean": [0.5, 0.5]}, "mean must be 3 finite numbers"),
                            ({"std": [0.5, 0.0, 0.5]}, "std must be positive")):
        with pytest.raises(DataFormatError, match=message):
            ImagePreprocess.from_dict({**good, **change})


# ------------------------------------------------------------------------------------ codes files
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


def _codes_with_forged_shape(real_folder, tmp_path) -> Path:
    """codes.npy's header claims 9e9 x 8 codes (72 GB); numpy would allocate that before reading."""
    path = _codes_with(real_folder, tmp_path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    codes = members["codes.npy"]
    header_end = 10 + struct.unpack("<H", codes[8:10])[0]
    header = codes[:header_end].decode("latin1")
    start = header.index("'shape': (") + len("'shape': (")
    forged = header[:start] + "9000000000" + header[header.index(",", start):]
    members["codes.npy"] = forged[:header_end].encode("latin1") + codes[header_end:]  # the padding absorbs it
    assert len(members["codes.npy"]) == len(codes)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


CODES_CASES = {
    # was ValueError: int(arrays["bits"]) on a string
    "bits is a string": (lambda rf, tp: _codes_with(rf, tp, bits=np.array("abc")),
                         r"bits must be one integer, got <U3\(\)"),
    # was TypeError: int() of a 3-element array
    "bits is an array": (lambda rf, tp: _codes_with(rf, tp, bits=np.array([1, 2, 3])),
                         r"bits must be one integer, got int64\(3,\)"),
    "bits is not a multiple of 8": (lambda rf, tp: _codes_with(rf, tp, bits=np.array(12)), "positive multiple of 8"),
    "modality is a number": (lambda rf, tp: _codes_with(rf, tp, modality=np.array(3)), "modality must be one string"),
    # was NotImplementedError from zipfile
    "zip entry with an unknown compression method": (_codes_unsupported_compression, "compression method 99"),
    # a MemoryError (or 72 GB of address space) before: numpy sizes its buffer from the header
    "npy header with a forged shape": (_codes_with_forged_shape, r"claims a uint8\(9000000000, 8\) array.*forged"),
}


@pytest.mark.parametrize("case", list(CODES_CASES))
def test_a_damaged_codes_file_is_a_typed_error(case, real_folder, tmp_path):
    from cmhash.runtime.formats.codes_file import load_codes

    make, message = CODES_CASES[case]
    path = make(real_folder, tmp_path)
    try:
        with memory_cap(256 << 20):
            load_codes(path)
    except BaseException as exc:  # noqa: BLE001 - classified: typed, and no allocation failure in its chain
        assert classify(exc, "codes.npz").kind == "typed", classify(exc, "codes.npz").detail
        assert isinstance(exc, DataFormatError) and str(path) in str(exc) and "encode again" in str(exc)
        pytest.raises(DataFormatError, load_codes, path).match(message)
        return
    raise AssertionError("the damaged codes file loaded")


def test_the_fixtures_of_these_cases_load_when_intact(real_folder, tmp_path):
    """So the cases above fail because of the damage, not because of the fixture."""
    from cmhash.runtime.formats.codes_file import load_codes

    result = _load_text_encoder(_export_copy(real_folder, tmp_path))
    assert result.codes.shape == (1, 2)
    loaded = load_codes(real_folder("codes-file") / "codes.npz")
    assert loaded.bits == 64 and loaded.codes.shape == (64, 8) and len(loaded.items) == 64
    assert loaded.modality == "text" and loaded.truncated.dtype == np.bool_
    assert zipfile.is_zipfile(io.BytesIO((real_folder("codes-file") / "codes.npz").read_bytes()))
