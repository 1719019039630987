"""runtime/formats/checkpoint.py and manifest.py: the checkpoint folder and file integrity, torch-free."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cmhash.errors import ChecksumError, ConfigError, WeightsError
from cmhash.runtime.formats import checkpoint, manifest
from cmhash.runtime.formats.checkpoint import CheckpointConfig, read_checkpoint, write_checkpoint

SHIPPED_V1 = Path(__file__).parent / "data" / "hasher-v1-config.json"  # the config the 0.1.0 release shipped (f4e917c)


def _config(**changes) -> CheckpointConfig:
    base = dict(method="dcph", bits=16, recipe={"bits": 16}, modalities=("text",),
                image_backbone={"name": "alexnet"}, text_backbone={"name": "bow-mlp", "input_kind": "bow"},
                backbones_trained=True, data={"dataset": "coco-mini", "split_seed": 3}, cmhash_version="0.1.0")
    return CheckpointConfig(**{**base, **changes})


def test_write_then_read_gives_the_config_the_vocabulary_and_a_manifest(tmp_path):
    vocab = b'{"format": "cmhash.bow_vocabulary", "version": 1, "size": 1, "words": ["cat"]}'
    config = _config(vocabulary=checkpoint.VOCABULARY_NAME)
    write_checkpoint(tmp_path, config, b"weights", {checkpoint.VOCABULARY_NAME: vocab})
    got = read_checkpoint(tmp_path)
    assert got.config == config and got.config.split_seed == 3 and got.config.dataset == "coco-mini"
    assert got.vocabulary.read_bytes() == vocab and got.weights.read_bytes() == b"weights"
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["format"] == "cmhash-hasher/2" and saved["modalities"] == ["text"]
    files = manifest.read_manifest(tmp_path, fix="-", must_list=checkpoint.REQUIRED_FILES)
    assert sorted(files) == ["config.json", "model.safetensors", "vocabulary.json"]
    assert files["model.safetensors"] == manifest.FileEntry(hashlib.sha256(b"weights").hexdigest(), 7)


def test_a_vocabulary_named_but_not_given_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="assets"):
        write_checkpoint(tmp_path, _config(vocabulary="vocabulary.json"), b"w")


def test_a_missing_vocabulary_file_names_the_fix(tmp_path):
    write_checkpoint(tmp_path, _config(vocabulary="vocabulary.json"), b"w", {"vocabulary.json": b"{}"})
    (tmp_path / "vocabulary.json").unlink()
    with pytest.raises(WeightsError, match="copy the whole checkpoint folder"):
        read_checkpoint(tmp_path)


def test_a_version_1_config_is_upgraded_in_memory(tmp_path):
    raw = json.loads(SHIPPED_V1.read_text())
    assert raw["format"] == "cmhash-hasher/1" and "vocabulary" not in raw
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = read_checkpoint(tmp_path).config
    assert config.method == "dhaph" and config.bits == 64 and config.modalities == ("image", "text")
    assert config.vocabulary is None and config.metrics["test"] == raw["metrics"]["test"]
    assert config.to_dict()["format"] == "cmhash-hasher/2"


@pytest.mark.parametrize("change, error, words", [
    ({"format": "cmhash-hasher/3"}, WeightsError, "upgrade cmhash"),
    ({"format": "something-else/1"}, WeightsError, "not a cmhash checkpoint config"),
    ({"shiny": 1}, ConfigError, "shiny"),
    ({"bits": 12}, ConfigError, "multiple of 8"),
    ({"modalities": ["image", "image"]}, ConfigError, "distinct"),
    ({"vocabulary": "../../etc/passwd"}, ConfigError, "in the checkpoint folder"),
    ({"recipe": None}, ConfigError, "recipe must be an object"),
])
def test_a_bad_config_is_a_typed_error_naming_the_field(tmp_path, change, error, words):
    raw = {**_config().to_dict(), **change}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(error, match=words):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("text, words", [(None, "no config.json"), ("{", "not valid JSON"), ("[1]", "JSON object"),
                                         ('{"format": "cmhash-hasher/2"}', "lacks method")])
def test_a_folder_that_is_not_a_checkpoint(tmp_path, text, words):
    if text is not None:
        (tmp_path / "config.json").write_text(text)
    with pytest.raises(WeightsError, match=words):
        read_checkpoint(tmp_path)


def test_the_manifest_catches_a_changed_file_and_the_old_export_entry_shape(tmp_path):
    write_checkpoint(tmp_path, _config(), b"weights")
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    with pytest.raises(ChecksumError, match=r"model.safetensors in .* does not match manifest.json"):
        manifest.read_manifest(tmp_path, fix="-")
    with pytest.raises(ValueError, match="sha256"):
        manifest.FileEntry.from_dict({"sha256": "ab", "bytes": 2})  # export.json's scheme before export format 2


def test_a_manifest_listing_a_path_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": manifest.FORMAT, "files": {"../x": {"sha256": "0" * 64, "size": 1}}}))
    with pytest.raises(ChecksumError, match="not a path inside the folder"):
        manifest.read_manifest(tmp_path, fix="-")
