"""`cmhash publish`, `cmhash download` and `cmhash zoo list` against the local fake Hub.

In-process through typer's CliRunner (stdout holds only the data), and once as real subprocesses
(`python -m cmhash`, HF_ENDPOINT pointing at the fake Hub) for the entry point's exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from huggingface_hub import constants
from typer.testing import CliRunner

from cmhash.cli import app
from cmhash.commands import hub as hub_commands
from cmhash.errors import CheckpointNotFoundError, NotCachedError, RepoIdError
from cmhash.zoo import pretrained, registry
from cmhash.zoo.hub import load_hasher
from hub_server import fake_hub, no_real_hub, run_dir  # noqa: F401 (fixtures)

COMMIT_LINE = r"^[0-9a-f]{40}\n$"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_publish_then_download_print_only_the_commit_and_the_path(fake_hub, run_dir):
    result = invoke("publish", str(run_dir), "--repo", "cli-test/dmsh16", "--token", "hf_cli_token")
    assert result.exit_code == 0, result.output
    sha = result.stdout.strip()
    assert result.stdout == sha + "\n" and len(sha) == 40
    assert sha == fake_hub.repos["cli-test/dmsh16"].refs["main"]
    assert "Bearer hf_cli_token" in fake_hub.auth_headers

    result = invoke("download", f"cli-test/dmsh16@{sha}")
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.name == sha and (path / "manifest.json").is_file()

    result = invoke("download", f"cli-test/dmsh16@{sha}", "--offline", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"source": f"cli-test/dmsh16@{sha}", "path": str(path), "commit": sha}
    assert fake_hub.unexpected == []


def test_publish_json_and_private(fake_hub, run_dir):
    result = invoke("publish", str(run_dir), "--repo", "cli-test/private", "--private", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["repo_id"] == "cli-test/private" and out["source"] == f"hf-hub:cli-test/private@{out['commit']}"
    assert fake_hub.create_payloads[-1]["visibility"] == "private"


def test_cli_errors_are_the_typed_errors(fake_hub, run_dir, monkeypatch):
    result = invoke("publish", str(run_dir), "--repo", "not a repo")
    assert isinstance(result.exception, RepoIdError)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = invoke("download", "cli-test/never@v1")
    assert isinstance(result.exception, NotCachedError)
    assert "cmhash download cli-test/never@v1" in str(result.exception)


def test_zoo_list_json_lists_the_shipped_hashers_as_their_config_json_says():
    result = invoke("zoo", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    shipped = [e for e in listed if e["shipped"]]
    assert sorted(e["method"] for e in shipped) == ["dcph", "dhaph", "dmsh"]
    for entry in shipped:
        config = json.loads((pretrained.ROOT / entry["name"] / "config.json").read_text())
        assert entry["bits"] == config["bits"] == 64 and entry["method"] == config["method"]
        assert entry["dataset"] == config["data"]["dataset"] == "coco-mini"
        assert entry["metrics"] == {k: config["metrics"]["test"][k] for k in ("map_i2t", "map_t2i")}
        assert entry["source"] == f"zoo:{entry['name']}"


def test_zoo_list_shows_published_entries_beside_the_shipped_ones(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", {})
    registry.register(registry.PublishedModel("dmsh-test", "org/dmsh-test", "c" * 40, "dmsh", 64, "coco-mini",
                                              {"map_i2t": 0.3392, "map_t2i": 0.3298}))
    listed = {e["name"]: e for e in json.loads(invoke("zoo", "list", "--json").stdout)}
    assert listed["dmsh-test"] == {"name": "dmsh-test", "shipped": False, "repo_id": "org/dmsh-test",
                                   "revision": "c" * 40, "method": "dmsh", "bits": 64, "dataset": "coco-mini",
                                   "metrics": {"map_i2t": 0.3392, "map_t2i": 0.3298},
                                   "source": f"hf-hub:org/dmsh-test@{'c' * 40}"}
    assert set(pretrained.names()) < set(listed)
    monkeypatch.setattr(hub_commands.stdout, "width", 160)  # no folding in the test terminal
    table = invoke("zoo", "list").stdout
    assert "dmsh-test" in table and "org/dmsh-test@cccccccccccc" in table and "0.3392" in table
    assert all(name in table for name in pretrained.names()) and "shipped" in table


def test_a_published_zoo_entry_downloads_and_loads_its_pinned_commit(fake_hub, run_dir, monkeypatch):
    sha = invoke("publish", str(run_dir), "--repo", "cli-test/zoo").stdout.strip()
    monkeypatch.setattr(registry, "MODELS", {})
    registry.register(registry.PublishedModel("zoo-test", "cli-test/zoo", sha, "dmsh", 16, "coco-mini"))
    result = invoke("download", "zoo:zoo-test")
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()).name == sha
    model = load_hasher("zoo:zoo-test")
    assert model.bits == 16
    assert fake_hub.unexpected == []


def test_a_shipped_zoo_name_downloads_to_its_package_folder():
    result = invoke("download", f"zoo:{pretrained.DEFAULT}")
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == pretrained.ROOT / pretrained.DEFAULT


def test_an_unknown_zoo_name_is_a_typed_error_listing_the_names():
    result = invoke("download", "zoo:no-such-model")
    assert isinstance(result.exception, CheckpointNotFoundError)
    assert all(name in str(result.exception) for name in pretrained.names())


def _cmhash(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmhash", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def test_subprocess_round_trip_and_exit_codes(fake_hub, run_dir, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_CACHE": str(tmp_path / "home" / "hub"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    published = _cmhash("publish", str(run_dir), "--repo", "cli-test/sub", env=env)
    assert published.returncode == 0, published.stderr
    assert published.stdout.count("\n") == 1 and len(published.stdout.strip()) == 40
    sha = published.stdout.strip()
    assert f"cmhash download cli-test/sub@{sha}" in published.stderr

    downloaded = _cmhash("download", f"cli-test/sub@{sha}", env=env)
    assert downloaded.returncode == 0, downloaded.stderr
    assert downloaded.stdout == str(tmp_path / "home" / "hub" / "models--cli-test--sub" / "snapshots" / sha) + "\n"

    offline = {**env, "HF_HUB_OFFLINE": "1"}
    again = _cmhash("download", f"cli-test/sub@{sha}", env=offline)
    assert again.returncode == 0 and again.stdout == downloaded.stdout
    missing = _cmhash("download", "cli-test/other@main", env=offline)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "error:" in missing.stderr and "cmhash download cli-test/other@main" in " ".join(missing.stderr.split())
