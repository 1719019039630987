"""cmhash.zoo.hub, hub_card and registry against a local fake Hub (tests/hub_server.py): the real
huggingface_hub upload and download code paths, no network.

The round trip is: a real tiny training run → publish → snapshot_download pinned to the commit →
load_hasher → the same codes, bit for bit, on real coco-mini pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download, snapshot_download

from cmhash.errors import (
    CheckpointNotFoundError, ChecksumError, ConfigError, HubError, HubNotFoundError, NotCachedError, RepoIdError,
    WeightsError,
)
from cmhash.zoo import hub, pretrained, registry
from cmhash.zoo.hub_card import METHODS, render_card
from hub_server import fake_hub, no_real_hub, point_hub_at, run_dir  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CARD = REPO / "model_cards" / "example-dmsh-coco-mini-64.md"
PUBLISHED = {".gitattributes", "README.md", "config.json", "manifest.json", "model.safetensors"}
TOKEN = "hf_test_token_not_real"


@pytest.fixture(scope="module")
def subset(run_dir, data_root):
    from cmhash.zoo.data import load_dataset

    config = json.loads((run_dir / "config.json").read_text())
    n = sum(config["data"]["split"][k] for k in ("query", "database"))
    return load_dataset("coco-mini", data_root).subset(np.arange(n))


def codes(model, dataset) -> dict[str, np.ndarray]:
    """Packed codes of every row, per modality, as the training loop computes them."""
    from cmhash.runtime.codes import pack
    from cmhash.zoo.inputs import image_input, text_input
    from cmhash.zoo.scoring import encode_rows

    rows = np.arange(len(dataset))
    inputs = {"image": image_input(dataset, model.backbone_configs["image"], True, progress=False),
              "text": text_input(dataset, model.backbone_configs["text"], True, rows, progress=False)}
    return {m: pack(v) for m, v in encode_rows(model, inputs, rows).items()}


def publish(run_dir: Path, repo_id: str = "cmhash-test/dmsh16", **kw) -> str:
    return hub.publish(run_dir, repo_id, token=TOKEN, **kw)


def blob_of(path: Path) -> Path:
    return Path(os.path.realpath(path))


# ------------------------------------------------------------------------------------------ basics
def test_checkpoint_file_names_are_the_model_modules():
    from cmhash.zoo import model

    assert (hub.CONFIG_NAME, hub.WEIGHTS_NAME) == (model.CONFIG_NAME, model.WEIGHTS_NAME)


@pytest.mark.parametrize("text, repo, rev", [
    ("org/name", "org/name", "main"),
    ("org/name@v1.0", "org/name", "v1.0"),
    ("hf-hub:org/name@" + "a" * 40, "org/name", "a" * 40),
])
def test_parse_hub_source(text, repo, rev):
    assert hub.parse_hub_source(text) == hub.HubSource(repo, rev)


@pytest.mark.parametrize("bad", ["no-namespace", "a/b/c", "bad..name/x", "org/na me", "org/-x", "", "org/name@"])
def test_invalid_repo_ids_are_typed_errors_before_any_request(bad, fake_hub, run_dir):
    with pytest.raises(RepoIdError, match="ORG/NAME|revision"):
        hub.parse_hub_source(bad)
    with pytest.raises(RepoIdError, match="ORG/NAME"):
        hub.download(bad)
    with pytest.raises(RepoIdError, match="ORG/NAME"):
        publish(run_dir, bad)
    assert fake_hub.requests == []


# --------------------------------------------------------------------------------------- round trip
def test_round_trip_publish_download_load_gives_identical_codes(fake_hub, run_dir, subset):
    from cmhash.zoo.model import CrossModalHasher

    sha = publish(run_dir)

    # the commit holds exactly the publishable files, byte for byte; no resume state, no metrics log
    assert sha == fake_hub.repos["cmhash-test/dmsh16"].refs["main"]
    files = fake_hub.files("cmhash-test/dmsh16", sha)
    assert set(files) == PUBLISHED
    for name in ("config.json", "model.safetensors"):
        assert files[name] == (run_dir / name).read_bytes()
    manifest = json.loads(files["manifest.json"])
    assert set(manifest["files"]) == PUBLISHED - {".gitattributes", "manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}
    assert files["README.md"].decode() in fake_hub.validated_yaml  # the card went through validate-yaml

    # the regular-mode upload endpoints were used, with the token, and nothing unexpected was asked
    called = {(m, p) for m, p in fake_hub.requests}
    for expected in [("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
                     ("POST", "/api/models/cmhash-test/dmsh16/preupload/main"),
                     ("POST", "/api/models/cmhash-test/dmsh16/commit/main")]:
        assert expected in called
    assert f"Bearer {TOKEN}" in fake_hub.auth_headers
    assert "visibility" not in fake_hub.create_payloads[0]  # the namespace's default, unless --private

    # real snapshot_download, pinned to the commit; the folder is the commit's snapshot
    path = hub.download(f"cmhash-test/dmsh16@{sha}")
    assert path.name == sha and path.parent.name == "snapshots"
    assert {p.name for p in path.iterdir()} == PUBLISHED
    assert ("GET", f"/cmhash-test/dmsh16/resolve/{sha}/model.safetensors") in fake_hub.requests

    original = CrossModalHasher.from_pretrained(run_dir)
    loaded = hub.load_hasher(f"hf-hub:cmhash-test/dmsh16@{sha}")
    assert loaded.config == original.config
    want, got = codes(original, subset), codes(loaded, subset)
    for m in ("image", "text"):
        assert want[m].shape == (len(subset), 2)  # 16 bits
        np.testing.assert_array_equal(got[m], want[m])
    assert fake_hub.unexpected == []


def test_publish_without_hf_xet_takes_the_legacy_commit_path(fake_hub, run_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    sha = publish(run_dir, "cmhash-test/legacy", private=True)
    assert set(fake_hub.files("cmhash-test/legacy", sha)) == PUBLISHED
    assert fake_hub.create_payloads[0]["visibility"] == "private"
    assert hub.download("cmhash-test/legacy").name == sha  # the branch resolves to the new commit
    assert fake_hub.unexpected == []


def test_republishing_replaces_the_onnx_folder(fake_hub, run_dir, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "image_encoder.onnx").write_bytes(b"not really onnx")
    (export / "sidecar.json").write_text("{}")
    (export / ".hidden").write_text("skipped")
    first = publish(run_dir, with_onnx=export)
    files = fake_hub.files("cmhash-test/dmsh16", first)
    assert set(files) == PUBLISHED | {"onnx/image_encoder.onnx", "onnx/sidecar.json"}
    assert "onnx/image_encoder.onnx" in json.loads(files["manifest.json"])["files"]
    assert "onnx/" in files["README.md"].decode()
    onnx = hub.download(f"cmhash-test/dmsh16@{first}") / "onnx" / "image_encoder.onnx"
    assert onnx.read_bytes() == b"not really onnx"

    second = publish(run_dir)  # without the export: its old files must not linger next to new weights
    assert second != first
    assert set(fake_hub.files("cmhash-test/dmsh16", second)) == PUBLISHED

    (export / "image_encoder.onnx").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no .onnx file"):
        publish(run_dir, with_onnx=export)


# ------------------------------------------------------------------------------------------ offline
def test_pinned_commit_loads_offline_from_the_cache_without_any_request(fake_hub, run_dir, monkeypatch):
    sha = publish(run_dir)
    online = hub.download(f"cmhash-test/dmsh16@{sha}")
    assert hub.download("cmhash-test/dmsh16") == online  # by branch once: writes refs/main
    fake_hub.shutdown()  # nothing to answer from now on
    seen = len(fake_hub.requests)

    assert hub.download(f"cmhash-test/dmsh16@{sha}", local_files_only=True) == online
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.download(f"cmhash-test/dmsh16@{sha}") == online
    assert hub.download("cmhash-test/dmsh16") == online  # main, through refs/main
    assert hub.load_hasher(f"hf-hub:cmhash-test/dmsh16@{sha}").bits == 16
    assert len(fake_hub.requests) == seen


def _fake_cache(cache: Path, repo_id: str, commit: str, folder: Path) -> Path:
    """models--ORG--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = src.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / src.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    return snapshot


def test_hand_built_cache_resolves_offline_with_the_real_huggingface_hub(run_dir, tmp_path, monkeypatch):
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "home", offline=True)
    cache = Path(constants.HF_HUB_CACHE)
    commit = "0123456789abcdef0123456789abcdef01234567"
    staged = hub.stage(run_dir, tmp_path / "staged", repo_id="org/cached")
    snapshot = _fake_cache(cache, "org/cached", commit, staged)

    config = hf_hub_download("org/cached", "config.json", revision=commit, local_files_only=True)
    assert Path(config) == snapshot / "config.json"
    assert Path(snapshot_download("org/cached", revision=commit)) == snapshot  # HF_HUB_OFFLINE
    assert hub.download(f"org/cached@{commit}") == snapshot
    assert hub.download("org/cached") == snapshot  # refs/main
    assert hub.load_hasher("hf-hub:org/cached").bits == 16


def test_offline_with_an_empty_cache_names_repo_revision_and_the_fetch_command(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(NotCachedError) as err:
        hub.download("org/never-fetched@v2")
    message = str(err.value)
    assert "org/never-fetched" in message and "'v2'" in message
    assert "cmhash download org/never-fetched@v2" in message and "HF_HUB_OFFLINE" in message
    assert constants.HF_HUB_CACHE in message

    assert "pin a commit (cmhash download org/never-fetched@COMMIT" in message  # a branch or tag can move

    commit = "f" * 40
    with pytest.raises(NotCachedError, match=f"cmhash download org/never-fetched@{commit}") as pinned:
        hub.load_hasher(f"hf-hub:org/never-fetched@{commit}")
    assert "pin a commit" not in str(pinned.value)  # already pinned


def test_local_files_only_and_an_unreachable_hub_also_say_how_to_fetch(monkeypatch):
    with pytest.raises(NotCachedError, match=r"--offline.*Fetch it once with network: cmhash download org/x@main"):
        hub.download("org/x", local_files_only=True)
    with pytest.raises(NotCachedError, match=r"could not be reached.*cmhash download org/x@main"):
        hub.download("org/x")  # the autouse endpoint is a closed port


# --------------------------------------------------------------------------------------- not found
def test_unknown_revision_and_unknown_repo_are_typed(fake_hub, run_dir):
    publish(run_dir)
    with pytest.raises(HubNotFoundError, match=r"cmhash-test/dmsh16 has no revision 'v9'"):
        hub.download("cmhash-test/dmsh16@v9")
    with pytest.raises(HubNotFoundError, match="has no revision '" + "e" * 40):
        hub.download("cmhash-test/dmsh16@" + "e" * 40)
    with pytest.raises(HubNotFoundError, match="no model repository cmhash-test/nope"):
        hub.download("cmhash-test/nope")
    assert isinstance(HubNotFoundError("x"), LookupError)


def test_an_unreachable_hub_is_a_typed_error_when_publishing(run_dir):
    with pytest.raises(HubError, match=r"could not publish to cmhash-test/dmsh16.*127\.0\.0\.1:9 could not be reached"):
        publish(run_dir)  # the autouse endpoint is a closed port


def test_a_repo_without_manifest_is_refused(fake_hub, run_dir):
    api = HfApi(token=TOKEN)
    api.create_repo("org/bare")
    api.upload_folder(repo_id="org/bare", folder_path=run_dir, allow_patterns=["config.json", "model.safetensors"])
    with pytest.raises(ChecksumError, match="has no manifest.json"):
        hub.download("org/bare")


# ------------------------------------------------------------------------------------------ manifest
def test_a_tampered_cached_file_fails_the_manifest_check_and_force_repairs_it(fake_hub, run_dir):
    sha = publish(run_dir)
    path = hub.download(f"cmhash-test/dmsh16@{sha}")
    weights = blob_of(path / "model.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.chmod(0o644)
    weights.write_bytes(bytes(data))

    fix = f"cmhash download cmhash-test/dmsh16@{sha} --force"
    with pytest.raises(ChecksumError, match="model.safetensors") as err:
        hub.download(f"cmhash-test/dmsh16@{sha}")
    assert fix in str(err.value)
    with pytest.raises(ChecksumError, match="model.safetensors"):
        hub.load_hasher(f"hf-hub:cmhash-test/dmsh16@{sha}")
    assert hub.download(f"cmhash-test/dmsh16@{sha}", force_download=True) == path
    assert hub.load_hasher(f"hf-hub:cmhash-test/dmsh16@{sha}").bits == 16


def test_local_dir_sources_are_checked_when_they_carry_a_manifest(run_dir, tmp_path):
    staged = hub.stage(run_dir, tmp_path / "copy", repo_id="org/local")
    assert hub.load_hasher(f"local-dir:{staged}").bits == 16
    assert hub.load_hasher(run_dir).bits == 16  # a run folder has no manifest: loaded as is

    config = json.loads((staged / "config.json").read_text())
    config["recipe"]["epochs"] = 999
    (staged / "config.json").write_text(json.dumps(config))
    with pytest.raises(ChecksumError, match=r"config.json in .* does not match manifest.json"):
        hub.load_hasher(str(staged))
    with pytest.raises(CheckpointNotFoundError, match="for a Hub model write hf-hub:org/missing"):
        hub.load_hasher("org/missing")


@pytest.mark.parametrize("present, missing", [
    ((), "config.json and model.safetensors"),
    (("config.json", "metrics.jsonl"), "model.safetensors"),
    (("model.safetensors",), "config.json"),
])
def test_publish_refuses_a_run_dir_without_its_checkpoint(fake_hub, run_dir, tmp_path, present, missing):
    for name in present:
        shutil.copyfile(run_dir / name, tmp_path / name)
    with pytest.raises(CheckpointNotFoundError) as err:
        publish(tmp_path)
    assert f"lacks {missing}" in str(err.value) and "cmhash train" in str(err.value)
    with pytest.raises(CheckpointNotFoundError, match="is not a folder"):
        publish(tmp_path / "nowhere")
    assert fake_hub.requests == []


def test_publish_offline_is_a_typed_error(fake_hub, run_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        publish(run_dir)
    assert fake_hub.requests == []


# ---------------------------------------------------------------------------------------------- card
def test_card_round_trips_with_its_eval_results(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    card = render_card(run_dir, repo_id="org/dmsh16")
    data = ModelCard(str(card)).data
    assert data.library_name == "cmhash" and data.license == "apache-2.0"
    assert {"dmsh", "16-bits", "cross-modal-retrieval", "deep-hashing"} <= set(data.tags)
    assert data.datasets == ["coco-mini"] and data.metrics == ["map"]
    assert data.model_name == "org/dmsh16"
    parsed = {r.metric_config: r for r in data.eval_results}
    assert set(parsed) == {"i2t-16bits", "t2i-16bits"}
    for d in ("i2t", "t2i"):
        r = parsed[f"{d}-16bits"]
        assert r.metric_type == "map" and r.dataset_type == "coco-mini" and r.dataset_split == "test"
        assert r.metric_value == round(config["metrics"]["test"][f"map_{d}"], 4)
    text = card.text
    split = config["data"]["split"]
    assert f"Trained on {split['fit']} image–caption pairs of coco-mini with frozen backbones" in text
    assert "a demonstration of the pipeline, not a retrieval model" in text
    assert "Deep Multi-similarity Hashing via Label-guided Network" in text and "@article{" in text
    # Usage: download -> export -> torch-free search, each command as the CLI spells it.
    for step in ("cmhash download org/dmsh16@main", 'cmhash export onnx "$CKPT" --out exports/dmsh16',
                 "cmhash index build", "cmhash search --index", "load_encoder(", "HammingIndex("):
        assert step in text
    assert f"selected epoch {config['training']['selected_epoch'] + 1}" in text


@pytest.mark.parametrize("method", ["dcph", "dhaph", "pairwise"])
def test_cards_cite_each_method(run_dir, tmp_path, method):
    config = json.loads((run_dir / "config.json").read_text())
    config["method"] = method
    (tmp_path / "config.json").write_text(json.dumps(config))
    card = render_card(tmp_path)
    assert ModelCard(str(card)).data.tags[0] == method
    if METHODS[method]["bibtex"]:
        assert METHODS[method]["title"] in card.text and METHODS[method]["bibtex"] in card.text
    else:
        assert "without a paper of its own" in card.text


def test_card_of_an_unfinished_run_is_a_typed_error(run_dir, tmp_path):
    config = json.loads((run_dir / "config.json").read_text())
    del config["metrics"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="lacks metrics"):
        render_card(tmp_path)


def test_committed_example_card_parses_back():
    text = EXAMPLE_CARD.read_text(encoding="utf-8")
    data = ModelCard(text).data
    assert data.library_name == "cmhash" and "64-bits" in data.tags
    results = {r.metric_config: r.metric_value for r in data.eval_results}
    assert set(results) == {"i2t-64bits", "t2i-64bits"}
    for short, key in (("I→T", "i2t-64bits"), ("T→I", "t2i-64bits")):
        assert f"| {short} | {results[key]:.4f} |" in text  # the body table shows the YAML's numbers


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_only_the_shipped_hashers_until_something_is_published():
    assert [m.name for m in registry.list_models()] == pretrained.names()
    assert all(m.shipped for m in registry.list_models())
    with pytest.raises(CheckpointNotFoundError, match="no zoo model named 'dmsh-coco-mini-64-hub'"):
        registry.get_model("dmsh-coco-mini-64-hub")
    with pytest.raises(ConfigError, match="40-hex commit"):
        registry.PublishedModel("x", "org/x", "main", "dmsh", 64, "coco-mini")
    with pytest.raises(RepoIdError):
        registry.PublishedModel("x", "not-a-repo", "a" * 40, "dmsh", 64, "coco-mini")


def test_a_registered_model_loads_its_pinned_commit(fake_hub, run_dir, monkeypatch, tmp_path):
    sha = publish(run_dir)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    later = publish(run_dir, with_onnx=tmp_path)  # main moves on; the pin must not follow it
    assert later != sha
    monkeypatch.setattr(registry, "MODELS", {})
    entry = registry.register(registry.PublishedModel(
        "dmsh16-test", "cmhash-test/dmsh16", sha, "dmsh", 16, "coco-mini", {"map_i2t": 0.5, "map_t2i": 0.4}))
    assert registry.get_model("dmsh16-test") is entry and entry.source == f"hf-hub:cmhash-test/dmsh16@{sha}"
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(entry)
    folder = hub.resolve_source("zoo:dmsh16-test")
    assert folder.name == sha and not (folder / "onnx").exists()
    assert hub.load_hasher("zoo:dmsh16-test").bits == 16


def test_a_bow_checkpoint_is_staged_with_its_vocabulary(tmp_path):
    """Checkpoint format 2 carries the BoW vocabulary: `stage` publishes it, the manifest lists it,
    and the loaded hasher has it back."""
    import torch

    from cmhash.zoo.backbones import build_backbone, get_config
    from cmhash.zoo.data import BowVocabulary
    from cmhash.zoo.model import CrossModalHasher
    from cmhash.zoo.recipes import make_config

    torch.manual_seed(0)
    vocab = BowVocabulary([f"w{i}" for i in range(40)])
    bow = get_config("bow-mlp", input_dim=len(vocab), out_dim=64)
    scores = {"map_i2t": 0.5, "map_t2i": 0.5, "score": 0.5, "precision_i2t": {}, "precision_t2i": {}}
    config = {"format": "cmhash-hasher/2", "method": "dcph", "bits": 16,
              "recipe": make_config("dcph", "paper", bits=16).to_dict(), "modalities": ["text"],
              "image_backbone": get_config("alexnet").to_dict(), "text_backbone": bow.to_dict(),
              "backbones_trained": True, "data": {"dataset": "coco-mini", "split_seed": 0, "split": {}},
              "training": {"selected_epoch": 0, "selected_on": "val", "epochs": 1, "seconds": 1.0, "setup": {}},
              "metrics": {"val": scores, "test": scores}}
    run = CrossModalHasher(config, {"text": build_backbone(bow)}, vocab).save_pretrained(tmp_path / "run")
    dest = hub.stage(run, tmp_path / "staged")
    listed = json.loads((dest / "manifest.json").read_text())["files"]
    assert {"config.json", "model.safetensors", "vocabulary.json", "README.md"} <= set(listed)
    assert "`vocabulary.json`: the words of the bag-of-words text input" in (dest / "README.md").read_text()
    assert hub.load_hasher(f"local-dir:{dest}").vocabulary == vocab
    manifest = json.loads((dest / "manifest.json").read_text())
    del manifest["files"]["vocabulary.json"]  # an unlisted file is never loaded unchecked
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ChecksumError, match="does not list vocabulary.json"):
        hub.load_hasher(f"local-dir:{dest}")
