"""The codes folder of `encode --ray` (Parquet parts + manifest), without Ray: needs only pyarrow."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from cmhash.errors import DataFormatError, DataNotFoundError  # noqa: E402
from cmhash.runtime.distributed.code_shards import (CodeShardsInfo, codes_from_arrow, codes_to_arrow,  # noqa: E402
                                                    read_code_shards, write_code_shards_manifest)


def write_part(path, ids, codes, items):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "item": items, "code": codes_to_arrow(codes),
                             "truncated": np.zeros(n, bool), "no_known_words": np.zeros(n, bool)}), path)


def test_codes_survive_arrow_byte_for_byte_including_slices():
    codes = np.random.default_rng(0).integers(0, 256, (10, 8), dtype=np.uint8)
    arr = codes_to_arrow(codes)
    np.testing.assert_array_equal(codes_from_arrow(arr, 8), codes)
    np.testing.assert_array_equal(codes_from_arrow(arr.slice(3, 4), 8), codes[3:7])


def test_parts_read_back_in_id_order_and_a_new_run_replaces_the_old(tmp_path):
    codes = np.arange(12, dtype=np.uint8).reshape(6, 2)
    write_part(tmp_path / "run-a" / "1.parquet", [3, 4, 5], codes[3:], ["d", "e", "f"])
    write_part(tmp_path / "run-a" / "0.parquet", [0, 1, 2], codes[:3], ["a", "b", "c"])
    write_code_shards_manifest(CodeShardsInfo(tmp_path, 16, "image", "m", "x", 6, ["run-a/1.parquet", "run-a/0.parquet"]))
    data = read_code_shards(tmp_path)
    np.testing.assert_array_equal(data.ids, np.arange(6))
    np.testing.assert_array_equal(data.codes, codes)
    assert data.items == list("abcdef") and data.bits == 16
    write_part(tmp_path / "run-b" / "0.parquet", [9], codes[:1], ["z"])
    write_code_shards_manifest(CodeShardsInfo(tmp_path, 16, "image", "m", "x", 1, ["run-b/0.parquet"]))
    assert not (tmp_path / "run-a").exists() and read_code_shards(tmp_path).items == ["z"]


def test_missing_or_inconsistent_parts_are_typed_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="--ray"):
        read_code_shards(tmp_path)
    write_part(tmp_path / "run-a" / "0.parquet", [0, 1], np.zeros((2, 2), np.uint8), ["a", "b"])
    write_code_shards_manifest(CodeShardsInfo(tmp_path, 16, "image", "m", "x", 3, ["run-a/0.parquet"]))
    with pytest.raises(DataFormatError, match="holds 2 rows"):
        read_code_shards(tmp_path)
    write_code_shards_manifest(CodeShardsInfo(tmp_path, 16, "image", "m", "x", 2, ["run-a/0.parquet", "run-a/9.parquet"]))
    with pytest.raises(DataFormatError, match="missing"):
        read_code_shards(tmp_path)
