"""Codes and indexes carry the identity of the export that encoded them, and a search with another
model's encoder is refused (before: a normal-looking ranked list, exit 0, of incomparable codes).

Two copies of the tiny export, given different source checkpoints in export.json, stand in for two
64-bit hashers of different training runs: same bits, same graph, different identity.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmhash.errors import ModelMismatchError
from cmhash.runtime import pipeline
from cmhash.runtime.formats.codes_file import load_codes
from cmhash.runtime.index import HammingIndex

TINY = Path(__file__).resolve().parents[1] / "runtime" / "data" / "tiny"


def _export_of(tmp_path: Path, name: str, checkpoint_sha: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(TINY, folder)
    path = folder / "export.json"
    data = json.loads(path.read_text())
    data["source"] = {"checkpoint": f"/runs/{name}", "sha256": {"model.safetensors": checkpoint_sha}}
    path.write_text(json.dumps(data))
    return folder


@pytest.fixture()
def two_models(tmp_path, coco_mini_root):
    images = sorted((coco_mini_root / "val2017").glob("*.jpg"))[:6]
    a, b = _export_of(tmp_path, "model-a", "a" * 64), _export_of(tmp_path, "model-b", "b" * 64)
    pipeline.encode_images(a, images, tmp_path / "a.npz")
    pipeline.build_index(tmp_path / "a.npz", tmp_path / "a.cmhx")
    return a, b, tmp_path / "a.cmhx", images


def test_codes_and_index_record_the_export_identity(two_models, tmp_path):
    a, _, index, _ = two_models
    assert load_codes(tmp_path / "a.npz").model_id == f"tiny/16/{'a' * 64}"
    assert HammingIndex.load(index).meta["model_id"] == f"tiny/16/{'a' * 64}"
    assert json.loads((tmp_path / "a.cmhx.items.json").read_text())["model_id"] == f"tiny/16/{'a' * 64}"


def test_search_with_another_models_encoder_is_refused_and_the_own_model_works(two_models):
    a, b, index, _ = two_models
    with pytest.raises(ModelMismatchError, match=r"another model \(tiny 16-bit, checkpoint aaaaaaaaaaaa\).*"
                                                 r"tiny 16-bit, checkpoint bbbbbbbbbbbb.*re-encode"):
        pipeline.search(index, b, 3, texts=["a dog"])
    result = pipeline.search(index, a, 3, texts=["a dog"])
    assert len(result.queries[0].hits) == 3


def test_cli_refuses_the_mismatch_with_one_line_and_exit_2(two_models):
    a, b, index, _ = two_models
    run = [sys.executable, "-m", "cmhash", "search", "--index", str(index), "--text", "a dog", "-k", "3", "--model"]
    wrong = subprocess.run([*run, str(b)], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error:") and "another model" in wrong.stderr
    assert wrong.stdout == "" and "Traceback" not in wrong.stderr
    right = subprocess.run([*run, str(a), "--json"], capture_output=True, text=True, timeout=120)
    assert right.returncode == 0, right.stderr
    assert len(json.loads(right.stdout)["queries"][0]["results"]) == 3


def test_codes_from_outside_cmhash_carry_no_identity_and_search_as_before(two_models, tmp_path):
    a, b, _, _ = two_models
    data = load_codes(tmp_path / "a.npz")
    index = HammingIndex(data.bits)
    index.add(data.codes)  # raw codes: no identity
    index.save(tmp_path / "raw.cmhx")
    assert "model_id" not in HammingIndex.load(tmp_path / "raw.cmhx").meta
    assert len(pipeline.search(tmp_path / "raw.cmhx", b, 2, texts=["a dog"]).queries[0].hits) == 2
