"""The hashers shipped inside the package: one per method, each loads through `zoo:NAME` with its
manifest checked and encodes, and the weights file is byte-reproducible (safetensors writes its
metadata in hash-map order, which varies per process)."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from cmhash.errors import CheckpointNotFoundError
from cmhash.zoo import pretrained, registry
from cmhash.zoo.hub import load_hasher

RESAVE = """
import sys
from cmhash.zoo.model import CrossModalHasher
CrossModalHasher.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
"""


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_shipped_hasher_per_method_at_64_bits():
    configs = {name: json.loads((pretrained.ROOT / name / "config.json").read_text()) for name in pretrained.names()}
    assert sorted(c["method"] for c in configs.values()) == ["dcph", "dhaph", "dmsh"]
    assert all(c["bits"] == 64 and c["data"]["dataset"] == "coco-mini" for c in configs.values())
    assert pretrained.DEFAULT in configs and configs[pretrained.DEFAULT]["method"] == "dhaph"


@pytest.mark.parametrize("name", pretrained.names())
def test_a_shipped_hasher_loads_by_zoo_name_and_encodes(name):
    folder = pretrained.ROOT / name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"config.json", "model.safetensors", "README.md"} <= set(manifest["files"])
    config = json.loads((folder / "config.json").read_text())
    model = load_hasher(f"zoo:{name}")
    assert model.bits == config["bits"] == 64
    assert not model.backbones_trained  # only the heads are shipped; backbones come from their packages
    torch.manual_seed(0)
    for modality in ("image", "text"):  # frozen backbones: the shipped towers take backbone features
        features = torch.randn(4, config[f"{modality}_backbone"]["out_dim"])
        with torch.no_grad():
            out = model(modality, features)
        assert out.shape == (4, 64) and torch.isfinite(out).all()
        codes = {tuple((row >= 0).tolist()) for row in out}
        assert len(codes) == 4, f"{name}: four random {modality} inputs share a code"


def test_resaving_in_fresh_processes_reproduces_the_shipped_bytes(tmp_path):
    folder = pretrained.ROOT / pretrained.DEFAULT
    digests = set()
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "-c", RESAVE, str(folder), str(out)], check=True, timeout=300)
        digests.add(sha(out / "model.safetensors"))
    assert digests == {sha(folder / "model.safetensors")}


def test_an_unknown_name_is_a_typed_error_listing_the_zoo():
    with pytest.raises(CheckpointNotFoundError, match="no zoo model named 'no-such-hasher'") as info:
        load_hasher("zoo:no-such-hasher")
    assert all(name in str(info.value) for name in pretrained.names())
    with pytest.raises(CheckpointNotFoundError):
        registry.get_model("no-such-hasher")
