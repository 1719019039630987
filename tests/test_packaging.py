"""The wheel contains every subpackage (docs/PLATFORM-NOTES.md, "Packaging": with the package-dir mapping,
an unlisted subpackage is silently missing from the wheel while the editable install still works)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPING = {"cmhash": "cmhash", "cmhash.zoo": "zoo", "cmhash.export": "export", "cmhash.runtime": "runtime"}


def source_packages() -> set[str]:
    found = set()
    for name, folder in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (path,) = out.glob("cmhash-*.whl")
    return path


def test_wheel_contains_every_subpackage(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    expected = source_packages()
    assert len(expected) >= 6
    assert expected <= in_wheel, f"missing from the wheel: {sorted(expected - in_wheel)}"


def test_every_subpackage_imports_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    code = (
        "import importlib, cmhash\n"
        f"assert cmhash.__file__.startswith({str(target)!r}), cmhash.__file__\n"
        f"for name in {sorted(source_packages())!r}:\n"
        "    importlib.import_module(name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_wheel_ships_the_model_card_template(wheel):
    """`cmhash publish` renders model_cards/template.md.j2; an installed wheel must carry it."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "cmhash/model_cards/template.md.j2" in names


def test_the_installed_wheel_ships_the_three_zoo_hashers(wheel, tmp_path):
    """The shipped hashers are package data: an unlisted folder would leave `cmhash zoo list` empty."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for hasher in ("dcph-coco-mini-64", "dhaph-coco-mini-64", "dmsh-coco-mini-64"):
        for file in ("config.json", "model.safetensors", "manifest.json", "README.md"):
            assert f"cmhash/zoo/pretrained/{hasher}/{file}" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("from cmhash.zoo.registry import list_models\n"
            "print(sorted((m.method, m.bits) for m in list_models() if m.shipped))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('dcph', 64), ('dhaph', 64), ('dmsh', 64)]"
