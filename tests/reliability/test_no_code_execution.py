"""No code runs from a file: pickle checkpoints are refused without being unpickled, and the source tree
holds no unpickling call but the one `torch.load(weights_only=True)` of the packaged EfficientNet file.

Hub downloads are checked against manifest.json (tests/zoo/test_hub.py: tampered cache files, missing
manifests, pinned commits); they are not repeated here.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmhash.errors import WeightsError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("cmhash", "zoo", "export", "runtime", "bench")


class _Payload:
    """Unpickling this runs `open(marker, "w")`: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture
def evil(tmp_path):
    """(pickle bytes, marker path); the payload is proven live by unpickling it in another process."""
    probe = tmp_path / "probe-marker"
    code = "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())"
    (tmp_path / "probe.pkl").write_bytes(pickle.dumps({"state_dict": _Payload(probe)}))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "probe.pkl")], check=True)
    assert probe.exists(), "the payload must create its marker when unpickled"
    marker = tmp_path / "marker"
    return pickle.dumps({"state_dict": _Payload(marker)}), marker


def _checkpoint_with(real_folder, tmp_path, name: str, data: bytes, keep_weights: bool = False) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(real_folder("checkpoint"), folder)
    if not keep_weights:
        (folder / "model.safetensors").unlink()
    (folder / name).write_bytes(data)
    return folder


def _check_refusal(exc: WeightsError) -> None:
    text = str(exc)
    assert "pickle" in text and "execute arbitrary code" in text  # why
    assert "save_file" in text and "model.safetensors" in text and "weights_only=True" in text  # how to convert


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth", "last.ckpt"])
def test_a_pickle_checkpoint_folder_is_refused_without_unpickling(name, evil, real_folder, tmp_path):
    from cmhash.zoo.hub import load_hasher
    from cmhash.zoo.model import CrossModalHasher

    data, marker = evil
    folder = _checkpoint_with(real_folder, tmp_path, name, data)
    for load in (CrossModalHasher.from_pretrained, load_hasher):
        with pytest.raises(WeightsError) as info:
            load(folder)
        _check_refusal(info.value)
    assert not marker.exists()


def test_a_pickle_passed_as_the_source_is_refused(evil, tmp_path):
    from cmhash.zoo.hub import load_hasher

    data, marker = evil
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    for source in (path, f"local-dir:{path}"):
        with pytest.raises(WeightsError) as info:
            load_hasher(source)
        _check_refusal(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("format_", ["pickle", "torch.save"])
def test_a_pickle_disguised_as_model_safetensors_is_refused(format_, evil, real_folder, tmp_path):
    import torch

    from cmhash.zoo.model import CrossModalHasher

    data, marker = evil
    if format_ == "torch.save":  # the zip container of torch.save, with the payload inside
        torch.save({"w": torch.zeros(2), "evil": _Payload(marker)}, tmp_path / "t.pt")
        data = (tmp_path / "t.pt").read_bytes()
    folder = _checkpoint_with(real_folder, tmp_path, "model.safetensors", data, keep_weights=True)
    with pytest.raises(WeightsError) as info:
        CrossModalHasher.from_pretrained(folder)
    _check_refusal(info.value)
    assert not marker.exists()


def test_a_safetensors_checkpoint_next_to_a_pickle_loads_and_ignores_the_pickle(evil, real_folder, tmp_path):
    from cmhash.zoo.model import CrossModalHasher

    data, marker = evil
    folder = _checkpoint_with(real_folder, tmp_path, "pytorch_model.bin", data, keep_weights=True)
    assert CrossModalHasher.from_pretrained(folder).bits == json.loads((folder / "config.json").read_text())["bits"]
    assert not marker.exists()


# --------------------------------------------------------------------------------- the source tree
_UNPICKLERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
               "_pickle.Unpickler", "dill.load", "dill.loads", "joblib.load", "marshal.load", "marshal.loads",
               "shelve.open", "pandas.read_pickle", "torch.jit.load", "torch.serialization.load", "yaml.unsafe_load"}


def _calls(path: Path):
    """(dotted name with import aliases resolved, ast.Call) of every call in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(alias.get(func.id, func.id))
                yield ".".join(reversed(parts)), node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def test_the_source_tree_never_unpickles():
    torch_loads, unsafe = [], []
    for top in SHIPPED:
        for path in sorted((REPO / top).rglob("*.py")):
            where = str(path.relative_to(REPO))
            for name, call in _calls(path):
                if name == "torch.load":
                    torch_loads.append((where, _keyword(call, "weights_only")))
                elif name in _UNPICKLERS or (name == "yaml.load" and _keyword(call, "Loader") is None):
                    unsafe.append(f"{where}:{call.lineno} {name}")
                elif name == "numpy.load" and _keyword(call, "allow_pickle") not in (None, False):
                    unsafe.append(f"{where}:{call.lineno} numpy.load(allow_pickle={_keyword(call, 'allow_pickle')})")
    assert unsafe == []
    assert torch_loads == [("zoo/backbones/weights.py", True)]


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    """The scan above is only worth something if it sees aliased and from-imported calls."""
    src = tmp_path / "m.py"
    src.write_text("import pickle as p\nfrom numpy import load\nimport torch\n"
                   "p.loads(b'')\nload('x', allow_pickle=True)\ntorch.load('y')\n")
    names = [(n, _keyword(c, "allow_pickle")) for n, c in _calls(src)]
    assert ("pickle.loads", None) in names and ("numpy.load", True) in names and ("torch.load", None) in names
