"""The issue's "done when": the three methods' coco-mini exports encode and search through the CLI in
a torch-free environment, with codes identical to the export's.

The CLI runs as `.venv-runtime/bin/python -m cmhash` (no torch installed there). The expected codes
are the export's own ONNX `codes` output computed here, in the main environment, with a plain
onnxruntime session: images prepared by the export's own sample code (export.samples, which the
export validation uses), texts tokenized directly with the `tokenizers` library (truncation and
padding configured here, not through cmhash's TextTokenizer). Batches are the CLI's (32), in order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_PYTHON = REPO / ".venv-runtime" / "bin" / "python"
N_IMAGES = 12
LONG = " ".join(["a man riding a horse down a busy street next to a red bus"] * 8)  # > 64 MiniLM tokens


@pytest.fixture(scope="session")
def runtime_python() -> Path:
    if not RUNTIME_PYTHON.is_file():
        pytest.skip(f"{RUNTIME_PYTHON} is missing: create the torch-free environment with "
                    "`make .venv-runtime/.installed`")
    probe = subprocess.run([RUNTIME_PYTHON, "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0, f"{RUNTIME_PYTHON} has torch installed; the runtime environment must not"
    return RUNTIME_PYTHON


def run_cli(python: Path, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([python, "-m", "cmhash", *map(str, args)], capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0, f"cmhash {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result


def onnx_codes(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["codes"], feed)[0] for feed in feeds])


def token_feed(tokenizer_file: Path, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dcph", "dhaph", "dmsh"])
def test_cli_in_the_torch_free_env_gives_the_exports_codes(method, method_export, coco_mini_dataset,
                                                           runtime_python, tmp_path):
    from cmhash.export.samples import build_inputs
    from cmhash.runtime.formats.export_manifest import read_export_manifest

    folder = method_export(method)
    manifest = read_export_manifest(folder)
    images = [Path(p) for p in coco_mini_dataset.images[:N_IMAGES]]
    texts = [caps[0] for caps in coco_mini_dataset.texts[:N_IMAGES]] + [LONG]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")

    run_cli(runtime_python, "encode", "images", *images, "--model", folder, "--out", tmp_path / "img.npz")
    text_run = run_cli(runtime_python, "encode", "texts", tmp_path / "texts.txt", "--model", folder,
                       "--out", tmp_path / "txt.npz", "--json")
    run_cli(runtime_python, "index", "build", tmp_path / "img.npz", "--out", tmp_path / "img.cmhx")
    found = json.loads(run_cli(runtime_python, "search", "--index", tmp_path / "img.cmhx", "--model", folder,
                               "--text", texts[0], "--image", images[4], "-k", "5", "--json").stdout)

    # expected: the export's ONNX outputs, computed here
    inputs = build_inputs(folder, manifest, coco_mini_dataset.subset(np.arange(N_IMAGES)))
    want_img = onnx_codes(folder / "image.onnx", [inputs["image"].feed(np.arange(N_IMAGES))])
    enc = manifest.encoders["text"]
    want_txt = onnx_codes(folder / "text.onnx", [token_feed(folder / enc.asset, texts, enc.max_length)])

    with np.load(tmp_path / "img.npz") as got:
        assert got["codes"].shape == (N_IMAGES, manifest.bits // 8)
        np.testing.assert_array_equal(got["codes"], want_img)
    with np.load(tmp_path / "txt.npz") as got:
        np.testing.assert_array_equal(got["codes"], want_txt)
        assert got["truncated"].tolist() == [False] * N_IMAGES + [True]
    assert json.loads(text_run.stdout)["truncated_ids"] == [N_IMAGES]

    # search: brute force over the expected codes, ordered by (distance, insertion order)
    for query, code in zip(found["queries"], (want_txt[0], want_img[4])):
        dist = np.unpackbits(want_img ^ code, axis=1).sum(axis=1)
        order = np.lexsort((np.arange(N_IMAGES), dist))[:5]
        assert [r["id"] for r in query["results"]] == order.tolist()
        assert [r["distance"] for r in query["results"]] == dist[order].tolist()
    assert found["queries"][1]["results"][0] == {"rank": 1, "id": 4, "distance": 0, "item": str(images[4])}
