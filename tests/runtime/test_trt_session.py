"""The native TensorRT backend around the engine: imports, the sidecar check, the buffer plumbing.

TensorRT and a GPU are not available on this project's machines, so `tensorrt` and `cupy` are the
test doubles of fake_gpu.py; a real engine has never run through this code (README says so).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cmhash.errors import EngineMismatchError, MissingDependencyError
from cmhash.runtime.encoder import load_encoder
from cmhash.runtime.formats.engine_sidecar import EngineMeta, write_sidecar
from cmhash.runtime.io import sha256_file
from cmhash.runtime.trt_session import TensorRTSession

from tiny_exports import rewrite_manifest
from fake_gpu import ENGINE_PREFIX, FakeCupy, FakeTensorRT


def make_engine(folder, modality="image", *, cc="9.0", trt_version="10.9.0.34"):
    """An engine file (the fake's format) plus a real sidecar, and export.json's "engines" entry."""
    onnx = folder / f"{modality}.onnx"
    engine = folder / f"{modality}.engine"
    engine.write_bytes(ENGINE_PREFIX + str(onnx).encode())
    meta = EngineMeta(engine_sha256=sha256_file(engine), tensorrt_version=trt_version, cuda_version="12.8",
                      gpu_name="Fake H100", compute_capability=cc, precision="fp32", precision_path="fp32",
                      profiles={}, source_onnx=onnx.name, source_onnx_sha256=sha256_file(onnx),
                      build_command=f"cmhash export trt {folder} --precision fp32", modality=modality)
    write_sidecar(engine, meta)
    rewrite_manifest(folder, lambda m: m.setdefault("engines", {}).update(
        {modality: {"file": engine.name, "sidecar": engine.name + ".json", "source_onnx": onnx.name}}))
    return engine


@pytest.fixture
def fakes(monkeypatch):
    cupy = FakeCupy()
    trt = FakeTensorRT(cupy)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt, cupy


def test_without_tensorrt_the_error_names_the_extra(tiny_copy, monkeypatch):
    folder = tiny_copy()
    make_engine(folder)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt.*pip install 'cmhash\[trt\]'"):
        load_encoder(folder, "image", backend="tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(FakeCupy()))
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(MissingDependencyError, match=r"cupy.*cmhash\[gpu\]"):
        load_encoder(folder, "image", backend="tensorrt")


def test_engine_codes_and_buffer_plumbing(tiny_copy, fakes, coco_images):
    trt, cupy = fakes
    folder = tiny_copy()
    make_engine(folder, "image")
    make_engine(folder, "text")
    images = load_encoder(folder, "image", backend="tensorrt")
    assert images.provider == "TensorRT (native)"
    np.testing.assert_array_equal(images.encode(coco_images[:5], batch_size=2).codes,
                                  load_encoder(folder, "image").encode(coco_images[:5]).codes)
    texts = load_encoder(folder, "text", backend="tensorrt")
    result = texts.encode(["a dog on the sofa", "two people"])
    np.testing.assert_array_equal(result.codes, load_encoder(folder, "text").encode(["a dog on the sofa", "two people"]).codes)
    # per run: every input's shape is set before the output shapes are asked for, then one launch
    names = [c for c in trt.calls if c[0] in ("set_input_shape", "get_tensor_shape", "execute_async_v3")]
    last = names[-5:]
    assert [c[0] for c in last] == ["set_input_shape", "set_input_shape", "get_tensor_shape", "get_tensor_shape",
                                    "execute_async_v3"]
    assert last[0][2] == (2, 7) and last[1][1] == "attention_mask"


def test_sidecar_mismatch_is_refused_before_deserializing(tiny_copy, fakes):
    trt, _ = fakes
    folder = tiny_copy()
    make_engine(folder, cc="8.0")  # built on an A100; the fake GPU is sm_90
    with pytest.raises(EngineMismatchError, match=r"sm_80.*sm_90.*Rebuild it with: cmhash export trt"):
        load_encoder(folder, "image", backend="tensorrt")
    make_engine(folder, trt_version="10.3.0")
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3.0 built it; this machine has 10.9.0.34"):
        load_encoder(folder, "image", backend="tensorrt")
    assert not any(c[0] == "deserialize_cuda_engine" for c in trt.calls)


def test_stale_engine_and_missing_sidecar(tiny_copy, fakes):
    folder = tiny_copy()
    engine = make_engine(folder)
    data = json.loads((folder / "image.engine.json").read_text())
    data["source_onnx_sha256"] = "0" * 64  # built from an older image.onnx
    (folder / "image.engine.json").write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="stale engine"):
        load_encoder(folder, "image", backend="tensorrt")
    (folder / "image.engine.json").unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        TensorRTSession(engine)


def test_deserialize_and_execute_failures_name_the_rebuild(tiny_copy, fakes):
    _, cupy = fakes  # the GPU the sidecar check probes (through cupy)
    folder = tiny_copy()
    engine = make_engine(folder)
    with pytest.raises(EngineMismatchError, match="could not deserialize.*--precision fp32"):
        TensorRTSession(engine, trt=FakeTensorRT(cupy, deserialize_fails=True), cupy=cupy)
    session = TensorRTSession(engine, trt=FakeTensorRT(cupy, execute_fails=True), cupy=cupy)
    with pytest.raises(EngineMismatchError, match="execute_async_v3 returned False"):
        session.run({"pixels": np.zeros((1, 3, 16, 16), np.float32)})
