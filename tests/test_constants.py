"""cmhash.constants: the environment is parsed once, at import, into the settings the code reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SHOW = ("import json; from cmhash import constants as c; "
        "print(json.dumps([str(c.CACHE_DIR), str(c.features_cache_dir()), c.DATA_DIR and str(c.DATA_DIR)]))")


def _settings(**env: str) -> list:
    """The settings a fresh interpreter parses from `env` (a child process: its import is the parse)."""
    base = {k: v for k, v in os.environ.items() if k not in ("CMHASH_CACHE", "CMHASH_DATA")}
    out = subprocess.run([sys.executable, "-c", SHOW], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_the_environment_sets_the_cache_and_data_folders(tmp_path):
    cache, data = tmp_path / "c", tmp_path / "d"
    assert _settings(CMHASH_CACHE=str(cache), CMHASH_DATA=str(data)) == [
        str(cache), str(cache / "features"), str(data)]


def test_unset_or_empty_variables_give_the_defaults(tmp_path):
    home = Path.home() / ".cache" / "cmhash"
    assert _settings() == [str(home), str(home / "features"), None]
    assert _settings(CMHASH_CACHE="", CMHASH_DATA=" ") == [str(home), str(home / "features"), None]


def test_a_tilde_in_a_variable_is_expanded():
    assert _settings(CMHASH_CACHE="~/x")[0] == str(Path.home() / "x")


def test_no_other_module_reads_a_cmhash_variable():
    """One place parses the settings: every other module reads `cmhash.constants`."""
    repo = Path(__file__).resolve().parents[1]
    readers = []
    for folder in ("cmhash", "zoo", "export", "runtime"):
        for path in (repo / folder).rglob("*.py"):
            text = path.read_text()
            if path.name != "constants.py" and ('environ.get("CMHASH_' in text or 'getenv("CMHASH_' in text
                                                 or 'environ["CMHASH_' in text):
                readers.append(str(path.relative_to(repo)))
    assert readers == []
