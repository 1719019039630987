"""`--data` names a dataset and `--data-root` the folder that holds the datasets, in every command."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cmhash.cli import app
from cmhash.errors import DataNotFoundError


def _commands(group, path: tuple[str, ...] = ()):
    """Every leaf command of the app with its path (`("export", "onnx")`); typer vendors its own click."""
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, group


ALL = list(_commands(typer.main.get_command(app)))


def test_the_app_tree_was_walked():
    names = {" ".join(path) for path, _ in ALL}
    assert {"train", "eval", "data info", "backbones check", "export onnx", "export validate"} <= names


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_data_and_data_root_mean_the_same_in_every_command(path, command):
    for param in command.params:
        if "--data" in getattr(param, "opts", ()):
            assert param.name == "data" or param.name == "dataset", (path, param.name)
            assert "dataset" in (param.help or "").lower(), (path, param.help)
        if "--data-root" in getattr(param, "opts", ()):
            assert param.name == "data_root", (path, param.name)
            assert "folder" in (param.help or "").lower(), (path, param.help)
        if param.name == "data_root":
            assert param.opts == ["--data-root"], (path, param.opts)


def test_the_commands_that_read_a_dataset_take_a_data_root():
    for path, command in ALL:
        if path in (("train",), ("eval",), ("data", "info"), ("backbones", "check"), ("export", "onnx"),
                    ("export", "validate")):
            assert "data_root" in {p.name for p in command.params}, path


def test_a_missing_named_dataset_suggests_the_data_root_flag(tmp_path):
    result = CliRunner().invoke(app, ["data", "info", "coco-mini", "--data-root", str(tmp_path)])
    assert isinstance(result.exception, DataNotFoundError), result.output
    message = str(result.exception)
    assert "--data-root PATH" in message and str(tmp_path / "coco-mini") in message


def test_following_the_missing_dataset_advice_works(tmp_path, data_root):
    """Before: the message said `--data PATH`, which then failed with "matches no dataset layout"."""
    wrong = CliRunner().invoke(app, ["data", "info", "coco-mini", "--data-root", str(tmp_path)])
    assert "--data-root PATH" in str(wrong.exception)
    right = CliRunner().invoke(app, ["data", "info", "coco-mini", "--data-root", str(data_root)])
    assert right.exit_code == 0, right.output
