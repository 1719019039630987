"""The hasher shipped inside the package: it loads through the checked path, and its weights file is
byte-reproducible (safetensors writes its metadata in hash-map order, which varies per process)."""

import hashlib
import json
import subprocess
import sys

import pytest

from cmhash.errors import CheckpointNotFoundError
from cmhash.zoo import pretrained
from cmhash.zoo.hub import load_hasher

RESAVE = """
import sys
from cmhash.zoo.model import CrossModalHasher
CrossModalHasher.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
"""


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_default_hasher_ships_and_loads_with_its_manifest_checked():
    folder = pretrained.path()
    assert pretrained.DEFAULT in pretrained.names()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"config.json", "model.safetensors", "README.md"} <= set(manifest["files"])
    model = load_hasher(folder)
    config = json.loads((folder / "config.json").read_text())
    assert model.bits == config["bits"] == 64 and config["method"] == "dhaph"
    assert not model.backbones_trained  # only the heads are shipped; backbones come from their packages


def test_resaving_in_fresh_processes_reproduces_the_shipped_bytes(tmp_path):
    shipped = pretrained.path() / "model.safetensors"
    digests = set()
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "-c", RESAVE, str(pretrained.path()), str(out)], check=True, timeout=300)
        digests.add(sha(out / "model.safetensors"))
    assert digests == {sha(shipped)}


def test_an_unknown_name_is_a_typed_error_listing_what_ships():
    with pytest.raises(CheckpointNotFoundError, match=pretrained.DEFAULT):
        pretrained.path("no-such-hasher")
