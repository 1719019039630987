"""Resource limits: images past Pillow's pixel limit, sizes forged in headers and configs, over-long text.

Each forged size must be refused before memory is allocated from it: the loads run under
cmfuzz.runner.memory_cap (RLIMIT_DATA = what the process uses + 256 MiB), and a MemoryError anywhere
in the error's chain fails the test. The forged index count has its own test in
tests/runtime/test_index.py (test_forged_huge_count_is_refused_before_allocating).
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from cmfuzz.runner import classify, memory_cap
from cmhash.errors import CmhashError, DataFormatError, WeightsError

CAP = 256 << 20


def _png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of zeros, built row by row: a 20000x20000 one is ~50 kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _typed(fn, *args, cap: int = CAP, **kwargs) -> CmhashError:
    """Run a load under the memory cap; it must raise a typed error that no allocation failure caused."""
    try:
        with memory_cap(cap):
            fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - classified below
        outcome = classify(exc, "")
        assert outcome.kind == "typed", f"{outcome.kind}: {outcome.detail}"
        return exc
    raise AssertionError("the forged file loaded")


# -------------------------------------------------------------------------------------------- images
def test_a_decompression_bomb_is_a_typed_error(tmp_path):
    """400 million pixels in 49 kB: past twice Pillow's MAX_IMAGE_PIXELS, refused before decoding."""
    from cmhash.runtime.preprocess import ImagePreprocess, load_rgb

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20_000, 20_000))
    assert bomb.stat().st_size < 100_000
    err = _typed(load_rgb, bomb)
    assert isinstance(err, DataFormatError) and "bomb.png" in str(err)
    _typed(ImagePreprocess(256, 224), [bomb])


def test_an_image_with_absurd_declared_dimensions_is_a_typed_error(tmp_path):
    """A 64-pixel PNG whose header claims 1,000,000 x 1,000,000 pixels."""
    from cmhash.runtime.preprocess import load_rgb

    raw = bytearray(_png(8, 8))
    raw[16:24] = struct.pack(">II", 1_000_000, 1_000_000)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # IHDR CRC over type + data
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(raw))
    assert isinstance(_typed(load_rgb, path), DataFormatError)


def test_an_image_past_pillows_pixel_limit_is_a_typed_error(tmp_path, monkeypatch):
    """100 million pixels (12 kB on disk): over Image.MAX_IMAGE_PIXELS, under twice it, where Pillow only
    warns (DecompressionBombWarning) and would decode 300 MB of RGB. Refused before decoding: the 64 MiB
    cap leaves no room for the 100 MB of pixels a decode would allocate."""
    from cmhash.runtime.preprocess import load_rgb

    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    path = tmp_path / "big.png"
    path.write_bytes(_png(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        err = _typed(load_rgb, path, cap=64 << 20)
    assert isinstance(err, DataFormatError) and "big.png" in str(err) and "MAX_IMAGE_PIXELS" in str(err)
    assert "10000 x 10000 = 100,000,000 pixels" in str(err)
    with warnings.catch_warnings():  # where warnings are errors (python -W error), still the typed error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert isinstance(_typed(load_rgb, path, cap=64 << 20), DataFormatError)
    small = tmp_path / "small.png"
    small.write_bytes(_png(8, 8))
    for limit, loads in ((63, False), (64, True), (None, True)):  # None: Pillow's switch for trusted files
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        if loads:
            assert load_rgb(small).size == (8, 8)
        else:
            with pytest.warns(Image.DecompressionBombWarning), \
                    pytest.raises(DataFormatError, match="8 x 8 = 64 pixels, over Pillow's limit of 63"):
                load_rgb(small)


# ----------------------------------------------------------------------------------- forged sizes
def test_a_forged_size_in_config_json_is_refused_before_allocating(real_folder, tmp_path):
    """bits = 2**40 would make 1.4e15-parameter hash heads; the safetensors shapes say otherwise."""
    from cmhash.zoo.model import CrossModalHasher

    folder = tmp_path / "ckpt"
    shutil.copytree(real_folder("checkpoint"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["bits"] = config["recipe"]["bits"] = 2**40
    (folder / "config.json").write_text(json.dumps(config))
    err = _typed(CrossModalHasher.from_pretrained, folder)
    assert isinstance(err, WeightsError) and "shape mismatch" in str(err)


def test_a_forged_safetensors_header_length_is_refused(real_folder, tmp_path):
    from cmhash.zoo.model import CrossModalHasher

    folder = tmp_path / "ckpt"
    shutil.copytree(real_folder("checkpoint"), folder)
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[:8] = struct.pack("<Q", 2**63 - 1)
    (folder / "model.safetensors").write_bytes(bytes(raw))
    assert isinstance(_typed(CrossModalHasher.from_pretrained, folder), WeightsError)


def test_forged_mat_dimensions_are_refused_before_scipy_allocates(real_folder, tmp_path):
    """LAll's dims set to 2**31-1 x 2**31-1 inside the compressed element; the data stays 200 x 24."""
    from cmhash.zoo.data import load_dataset

    folder = tmp_path / "mir"
    shutil.copytree(real_folder("mirflickr"), folder)
    path = folder / "mirflickr25k-lall.mat"
    raw = path.read_bytes()
    kind, nbytes = struct.unpack_from("<II", raw, 128)
    assert kind == 15  # miCOMPRESSED
    inner = bytearray(zlib.decompress(raw[136:136 + nbytes]))
    assert struct.unpack_from("<ii", inner, 32) == (200, 24)
    inner[32:40] = struct.pack("<ii", 2**31 - 1, 2**31 - 1)
    packed = zlib.compress(bytes(inner))
    path.write_bytes(raw[:128] + struct.pack("<II", 15, len(packed)) + packed)
    err = _typed(load_dataset, folder)
    assert isinstance(err, DataFormatError) and "damaged" in str(err)


def test_a_header_scipy_would_read_as_matlab_v4_is_refused_before_allocating(real_folder, tmp_path):
    """Long-run mirflickr case 29514: zeros in the header text make scipy use its v4 reader, which takes
    the next bytes as dimensions and allocates from them (a MemoryError under the cap)."""
    from cmhash.zoo.data import load_dataset

    folder = tmp_path / "mir"
    shutil.copytree(real_folder("mirflickr"), folder)
    path = folder / "mirflickr25k-lall.mat"
    raw = bytearray(path.read_bytes())
    raw[3:7] = b"\x00\x00\x00\x01"
    path.write_bytes(bytes(raw))
    err = _typed(load_dataset, folder)
    assert isinstance(err, DataFormatError) and "v4" in str(err)


def _zero_name_and_data_type(inner: bytearray) -> None:
    assert inner[40:48] == b"\x01\x00\x04\x00LAll"  # the variable name, a small data element
    inner[44:52] = bytes(8)  # name zeroed, and the data element's type set to 0


def _bad_type_behind_an_empty_matrix_tag(inner: bytearray) -> None:
    """Long-run mirflickr case 5402: the matrix declares 0 bytes, so a check that trusts the tag skips
    its body, but scipy reads the body anyway and meets a data element of type 0x8000."""
    assert inner[48:52] == b"\x02\x00\x00\x00"  # the data element's type: miUINT8
    inner[4:8] = bytes(4)
    inner[48:52] = struct.pack("<I", 0x8000)


@pytest.mark.parametrize("damage, message", [(_zero_name_and_data_type, "data type 0"),
                                             (_bad_type_behind_an_empty_matrix_tag, "after its matrix")])
def test_mat_files_that_crashed_scipy_are_refused(damage, message, real_folder, tmp_path):
    """Found by the fuzzers: both make scipy.io.loadmat segfault (scipy 1.17). Run in a child process, so
    a regression shows as a failed test instead of killing the test session."""
    import subprocess
    import sys

    folder = tmp_path / "mir"
    shutil.copytree(real_folder("mirflickr"), folder)
    path = folder / "mirflickr25k-lall.mat"
    raw = path.read_bytes()
    inner = bytearray(zlib.decompress(raw[136:]))
    damage(inner)
    packed = zlib.compress(bytes(inner))
    path.write_bytes(raw[:128] + struct.pack("<II", 15, len(packed)) + packed)
    code = ("import sys\nfrom cmhash.errors import DataFormatError\nfrom cmhash.zoo.data import load_dataset\n"
            "try:\n    load_dataset(sys.argv[1])\nexcept DataFormatError as e:\n    print('typed:', e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.startswith("typed:") and message in done.stdout


# -------------------------------------------------------------------------------------- long text
def test_over_long_text_is_truncated_and_the_result_says_so():
    from cmhash.runtime.tokenize import TextTokenizer
    from cmhash.zoo.data.vocab import default_tokenizer_file

    tok = TextTokenizer(default_tokenizer_file(), 32)
    batch = tok(["a dog on a skateboard", "a very long caption " * 500, "x" * 100_000])  # one [UNK] word
    assert batch.input_ids.shape == (3, 32)
    assert batch.truncated.tolist() == [False, True, False]
    assert batch.attention_mask[0].sum() < 32 and batch.attention_mask[1].sum() == 32
