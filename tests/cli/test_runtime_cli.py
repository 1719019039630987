"""`cmhash encode`, `cmhash index build` and `cmhash search` on the tiny exports of tests/runtime/data.

In process through typer's CliRunner (stdout carries only data), and as subprocesses for the entry
point's contract: a typed error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cmhash.cli import app
from cmhash.errors import InvalidInputError, ProviderUnavailableError
from cmhash.runtime import search_cpu
from cmhash.runtime.formats.codes_file import load_codes
from cmhash.runtime.index import HammingIndex

DATA = Path(__file__).resolve().parents[1] / "runtime" / "data"
TINY, TINY_BOW = DATA / "tiny", DATA / "tiny-bow"


def cuda_compiled_in() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_cpu_only_ort = pytest.mark.skipif(cuda_compiled_in(), reason="onnxruntime-gpu is installed: CUDA may work here")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def cmhash(*args, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "cmhash", *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=120)


@pytest.fixture(scope="module")
def images(coco_mini_root) -> list[Path]:
    return sorted((coco_mini_root / "val2017").glob("*.jpg"))[:8]


def test_help_shows_examples():
    for command in (["encode", "images"], ["encode", "texts"], ["index", "build"], ["search"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Examples" in result.output and "cmhash " in result.output


def test_encode_index_search_json(tmp_path, images):
    result = invoke("encode", "images", *images, "--model", TINY, "--out", tmp_path / "img.npz", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 8 and summary["bits"] == 16 and summary["truncated_ids"] == []
    assert summary["no_known_word_ids"] == []
    result = invoke("index", "build", tmp_path / "img.npz", "--out", tmp_path / "img.cmhx", "--json")
    assert json.loads(result.stdout)["count"] == 8
    result = invoke("search", "--index", tmp_path / "img.cmhx", "--model", TINY, "--image", images[3],
                    "--text", "a dog", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [q["modality"] for q in out["queries"]] == ["text", "image"]
    top = out["queries"][1]["results"][0]
    assert (top["id"], top["distance"], top["item"]) == (3, 0, str(images[3]))
    assert all(len(q["results"]) == 3 for q in out["queries"])


def test_table_output_and_the_k_note(tmp_path, images):
    invoke("encode", "images", *images[:3], "--model", TINY, "--out", tmp_path / "i.npz")
    invoke("index", "build", tmp_path / "i.npz", "--out", tmp_path / "i.cmhx")
    result = invoke("search", "--index", tmp_path / "i.cmhx", "--model", TINY, "--image", images[0], "-k", "10")
    assert result.exit_code == 0
    assert "image query" in result.stdout and images[0].name in result.stdout
    assert "holds 3 items, fewer than k=10" in result.stderr


def test_texts_from_stdin_and_the_truncation_note(tmp_path):
    lines = "a dog on the sofa\na man riding a horse on the street with two people\n"
    result = cmhash("encode", "texts", "-", "--model", TINY, "--out", tmp_path / "t.npz", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "1 text(s) were longer" in result.stderr and "0-based: 1" in result.stderr
    data = load_codes(tmp_path / "t.npz")
    assert data.truncated.tolist() == [False, True] and data.items[0] == "a dog on the sofa"


@needs_cpu_only_ort
def test_typed_errors_in_process(tmp_path, images):
    result = invoke("encode", "images", images[0], "--model", TINY, "--out", tmp_path / "x.npz", "--provider", "cuda")
    assert isinstance(result.exception, ProviderUnavailableError)
    invoke("encode", "images", images[0], "--model", TINY, "--out", tmp_path / "x.npz")
    invoke("index", "build", tmp_path / "x.npz", "--out", tmp_path / "x.cmhx")
    result = invoke("search", "--index", tmp_path / "x.cmhx", "--model", TINY, "-k", "3")
    assert isinstance(result.exception, InvalidInputError) and "no query" in str(result.exception)


@pytest.mark.parametrize("case", ["k0", "corrupt", "bad_image", "not_export", "cuda"])
def test_errors_are_one_line_and_exit_2(case, tmp_path, images):
    invoke("encode", "images", *images[:2], "--model", TINY, "--out", tmp_path / "c.npz")
    invoke("index", "build", tmp_path / "c.npz", "--out", tmp_path / "c.cmhx")
    search = ["search", "--index", tmp_path / "c.cmhx", "--model", TINY, "--text", "a dog"]
    if case == "k0":
        args, expected = [*search, "-k", "0"], "k must be a positive integer"
    elif case == "corrupt":
        raw = bytearray((tmp_path / "c.cmhx").read_bytes())
        raw[-1] ^= 0xFF
        (tmp_path / "c.cmhx").write_bytes(bytes(raw))
        args, expected = search, "c.cmhx"
    elif case == "bad_image":
        (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
        args, expected = ["encode", "images", tmp_path / "bad.jpg", "--model", TINY, "--out", tmp_path / "o.npz"], "bad.jpg"
    elif case == "not_export":
        args, expected = ["encode", "images", images[0], "--model", tmp_path, "--out", tmp_path / "o.npz"], "export.json"
    else:
        if cuda_compiled_in():
            pytest.skip("onnxruntime-gpu is installed: CUDA may work here")
        args, expected = [*search, "--provider", "cuda"], "--allow-cpu-fallback"
    result = cmhash(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "o.npz").exists()


@needs_cpu_only_ort
def test_allow_cpu_fallback_flag(tmp_path, images):
    result = cmhash("encode", "images", images[0], "--model", TINY, "--out", tmp_path / "o.npz", "--provider", "cuda",
                    "--allow-cpu-fallback")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: asked for onnxruntime provider CUDAExecutionProvider")
    np.testing.assert_array_equal(load_codes(tmp_path / "o.npz").codes.shape, (1, 2))


def test_bow_texts_without_known_words_are_reported(tmp_path):
    (tmp_path / "t.txt").write_text("a dog\nzebra giraffe\n\nred bus\n")
    result = invoke("encode", "texts", tmp_path / "t.txt", "--model", TINY_BOW, "--out", tmp_path / "t.npz", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["no_known_word_ids"] == [1]
    result = cmhash("encode", "texts", tmp_path / "t.txt", "--model", TINY_BOW, "--out", tmp_path / "t.npz", "--overwrite")
    assert "1 text(s) share no word" in result.stderr and "0-based: 1)" in result.stderr


@pytest.mark.skipif(not search_cpu.numba_available(), reason="--method mih needs numba")
def test_search_methods_give_the_same_results(tmp_path, images):
    invoke("encode", "images", *images, "--model", TINY, "--out", tmp_path / "m.npz")
    result = invoke("index", "build", tmp_path / "m.npz", "--out", tmp_path / "m.cmhx", "--method", "mih")
    assert result.exit_code == 0, result.output
    assert HammingIndex.load(tmp_path / "m.cmhx").method == "mih"  # saved as the index's default
    outs = []
    for method in ([], ["--method", "scan"], ["--method", "mih"], ["--method", "auto"]):
        result = invoke("search", "--index", tmp_path / "m.cmhx", "--model", TINY, "--image", images[2],
                        "--text", "a dog", "-k", "5", "--json", *method)
        assert result.exit_code == 0, result.output
        outs.append(json.loads(result.stdout)["queries"])
    assert all(o == outs[0] for o in outs) and len(outs[0][1]["results"]) == 5
    result = invoke("search", "--index", tmp_path / "m.cmhx", "--model", TINY, "--text", "a dog", "--method", "fast")
    assert result.exit_code == 2 and "--method" in result.output


def test_search_help_shows_k_once_and_no_missing_ray_flag():
    """Before: `-k` was listed as `--k -k`, and --ray-address "implies --ray" where search has no --ray."""
    result = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--k" not in result.output and "implies --ray" not in result.output
    assert "-k" in result.output and "--ray-address" in result.output


def test_encode_and_index_build_never_replace_silently(tmp_path, images):
    """Before: `--out` over an existing codes file or index replaced it without a word."""
    from cmhash.errors import OutputExistsError

    codes, index = tmp_path / "c.npz", tmp_path / "c.cmhx"
    invoke("encode", "images", *images[:2], "--model", TINY, "--out", codes)
    invoke("index", "build", codes, "--out", index)
    before = codes.read_bytes(), index.read_bytes()
    for args in (["encode", "images", images[3], "--model", TINY, "--out", codes],
                 ["encode", "texts", "-", "--model", TINY, "--out", codes],
                 ["index", "build", codes, "--out", index]):
        result = invoke(*args)
        assert isinstance(result.exception, OutputExistsError) and "--overwrite" in str(result.exception), args
    assert (codes.read_bytes(), index.read_bytes()) == before
    assert invoke("encode", "images", images[3], "--model", TINY, "--out", codes, "--overwrite").exit_code == 0
    assert load_codes(codes).codes.shape[0] == 1
    assert invoke("index", "build", codes, "--out", index, "--overwrite").exit_code == 0
    assert len(HammingIndex.load(index)) == 1


def test_an_index_copied_without_its_items_file_says_why_the_items_are_blank(tmp_path, images):
    invoke("encode", "images", *images[:3], "--model", TINY, "--out", tmp_path / "c.npz")
    invoke("index", "build", tmp_path / "c.npz", "--out", tmp_path / "c.cmhx")
    (tmp_path / "c.cmhx.items.json").unlink()
    result = cmhash("search", "--index", tmp_path / "c.cmhx", "--model", TINY, "--text", "a dog", "-k", "2")
    assert result.returncode == 0, result.stderr
    assert "c.cmhx.items.json is missing" in result.stderr and "cmhash index build" in result.stderr


def test_a_truncated_index_names_the_command_that_rebuilds_it(tmp_path, images):
    invoke("encode", "images", *images[:3], "--model", TINY, "--out", tmp_path / "c.npz")
    invoke("index", "build", tmp_path / "c.npz", "--out", tmp_path / "c.cmhx")
    raw = (tmp_path / "c.cmhx").read_bytes()
    (tmp_path / "c.cmhx").write_bytes(raw[: len(raw) - 4])
    result = cmhash("search", "--index", tmp_path / "c.cmhx", "--model", TINY, "--text", "a dog")
    assert result.returncode == 2 and "truncated" in result.stderr
    assert "cmhash index build CODES --out PATH --overwrite" in result.stderr
    # following the advice works
    assert invoke("index", "build", tmp_path / "c.npz", "--out", tmp_path / "c.cmhx", "--overwrite").exit_code == 0
    assert cmhash("search", "--index", tmp_path / "c.cmhx", "--model", TINY, "--text", "a dog").returncode == 0


def test_skip_unreadable_lists_each_skipped_image_and_counts_other_files(tmp_path, images):
    """Before: one unreadable .jpg stopped the run with no way to skip it, and non-image files were
    skipped without a count."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in images[:3]:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not a photo")
    stopped = cmhash("encode", "images", folder, "--model", TINY, "--out", tmp_path / "a.npz")
    assert stopped.returncode == 2 and "broken.jpg" in stopped.stderr and not (tmp_path / "a.npz").exists()
    done = cmhash("encode", "images", folder, "--model", TINY, "--out", tmp_path / "a.npz", "--skip-unreadable")
    assert done.returncode == 0, done.stderr
    assert "skipped:" in done.stderr and "broken.jpg" in done.stderr
    assert "1 file(s) in the folder(s) are not images" in done.stderr
    codes = load_codes(tmp_path / "a.npz")
    names = sorted(p.name for p in folder.glob("*.jpg"))  # the folder's image order: broken.jpg is one of them
    assert [Path(i).name for i in codes.items] == [n for n in names if n != "broken.jpg"]
    assert codes.ids.tolist() == [i for i, n in enumerate(names) if n != "broken.jpg"]  # the others keep their ids
