"""ShardedIndex on a local 2-CPU Ray cluster: identical to one HammingIndex (ties included), save/load,
and a killed shard actor as a typed error that restore_shard repairs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")

from cmhash.errors import InvalidInputError, ShardUnavailableError  # noqa: E402
from cmhash.runtime.distributed.sharded_index import ShardedIndex  # noqa: E402
from cmhash.runtime import search_cpu  # noqa: E402
from cmhash.runtime.index import HammingIndex  # noqa: E402

BITS = 16
TIMEOUT = 120  # a shard that never answers fails the test instead of hanging it


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 256, (30, BITS // 8), dtype=np.uint8)
    codes = pool[rng.integers(0, 30, 900)]  # 30 distinct codes over 900 items: ties everywhere
    ids = rng.permutation(5000)[:900].astype(np.int64)
    queries = np.concatenate([pool[:5], rng.integers(0, 256, (5, BITS // 8), dtype=np.uint8)])
    return codes, ids, queries


def assert_same(sharded, single, queries, ks=(1, 10, 100, 2000)):
    for k in ks:
        got, want = sharded.search(queries, k), single.search(queries, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    for (gd, gi), (wd, wi) in zip(sharded.range_search(queries, 3), single.range_search(queries, 3)):
        np.testing.assert_array_equal(gd, wd)
        np.testing.assert_array_equal(gi, wi)


def fill(index, codes, ids):
    """The same writes on either kind of index: explicit ids, automatic ids, then removals."""
    index.add(codes[:400], ids[:400])
    auto = index.add(codes[400:450])  # ids continue after the largest id held
    index.add(codes[450:], ids[450:])
    index.remove(np.concatenate([ids[:400:3], auto[::5]]))
    return auto


def test_sharded_results_equal_one_index(ray_session, data):
    codes, ids, queries = data
    single = HammingIndex(BITS)
    with ShardedIndex(BITS, 3, timeout_s=TIMEOUT) as sharded:  # 3 shards on 2 CPUs
        np.testing.assert_array_equal(fill(sharded, codes, ids), fill(single, codes, ids))
        assert len(sharded) == len(single) and sum(sharded.shard_counts) == len(single)
        assert_same(sharded, single, queries)
        with pytest.raises(InvalidInputError, match="already in the index"):
            sharded.add(codes[:2], single.ids[-2:])  # ids held by some shard
        with pytest.raises(InvalidInputError, match="not in the index"):
            sharded.remove([single.ids[0], 10**9])
        assert len(sharded) == len(single)  # neither call changed anything
        assert_same(sharded, single, queries, ks=(50,))


def test_save_then_load_restores_the_whole_index(ray_session, data, tmp_path):
    codes, ids, queries = data
    single = HammingIndex(BITS)
    fill(single, codes, ids)
    with ShardedIndex(BITS, 2, timeout_s=TIMEOUT) as sharded:
        fill(sharded, codes, ids)
        sharded.save(tmp_path / "db")
    with ShardedIndex.load(tmp_path / "db", timeout_s=TIMEOUT) as back:
        assert back.num_shards == 2
        assert_same(back, single, queries)
        np.testing.assert_array_equal(back.add(codes[:3]), single.add(codes[:3]))  # same next ids after a restart
        back.save(tmp_path / "db")
    files = sorted(p.name for p in (tmp_path / "db").iterdir())
    assert files == ["index.json"] + [f"shard-000{i}.g2.{ext}" for i in (0, 1) for ext in ("cmhx", "seq.npy")]


def test_a_killed_shard_is_an_error_and_restores_from_its_file(ray_session, data, tmp_path):
    codes, ids, queries = data
    single = HammingIndex(BITS)
    single.add(codes, ids)
    with ShardedIndex(BITS, 2, timeout_s=TIMEOUT) as sharded:
        sharded.add(codes, ids)
        sharded.save(tmp_path / "db")
        ray_session.kill(sharded.actors[1])
        with pytest.raises(ShardUnavailableError, match="shard 1") as caught:
            sharded.search(queries, 10)
        assert caught.value.shard == 1
        with pytest.raises(ShardUnavailableError):
            sharded.add(codes[:1], [10**6])
        sharded.restore_shard(1)
        assert_same(sharded, single, queries, ks=(10, 1000))


def test_restore_refuses_to_drop_unsaved_changes(ray_session, data, tmp_path):
    codes, ids, queries = data
    with ShardedIndex(BITS, 2, timeout_s=TIMEOUT) as sharded:
        with pytest.raises(InvalidInputError, match="never saved"):
            sharded.restore_shard(0)
        sharded.add(codes[:100], ids[:100])
        sharded.save(tmp_path / "db")
        sharded.add(codes[100:102], ids[100:102])  # seqs 100, 101: one item on each shard
        ray_session.kill(sharded.actors[0])
        with pytest.raises(InvalidInputError, match="changed after the last save"):
            sharded.restore_shard(0)
        sharded.restore_shard(0, discard_unsaved=True)
        assert sharded.shard_counts == [50, 51]
        single = HammingIndex(BITS)
        single.add(codes[:100], ids[:100])
        single.add(codes[101:102], ids[101:102])
        assert_same(sharded, single, queries, ks=(5, 200))


def test_a_shard_that_came_back_empty_is_detected(ray_session, data):
    """Ray could restart an actor with empty state; that must not pass for a shard with no matches."""
    codes, ids, queries = data
    with ShardedIndex(BITS, 2, timeout_s=TIMEOUT) as sharded:
        sharded.add(codes, ids)
        ray_session.kill(sharded._actors[1])  # noqa: SLF001 - simulate a restart: same slot, fresh actor
        sharded._actors[1] = sharded._spawn(1)  # noqa: SLF001
        with pytest.raises(ShardUnavailableError, match="should hold 450"):
            sharded.search(queries, 5)


def test_bad_arguments_are_refused_before_any_actor_starts(ray_session):
    with pytest.raises(InvalidInputError, match="unknown backend"):
        ShardedIndex(BITS, 2, backend="gpu")
    with pytest.raises(InvalidInputError, match="need 6 CPUs but the cluster has 2"):
        ShardedIndex(BITS, 3, num_cpus=2)  # Ray would leave the third actor pending for ever


@pytest.mark.skipif(not search_cpu.numba_available(), reason="method='mih' needs numba")
def test_shards_search_with_mih_and_keep_the_metadata(ray_session, data, tmp_path):
    codes, ids, queries = data
    single = HammingIndex(BITS, method="scan")
    meta = {"model": {"sha256": "cd" * 32, "method": "dhaph", "bits": BITS}}
    with ShardedIndex(BITS, 2, timeout_s=TIMEOUT, method="mih", meta=meta) as sharded:
        fill(sharded, codes, ids)
        fill(single, codes, ids)
        assert_same(sharded, single, queries)
        sharded.save(tmp_path / "s")
    with ShardedIndex.load(tmp_path / "s", timeout_s=TIMEOUT, method="mih") as loaded:
        assert loaded.meta == meta
        assert_same(loaded, single, queries, ks=(1, 100))
    with pytest.raises(InvalidInputError, match="unknown search method"):
        ShardedIndex(BITS, 2, method="fast")
