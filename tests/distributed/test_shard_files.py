"""Shard files and the sharded-index manifest: round trips, and damage caught as typed errors (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmhash.errors import DataNotFoundError, IndexFormatError
from cmhash.runtime.formats.sharded_index import ShardEntry, ShardManifest, read_shard_manifest, write_shard_manifest
from cmhash.runtime.distributed.shard import IndexShard
from cmhash.runtime.index import HammingIndex


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    shard = IndexShard(1, 16, backend="numpy")
    shard.add(rng.integers(0, 256, (50, 2), dtype=np.uint8), rng.permutation(1000)[:50], np.arange(1, 100, 2))
    info = shard.save(str(tmp_path / "s.cmhx"), str(tmp_path / "s.seq.npy"))
    return shard, info, tmp_path


def test_a_saved_shard_loads_back_identically(saved):
    shard, info, folder = saved
    back = IndexShard(1, 16, backend="numpy")
    back.load(str(folder / "s.cmhx"), str(folder / "s.seq.npy"), info["count"], info["seq_crc32"])
    q = np.random.default_rng(1).integers(0, 256, (4, 2), dtype=np.uint8)
    for a, b in zip(shard.search(q, 20)[:3], back.search(q, 20)[:3]):
        np.testing.assert_array_equal(a, b)
    assert back.token != shard.token  # a reloaded shard is a new state


def test_the_shard_index_file_is_a_plain_index_of_user_ids(saved):
    shard, _, folder = saved
    plain = HammingIndex.load(folder / "s.cmhx")
    np.testing.assert_array_equal(plain.ids, shard.user_ids)
    np.testing.assert_array_equal(plain.codes, shard.index.codes)


@pytest.mark.parametrize("damage", ["crc", "count", "seq_file"])
def test_a_damaged_or_mismatched_shard_is_refused(saved, damage):
    _, info, folder = saved
    count, crc = info["count"], info["seq_crc32"]
    if damage == "crc":
        crc ^= 1
    elif damage == "count":
        count += 1
    else:
        np.save(folder / "s.seq.npy", np.arange(50, dtype=np.int64))  # valid file, other seqs
    with pytest.raises(IndexFormatError, match="does not match the manifest"):
        IndexShard(1, 16).load(str(folder / "s.cmhx"), str(folder / "s.seq.npy"), count, crc)


def test_manifest_round_trip_and_errors(tmp_path):
    m = ShardManifest(64, 2, 10, 12, [ShardEntry("shard-0000.g2.cmhx", "shard-0000.g2.seq.npy", 10, 5)])
    write_shard_manifest(tmp_path, m)
    assert read_shard_manifest(tmp_path) == m
    with pytest.raises(DataNotFoundError, match="not a sharded index folder"):
        read_shard_manifest(tmp_path / "nope")
    raw = json.loads((tmp_path / "index.json").read_text())
    for change, message in (({"format": "other/1"}, "format"), ({"bits": 12}, "multiple of 8"),
                            ({"shards": []}, "non-empty"), ({"next_seq": -1}, "next_seq"),
                            ({"shards": [{**raw["shards"][0], "index": "../x.cmhx"}]}, "plain file name")):
        (tmp_path / "index.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(IndexFormatError, match=message):
            read_shard_manifest(tmp_path)
