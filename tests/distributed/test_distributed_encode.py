"""`encode --ray` on a local 2-CPU Ray cluster gives the single-node codes, and a sharded index built
from them searches exactly like the single-node index (through the CLI, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ray")

from cmhash.cli import app  # noqa: E402
from cmhash.errors import DataFormatError, InvalidInputError, OutputExistsError  # noqa: E402
from cmhash.runtime import pipeline  # noqa: E402
from cmhash.runtime.distributed.code_shards import read_code_shards  # noqa: E402
from cmhash.runtime.distributed.pipeline import encode_images_ray, encode_texts_ray  # noqa: E402
from cmhash.runtime.distributed.sharded_index import ShardedIndex  # noqa: E402
from cmhash.runtime.index import HammingIndex  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "runtime" / "data" / "tiny"  # a 16-bit image + text export


@pytest.fixture(scope="module")
def images(coco_mini_root):
    return sorted((coco_mini_root / "val2017").glob("*.jpg"))[:24]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_ray_image_codes_equal_single_node(ray_session, images, tmp_path):
    summary = encode_images_ray(TINY, images, tmp_path / "ray", workers=2)
    assert summary["count"] == 24 and summary["bits"] == 16 and summary["workers"] == 2
    got = read_code_shards(tmp_path / "ray")
    want = pipeline.encode_images(TINY, images, tmp_path / "one.npz")
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_array_equal(got.ids, want.ids)
    assert got.items == want.items == [str(p) for p in images]


def test_ray_text_codes_ids_and_truncation_equal_single_node(ray_session, tmp_path):
    lines = ["a dog on a sofa", "", "two cats " * 40, "a red car", "  ", "a bird"]
    (tmp_path / "t.txt").write_text("\n".join(lines), encoding="utf-8")
    summary = encode_texts_ray(TINY, tmp_path / "t.txt", tmp_path / "ray", workers=2)
    want = pipeline.encode_texts(TINY, tmp_path / "t.txt", tmp_path / "one.npz")
    got = read_code_shards(tmp_path / "ray")
    np.testing.assert_array_equal(got.ids, [0, 2, 3, 5])
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_array_equal(got.truncated, want.truncated)
    assert summary["truncated_ids"] == want.ids[want.truncated].tolist() == [2]


def test_an_unreadable_image_is_a_typed_error_not_a_ray_error(ray_session, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataFormatError, match="bad.jpg"):
        encode_images_ray(TINY, [*images[:3], bad], tmp_path / "ray", workers=2)
    assert list((tmp_path / "ray").iterdir()) == []  # the failed run's parts are gone, and no manifest
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        encode_images_ray(TINY, images[:3], tmp_path / "other", workers=2)
    with pytest.raises(InvalidInputError, match="holds other files"):  # --overwrite never deletes the user's files
        encode_images_ray(TINY, images[:3], tmp_path / "other", workers=2, overwrite=True)


def test_cli_ray_encode_and_sharded_build_search_like_single_node(ray_session, images, tmp_path):
    r = invoke("encode", "images", *images, "--model", TINY, "--out", tmp_path / "codes", "--ray", "--workers", 2,
               "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == 24
    r = invoke("index", "build", tmp_path / "codes", "--out", tmp_path / "db", "--shards", 3, "--json")
    assert r.exit_code == 0, r.output
    built = json.loads(r.stdout)
    assert built["shards"] == 3 and built["shard_counts"] == [8, 8, 8]
    assert invoke("encode", "images", *images, "--model", TINY, "--out", tmp_path / "one.npz").exit_code == 0
    assert invoke("index", "build", tmp_path / "one.npz", "--out", tmp_path / "one.cmhx").exit_code == 0
    single = HammingIndex.load(tmp_path / "one.cmhx")
    items = json.loads((tmp_path / "db.items.json").read_text())
    assert items == json.loads((tmp_path / "one.cmhx.items.json").read_text())
    queries = single.codes[:6]
    with ShardedIndex.load(tmp_path / "db") as sharded:
        for k in (1, 5, 24, 30):  # 16-bit codes of 24 images: ties at the k-th distance are common
            got, want = sharded.search(queries, k), single.search(queries, k)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    r = invoke("index", "build", tmp_path / "one.npz", "--out", tmp_path / "x", "--ray")
    assert isinstance(r.exception, InvalidInputError) and "--shards" in str(r.exception)
    # `cmhash search` takes the sharded folder as it takes the single file, with the same answers.
    answers = []
    for index in (tmp_path / "db", tmp_path / "one.cmhx"):
        r = invoke("search", "--index", index, "--model", TINY, "--image", images[2], "--image", images[7], "-k", 5,
                   "--json")
        assert r.exit_code == 0, r.output
        answers.append(json.loads(r.stdout)["queries"])
    assert answers[0] == answers[1] and answers[0][0]["results"]
