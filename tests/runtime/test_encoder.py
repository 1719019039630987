"""runtime.encoder on the tiny export folders: codes against numpy re-implementations of the graphs,
the folder checks (sha256, metadata vs export.json), providers, and bad input.

Runs without torch (the tiny folders are committed; see data/make_tiny_exports.py).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from cmhash.errors import (DataFormatError, DataNotFoundError, EncoderError, ExportFolderError,
                           InvalidInputError, ProviderFallbackWarning, ProviderUnavailableError)
from cmhash.runtime.encoder import ImageEncoder, TextEncoder, load_encoder
from cmhash.runtime.preprocess import ImagePreprocess

from tiny_exports import (TINY, TINY_BOW, assert_codes_match, bow_reference, image_reference, rewrite_manifest,
                      token_reference)

TINY_VOCAB = json.loads((TINY / "tokenizer.json").read_text())["model"]["vocab"]


# ------------------------------------------------------------------------------ codes
def test_image_codes_equal_the_numpy_reference_of_the_graph(coco_images, tiny_weights):
    enc = load_encoder(TINY, "image")
    assert isinstance(enc, ImageEncoder) and (enc.bits, enc.nbytes, enc.provider) == (16, 2, "CPUExecutionProvider")
    images = coco_images[:40]
    result = enc.encode(images, batch_size=7, return_hash=True)
    pixels = ImagePreprocess(20, 16, "bilinear")(images)  # the tiny export's preprocessing, written out
    h_ref = image_reference(pixels, tiny_weights)
    assert result.codes.dtype == np.uint8 and result.codes.shape == (40, 2)
    np.testing.assert_allclose(result.hash, h_ref, atol=1e-5)
    assert_codes_match(result.codes, h_ref)
    assert result.truncated is None


def test_text_codes_equal_the_reference_and_truncation_is_reported(tiny_weights):
    enc = load_encoder(TINY, "text")
    assert isinstance(enc, TextEncoder) and enc.max_length == 8
    texts = ["a dog on the sofa", "A MAN riding a horse on the street with two people", "pizza", "zebra giraffe"]
    result = enc.encode(texts, batch_size=3, return_hash=True)
    # Expected token ids from the vocabulary itself: [CLS] words [SEP], cut to max_length = 8 keeping [SEP].
    v = TINY_VOCAB
    rows = [[v["[CLS]"], v["a"], v["dog"], v["on"], v["the"], v["sofa"], v["[SEP]"]],
            [v["[CLS]"], v["a"], v["man"], v["riding"], v["a"], v["horse"], v["on"], v["[SEP]"]],
            [v["[CLS]"], v["pizza"], v["[SEP]"]],
            [v["[CLS]"], v["[UNK]"], v["[UNK]"], v["[SEP]"]]]
    h_ref = np.concatenate([token_reference(np.array([r]), np.ones((1, len(r)), np.int64), tiny_weights) for r in rows])
    np.testing.assert_allclose(result.hash, h_ref, atol=1e-5)
    assert_codes_match(result.codes, h_ref)
    assert result.truncated.tolist() == [False, True, False, False]


def test_bow_codes_and_texts_without_known_words(tiny_weights):
    enc = load_encoder(TINY_BOW, "text")
    words = json.loads((TINY_BOW / "vocabulary.json").read_text())["words"]
    texts = ["A dog, a cat.", "red bus; red train!", "nothing here is known", "Pizza"]
    result = enc.encode(texts, return_hash=True)
    rows = np.zeros((4, len(words)))
    for r, present in enumerate([("a", "dog", "cat"), ("red", "bus", "train"), (), ("pizza",)]):
        rows[r, [words.index(w) for w in present]] = 1
    h_ref = bow_reference(rows, tiny_weights)
    np.testing.assert_allclose(result.hash, h_ref, atol=1e-5)
    assert_codes_match(result.codes, h_ref)
    assert result.no_known_words.tolist() == [False, False, True, False]
    assert result.truncated is None


def test_batch_size_does_not_change_codes(coco_images):
    enc = load_encoder(TINY, "image")
    one = enc.encode(coco_images[:9], batch_size=1).codes
    np.testing.assert_array_equal(one, enc.encode(coco_images[:9], batch_size=4).codes)
    text = load_encoder(TINY, "text")
    texts = ["a dog", "two people sitting at a table with pizza", "a red bus on the street"]
    np.testing.assert_array_equal(text.encode(texts, batch_size=1).codes, text.encode(texts, batch_size=3).codes)


def test_pil_images_and_paths_give_the_same_codes(coco_images):
    enc = load_encoder(TINY, "image")
    with Image.open(coco_images[0]) as im:
        im.load()
        np.testing.assert_array_equal(enc.encode([im]).codes, enc.encode([coco_images[0]]).codes)


def test_progress_bar_goes_to_stderr_when_forced(coco_images, capfd):
    enc = load_encoder(TINY, "image")
    enc.encode(coco_images[:3], progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "encoding 3 images" in err
    enc.encode(coco_images[:3])  # auto: 3 inputs, no bar
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------ providers
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_missing_gpu_provider_is_a_typed_error(provider):
    import onnxruntime as ort

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has GPU providers compiled in; a GPU may really be there")
    with pytest.raises(ProviderUnavailableError, match=r"allow_fallback=True.*") as info:
        load_encoder(TINY, "image", provider=provider)
    assert "CPUExecutionProvider" in str(info.value) and "cmhash[gpu]" in str(info.value)


def test_fallback_warns_and_runs_on_the_cpu(coco_images):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider compiled in")
    with pytest.warns(ProviderFallbackWarning, match="CUDAExecutionProvider"):
        enc = load_encoder(TINY, "image", provider="cuda", allow_fallback=True)
    assert enc.provider == "CPUExecutionProvider"
    np.testing.assert_array_equal(enc.encode(coco_images[:2]).codes, load_encoder(TINY, "image").encode(coco_images[:2]).codes)


def test_a_session_that_got_the_gpu_passes_the_check(monkeypatch):
    """The success path needs a GPU; a session reporting CUDA first stands in for one."""
    import onnxruntime as ort

    real = ort.InferenceSession

    class GotCuda(real):
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", GotCuda)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        enc = load_encoder(TINY, "image", provider="cuda")
    assert enc.provider == "CUDAExecutionProvider"


def test_unknown_backend_provider_and_threads():
    with pytest.raises(InvalidInputError, match="provider"):
        load_encoder(TINY, "image", provider="rocm")
    with pytest.raises(InvalidInputError, match="backend"):
        load_encoder(TINY, "image", backend="openvino")
    with pytest.raises(InvalidInputError, match="threads"):
        load_encoder(TINY, "image", threads=0)


# ------------------------------------------------------------------------------ the folder
def test_a_modified_model_file_is_refused(tiny_copy):
    folder = tiny_copy()
    data = bytearray((folder / "image.onnx").read_bytes())
    data[-5] ^= 0xFF
    (folder / "image.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportFolderError, match="image.onnx does not match its sha256"):
        load_encoder(folder, "image")
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace('"dog"', '"dig"'))
    with pytest.raises(ExportFolderError, match="tokenizer.json does not match"):
        load_encoder(folder, "text")
    assert load_encoder(folder, "text", verify=False).bits == 16  # the caller's choice


def test_missing_files_and_folders(tiny_copy, tmp_path):
    with pytest.raises(ExportFolderError, match="does not exist"):
        load_encoder(tmp_path / "nowhere", "image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportFolderError, match="no export.json"):
        load_encoder(tmp_path / "empty", "image")
    folder = tiny_copy()
    (folder / "text.onnx").unlink()
    with pytest.raises(ExportFolderError, match="text.onnx is missing"):
        load_encoder(folder, "text")
    with pytest.raises(ExportFolderError, match="no 'image' encoder"):
        load_encoder(TINY_BOW, "image")
    with pytest.raises(ExportFolderError, match="no fp16 image model.*--fp16"):
        load_encoder(TINY, "image", precision="fp16")
    with pytest.raises(ExportFolderError, match="no TensorRT engine.*cmhash export trt"):
        load_encoder(TINY, "image", backend="tensorrt")


def test_manifest_problems(tiny_copy):
    folder = tiny_copy()
    (folder / "export.json").write_text("{not json")
    with pytest.raises(ExportFolderError, match="not valid JSON"):
        load_encoder(folder, "image")
    folder = tiny_copy("tiny-bow")
    rewrite_manifest(folder, lambda m: m.update(format="cmhash-export/3"))
    with pytest.raises(ExportFolderError, match="cmhash-export/3.*upgrade cmhash"):
        load_encoder(folder, "text")


def test_metadata_that_disagrees_with_export_json_is_refused(tiny_copy):
    """A folder mixing files of two exports: export.json says 32 bits, the model says 16."""
    folder = tiny_copy()
    rewrite_manifest(folder, lambda m: m.update(bits=32))
    with pytest.raises(ExportFolderError, match="bits: model says 16, export.json says 32"):
        load_encoder(folder, "image")
    folder = tiny_copy("tiny-bow")
    rewrite_manifest(folder, lambda m: m["encoders"]["text"].update(input_kind="tokens", max_length=8))
    with pytest.raises(ExportFolderError, match="input_kind"):
        load_encoder(folder, "text")


# ------------------------------------------------------------------------------ bad input
def test_bad_image_inputs(tmp_path, coco_images):
    enc = load_encoder(TINY, "image")
    with pytest.raises(InvalidInputError, match="empty"):
        enc.encode([])
    with pytest.raises(InvalidInputError, match="not a single str"):
        enc.encode(str(coco_images[0]))
    with pytest.raises(DataNotFoundError, match="not found"):
        enc.encode([coco_images[0], tmp_path / "missing.jpg"])
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataFormatError, match="text.jpg"):
        enc.encode([tmp_path / "text.jpg"])
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(coco_images[0].read_bytes()[:2000])
    with pytest.raises(DataFormatError, match="half.jpg"):
        enc.encode([truncated])
    with pytest.raises(InvalidInputError, match="batch_size"):
        enc.encode(coco_images[:1], batch_size=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_float_inputs_are_refused(bad):
    pixels = np.zeros((2, 3, 16, 16), np.float32)
    pixels[1, 2, 3, 4] = bad
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        load_encoder(TINY, "image").encode_arrays({"pixels": pixels})
    bow = np.zeros((1, 12), np.float32)
    bow[0, 5] = bad
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        load_encoder(TINY_BOW, "text").encode_arrays({"bow": bow})


def test_wrong_array_inputs():
    image = load_encoder(TINY, "image")
    with pytest.raises(InvalidInputError, match=r"\(n, 3, 16, 16\)"):
        image.encode_arrays({"pixels": np.zeros((2, 3, 32, 32), np.float32)})
    with pytest.raises(InvalidInputError, match="takes inputs"):
        image.encode_arrays({"image": np.zeros((2, 3, 16, 16), np.float32)})
    with pytest.raises(InvalidInputError, match="empty"):
        image.encode_arrays({"pixels": np.zeros((0, 3, 16, 16), np.float32)})
    text = load_encoder(TINY, "text")
    with pytest.raises(InvalidInputError, match="length <= 8"):
        text.encode_arrays({"input_ids": np.ones((1, 9), np.int64), "attention_mask": np.ones((1, 9), np.int64)})
    with pytest.raises(InvalidInputError, match="different batch sizes"):
        text.encode_arrays({"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((1, 4), np.int64)})
    with pytest.raises(InvalidInputError, match="strings"):
        text.encode(["ok", 3])


def test_nan_hash_output_is_an_error_not_a_code(monkeypatch):
    enc = load_encoder(TINY, "image")
    real_run = enc.session.run

    def run(feed, outputs=None):
        out = real_run(feed, outputs)
        out["hash"][1, 0] = np.nan
        return out

    monkeypatch.setattr(enc.session, "run", run)
    with pytest.raises(EncoderError, match=r"input\(s\) \[1\].*fp32"):
        enc.encode_arrays({"pixels": np.zeros((2, 3, 16, 16), np.float32)})


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_hash_values_cannot_be_packed(bad):
    """test_codes.py covers NaN; an infinite value is refused the same way."""
    from cmhash.runtime.codes import pack

    h = np.ones((2, 16), np.float32)
    h[0, 7] = bad
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        pack(h)


def test_token_arrays_out_of_range():
    text = load_encoder(TINY, "text")
    ids, mask = np.full((2, 4), 5, np.int64), np.ones((2, 4), np.int64)
    with pytest.raises(InvalidInputError, match=r"input_ids must hold values in \[0, 28\)"):
        text.encode_arrays({"input_ids": ids + 100, "attention_mask": mask})
    with pytest.raises(InvalidInputError, match="attention_mask must hold values in"):
        text.encode_arrays({"input_ids": ids, "attention_mask": mask * 2})
    mask[1] = 0
    with pytest.raises(InvalidInputError, match="at least one token"):
        text.encode_arrays({"input_ids": ids, "attention_mask": mask})


def test_onnxruntime_failures_are_typed():
    """A graph that cannot run on its input (here 15x15 pixels, 48 features expected) is an EncoderError."""
    session = load_encoder(TINY, "image").session
    with pytest.raises(EncoderError, match=r"could not run image.onnx on pixels: float32\[1, 3, 15, 15\]"):
        session.run({"pixels": np.zeros((1, 3, 15, 15), np.float32)})
