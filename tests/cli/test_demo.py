"""`cmhash demo` end to end: the shipped hasher, exported to ONNX in a fresh cache, searched through the
runtime on scikit-image's bundled photographs. Nothing here reads ../shared/data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage", reason="the demo gallery needs the [demo] extra (scikit-image)")
pytest.importorskip("onnxscript", reason="the demo exports to ONNX: needs the [export] extra")

from cmhash import demo  # noqa: E402
from cmhash.errors import InvalidInputError  # noqa: E402
from cmhash.runtime.input_files import image_folder  # noqa: E402


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "CMHASH_CACHE": str(cache), "CMHASH_DATA": str(cache / "no-data-here"),
           "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "cmhash", "demo", "-k", "5"], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return cache, env, result.stdout


def _tables(stdout: str) -> dict[str, list[str]]:
    """Query title → its ranked result names, parsed from the printed tables."""
    out: dict[str, list[str]] = {}
    title = None
    for line in stdout.splitlines():
        if line.startswith(("text→image:", "image→text:")):
            title = line.strip()
            out[title] = []
        elif title and line.startswith("│") and line.split("│")[1].strip().isdigit():
            out[title].append(line.split("│")[3].strip())
    return out


def test_demo_prints_ranked_lists_that_differ_per_query(first_run):
    _, _, stdout = first_run
    tables = _tables(stdout)
    text_queries = [t for t in tables if t.startswith("text→image")]
    assert len(text_queries) == len(demo.TEXT_QUERIES) and any(t.startswith("image→text") for t in tables)
    assert all(len(rows) == 5 for rows in tables.values())
    assert len({tuple(tables[t]) for t in text_queries}) > 1, "every text query got the same ranking"
    gallery = {name for name, _ in demo.GALLERY}
    assert all(set(tables[t]) <= gallery for t in text_queries)
    assert "time per stage" in stdout and "made now" in stdout


def test_demo_writes_a_contact_sheet_with_content(first_run):
    cache, _, stdout = first_run
    sheet = cache / "demo" / "contact_sheet.png"
    assert "contact sheet:" in stdout and sheet.is_file()
    with Image.open(sheet) as img:
        rows = len(demo.TEXT_QUERIES) + 1
        assert img.height > rows * 160 and img.width > 6 * 160
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.std() > 20, "the sheet is blank"


def test_export_is_validated_and_reused_from_the_cache(first_run):
    cache, env, _ = first_run
    (folder,) = (cache / "exports").iterdir()
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["validation"]["passed"] is True
    again = subprocess.run([sys.executable, "-m", "cmhash", "demo", "-k", "2"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "from the cache" in again.stdout
    assert [p.name for p in (cache / "exports").iterdir()] == [folder.name]


def test_own_images_and_texts(first_run, tmp_path):
    cache, env, _ = first_run
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in demo.skimage_gallery()[:4]:
        Image.open(path).convert("RGB").save(photos / (path.stem + ".jpg"))
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat on a sofa\n\na cup of tea\na man with a camera\n", encoding="utf-8")
    sheet = tmp_path / "sheet.png"
    result = subprocess.run([sys.executable, "-m", "cmhash", "demo", "--images", str(photos), "--texts",
                             str(captions), "-k", "3", "--out", str(sheet)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    tables = _tables(result.stdout)
    (image_query,) = [t for t in tables if t.startswith("image→text")]
    assert set(tables[image_query]) <= {"a cat on a sofa", "a cup of tea", "a man with a camera"}
    # The file's lines are the text→image queries too (before: always "a cat", "a cup of coffee", ...).
    assert sorted(t for t in tables if t.startswith("text→image")) == [
        "text→image: 'a cat on a sofa'", "text→image: 'a cup of tea'", "text→image: 'a man with a camera'"]
    assert sheet.is_file()


@pytest.mark.parametrize("args, message", [
    (["--images", "/nonexistent/folder"], "not a folder"),
    (["--texts", "/nonexistent/captions.txt"], "cannot read"),
])
def test_bad_inputs_are_typed_errors(args, message, tmp_path):
    env = {**os.environ, "CMHASH_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "cmhash", "demo", *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2 and message in " ".join(result.stderr.split())


def test_an_empty_images_folder_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="no image files"):
        image_folder(tmp_path)


def test_demo_with_another_zoo_model_exports_it_beside_the_default(first_run):
    cache, env, _ = first_run
    result = subprocess.run([sys.executable, "-m", "cmhash", "demo", "--model", "dcph-coco-mini-64", "-k", "3"],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "made now" in result.stdout and len(_tables(result.stdout)) == len(demo.TEXT_QUERIES) + 1
    assert any(p.name.startswith("dcph-coco-mini-64-") for p in (cache / "exports").iterdir())


def test_demo_with_an_unknown_model_lists_the_zoo(tmp_path):
    env = {**os.environ, "CMHASH_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "cmhash", "demo", "--model", "no-such-model"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and "dmsh-coco-mini-64" in " ".join(result.stderr.split())
