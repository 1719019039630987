"""runtime.pipeline and runtime.codes_file: what the encode / index / search commands do, and the
typed errors for bad input along that path (the index's own input checks are in test_index.py)."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from cmhash.errors import (CodeFormatError, DataFormatError, DataNotFoundError, IndexFormatError,
                           InvalidInputError)
from cmhash.runtime import pipeline
from cmhash.runtime.codes import hamming_distances, pack
from cmhash.runtime.formats.codes_file import CodesFile, load_codes, save_codes
from cmhash.runtime.encoder import load_encoder
from cmhash.runtime.index import HammingIndex

from tiny_exports import TINY, TINY_BOW


@pytest.fixture
def photo_dir(tmp_path, coco_images):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, src in enumerate(coco_images[:6]):
        shutil.copy(src, (folder / "sub" if i % 2 else folder) / f"{i:02d}{src.suffix}")
    (folder / "readme.txt").write_text("not an image")
    return folder


@pytest.fixture
def image_index(tmp_path, photo_dir):
    data = pipeline.encode_images(TINY, [photo_dir], tmp_path / "photos.npz")
    pipeline.build_index(tmp_path / "photos.npz", tmp_path / "photos.cmhx")
    return tmp_path / "photos.cmhx", data


def test_encode_images_expands_folders_and_keeps_the_order(tmp_path, photo_dir):
    data = pipeline.encode_images(TINY, [photo_dir], tmp_path / "c.npz")
    files = sorted(p for p in photo_dir.rglob("*.jpg"))
    assert data.items == [str(p) for p in files] and data.ids.tolist() == list(range(6))
    np.testing.assert_array_equal(data.codes, load_encoder(TINY, "image").encode(files).codes)
    back = load_codes(tmp_path / "c.npz")
    assert (back.bits, back.modality, back.method, back.items) == (16, "image", "tiny", data.items)
    np.testing.assert_array_equal(back.codes, data.codes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no image files"):
        pipeline.encode_images(TINY, [tmp_path / "empty"], tmp_path / "d.npz")


def test_encode_texts_ids_are_line_numbers_and_truncation_is_saved(tmp_path):
    (tmp_path / "t.txt").write_text("a dog on the sofa\n\n   \na man riding a horse on the street with two people\npizza\n")
    data = pipeline.encode_texts(TINY, tmp_path / "t.txt", tmp_path / "t.npz")
    assert data.ids.tolist() == [0, 3, 4]
    assert data.items[1].startswith("a man riding")
    assert load_codes(tmp_path / "t.npz").truncated.tolist() == [False, True, False]
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(InvalidInputError, match="holds no text"):
        pipeline.encode_texts(TINY, tmp_path / "blank.txt", tmp_path / "b.npz")
    (tmp_path / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="not UTF-8"):
        pipeline.encode_texts(TINY, tmp_path / "latin1.txt", tmp_path / "b.npz")
    with pytest.raises(DataNotFoundError):
        pipeline.encode_texts(TINY, tmp_path / "missing.txt", tmp_path / "b.npz")


def test_search_matches_brute_force_and_maps_items(image_index):
    index, data = image_index
    queries = ["a dog", "pizza on a table"]
    result = pipeline.search(index, TINY, 4, texts=queries)
    q = load_encoder(TINY, "text").encode(queries).codes
    dist = hamming_distances(q, data.codes).astype(int)
    for row, qr in zip(dist, result.queries):
        order = np.lexsort((np.arange(len(row)), row))[:4]  # (distance, insertion order)
        assert [h.id for h in qr.hits] == order.tolist()
        assert [h.distance for h in qr.hits] == row[order].tolist()
        assert [h.item for h in qr.hits] == [data.items[i] for i in order]
        assert [h.rank for h in qr.hits] == [1, 2, 3, 4]


def test_k_larger_than_the_index_returns_every_item_without_padding(image_index):
    """Documented in runtime/pipeline.py: fewer than k hits, never the index's -1 padding."""
    index, data = image_index
    result = pipeline.search(index, TINY, 50, images=[data.items[2]])
    assert result.index_size == 6 and result.k == 50
    hits = result.queries[0].hits
    assert sorted(h.id for h in hits) == list(range(6))
    assert hits[0].id == 2 and hits[0].distance == 0  # the query image itself


def test_search_bad_input(image_index, tmp_path):
    index, _ = image_index
    with pytest.raises(InvalidInputError, match="no query"):
        pipeline.search(index, TINY, 5)
    for k in (0, -3, True, 2.5):
        with pytest.raises(InvalidInputError, match="k must be"):
            pipeline.search(index, TINY, k, texts=["a dog"])
    wide = HammingIndex(32)
    wide.add(np.zeros((3, 4), np.uint8))
    wide.save(tmp_path / "wide.cmhx")
    with pytest.raises(CodeFormatError, match="32-bit codes but .* makes 16-bit"):
        pipeline.search(tmp_path / "wide.cmhx", TINY, 5, texts=["a dog"])
    with pytest.raises(DataNotFoundError):
        pipeline.search(tmp_path / "missing.cmhx", TINY, 5, texts=["a dog"])


def test_corrupted_and_newer_index_files(image_index, tmp_path):
    index, _ = image_index
    bad = tmp_path / "bad.cmhx"
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0x01  # one bit of the last code
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="(?i)checksum|crc"):
        pipeline.search(bad, TINY, 3, texts=["a dog"])
    newer = bytearray(index.read_bytes())
    struct.pack_into("<I", newer, 8, 3)  # format version 3 (this cmhash reads up to 2)
    bad.write_bytes(bytes(newer))
    with pytest.raises(IndexFormatError, match="(?i)version 3.*upgrade"):
        pipeline.search(bad, TINY, 3, texts=["a dog"])


def test_damaged_items_sidecar(image_index):
    index, _ = image_index
    pipeline.items_path(index).write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="cmhash index build"):
        pipeline.search(index, TINY, 3, texts=["a dog"])
    pipeline.items_path(index).unlink()  # no sidecar: ids only
    assert all(h.item is None for h in pipeline.search(index, TINY, 3, texts=["a dog"]).queries[0].hits)


def test_codes_file_errors(tmp_path):
    codes = pack(np.random.default_rng(0).normal(size=(4, 16)))
    good = CodesFile(codes, np.arange(4), ["a", "b", "c", "d"], 16, "text")
    save_codes(tmp_path / "ok.npz", good)
    with pytest.raises(CodeFormatError, match="uint8"):
        save_codes(tmp_path / "x.npz", CodesFile(codes.astype(np.int64), np.arange(4), list("abcd"), 16, "text"))
    with pytest.raises(CodeFormatError, match="32-bit"):
        save_codes(tmp_path / "x.npz", CodesFile(codes, np.arange(4), list("abcd"), 32, "text"))
    with pytest.raises(CodeFormatError, match="4 ids and items"):
        save_codes(tmp_path / "x.npz", CodesFile(codes, np.arange(3), list("abcd"), 16, "text"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataFormatError, match="not a readable .npz"):
        load_codes(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", codes=codes)
    with pytest.raises(DataFormatError, match="not a cmhash codes file"):
        load_codes(tmp_path / "plain.npz")
    with pytest.raises(DataNotFoundError, match="cmhash encode"):
        load_codes(tmp_path / "none.npz")
    assert not list(tmp_path.glob(".*.tmp")), "a failed write left a temporary file"


def test_bow_export_runs_the_whole_path(tmp_path):
    (tmp_path / "t.txt").write_text("a dog\nred bus\nzebra\n")
    data = pipeline.encode_texts(TINY_BOW, tmp_path / "t.txt", tmp_path / "t.npz")
    pipeline.build_index(tmp_path / "t.npz", tmp_path / "t.cmhx")
    hits = pipeline.search(tmp_path / "t.cmhx", TINY_BOW, 1, texts=["red bus"]).queries[0].hits
    assert hits[0].item == "red bus" and hits[0].distance == 0 and data.truncated is None
