"""Without Ray installed, the Ray options fail with one typed error naming the extra; nothing else changes."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from cmhash.cli import app
from cmhash.errors import MissingDependencyError

TINY = Path(__file__).resolve().parents[1] / "runtime" / "data" / "tiny"  # a 16-bit image + text export


def test_ray_options_without_ray_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    (tmp_path / "t.txt").write_text("a dog\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["encode", "texts", str(tmp_path / "t.txt"), "--model", str(TINY),
                                      "--out", str(tmp_path / "c"), "--ray"])
    assert isinstance(result.exception, MissingDependencyError)
    assert "pip install 'cmhash[ray]'" in str(result.exception)
    assert not (tmp_path / "c").exists()


def test_distributed_package_imports_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    import importlib

    for name in ("cluster", "code_shards", "encode", "merge", "pipeline", "shard", "sharded_index"):
        importlib.import_module(f"cmhash.runtime.distributed.{name}")
