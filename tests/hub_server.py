"""A tiny in-memory Hugging Face Hub on 127.0.0.1, for tests that must not touch the network.

It answers what `HfApi.create_repo`, `HfApi.upload_folder` (regular upload mode: every file travels
base64-encoded inside the NDJSON commit) and `snapshot_download` / `hf_hub_download` call, with the
headers huggingface_hub checks (`X-Repo-Commit`, `ETag`, `Content-Length`, `X-Error-Code`):

    POST /api/repos/create                          create a repo (initial commit: .gitattributes)
    POST /api/validate-yaml                         check the README's YAML front matter
    POST /api/models/{repo}/preupload/{rev}         every file "regular", with the remote git oid
    POST /api/models/{repo}/commit/{rev}            NDJSON: header, file, deletedFile, deletedFolder
    GET  /api/models/{repo}[/revision/{rev}]        model info: sha, siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]     file listing (recursive or one level)
    HEAD|GET /{repo}/resolve/{rev}/{path}           file metadata / content

`GET /api/agent-harnesses` (huggingface_hub's agent detection) gets a 404, which it ignores.
Anything else is answered 404 and kept in `FakeHub.unexpected`, so a test can assert that nothing
surprising was asked.

Fixtures, imported by the Hub test modules: `fake_hub` starts the server in a daemon thread, points
huggingface_hub at it and at a fresh cache, and shuts it down when the test ends; `no_real_hub`
(autouse) aims everything else at a closed port; `run_dir` trains one small real checkpoint per test
session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API_ROUTES = [
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/revision/(?P<rev>[^/]+)$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"), "tree"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


def git_oid(data: bytes) -> str:
    """The git blob id, which the Hub uses as oid and ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class FakeHub:
    """The Hub's state (repos, commits, a request log) and the HTTP server that serves it."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.create_payloads: list[dict] = []
        self.validated_yaml: list[str] = []
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ state
    def _new_commit(self, repo: Repo, files: dict[str, bytes], message: str, parent: str | None) -> Commit:
        self._counter += 1
        oid = hashlib.sha1(f"{repo.repo_id}:{self._counter}:{message}:{time.time_ns()}".encode()).hexdigest()
        commit = Commit(oid, files, message, parent)
        repo.commits[oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self._lock:
            repo = Repo(repo_id, private)
            first = self._new_commit(repo, {".gitattributes": GITATTRIBUTES}, "initial commit", None)
            repo.refs["main"] = first.oid
            self.repos[repo_id] = repo
            return repo

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return self.repos[repo_id]

    def commit_at(self, repo_id: str, revision: str) -> Commit:
        repo = self.repo(repo_id)
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions)."""
        return dict(self.commit_at(repo_id, revision).files)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self._json(err.status, {"error": err.message}, headers)

    def _dispatch(self) -> None:
        hub = self.hub
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        hub.requests.append((self.command, path))
        hub.auth_headers.append(self.headers.get("Authorization"))
        body = self._body() if self.command == "POST" else b""
        try:
            if self.command == "POST" and path == "/api/repos/create":
                return self._create(json.loads(body))
            if self.command == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if path == "/api/agent-harnesses":  # huggingface_hub's best-effort agent detection: "none"
                return self._json(404, {"error": "no agent registry here"})
            for method, pattern, name in _API_ROUTES:
                match = pattern.match(path)
                if method == self.command and match:
                    args = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    return getattr(self, f"_{name}")(body=body, query=query, **args)
        except HubError as err:
            return self._error(err)
        except Exception as exc:  # a bug in the fake Hub or a request it cannot parse: say so, loudly
            hub.unexpected.append((self.command, f"{path} -> {exc!r}"))
            return self._json(500, {"error": f"fake Hub failure: {exc!r}"})
        hub.unexpected.append((self.command, path))
        self._json(404, {"error": f"the fake Hub does not serve {self.command} {path}"})

    do_GET = do_POST = do_HEAD = _dispatch

    # ------------------------------------------------------------------ endpoints
    def _create(self, payload: dict) -> None:
        hub = self.hub
        hub.create_payloads.append(payload)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{hub.url}/{repo_id}"
        if repo_id in hub.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        self.hub.validated_yaml.append(content)
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            return self._json(400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
        self._json(200, {"warnings": [] if match else [{"message": "empty or missing yaml metadata"}]})

    def _preupload(self, repo: str, rev: str, body: bytes, query) -> None:
        commit = self.hub.commit_at(repo, rev)
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_oid(commit.files[f["path"]]) if f["path"] in commit.files else None}
            for f in json.loads(body)["files"]
        ]
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _commit(self, repo: str, rev: str, body: bytes, query) -> None:
        hub = self.hub
        with hub._lock:
            parent = hub.commit_at(repo, rev)
            files = dict(parent.files)
            summary = ""
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value.get("summary", "")
                    if value.get("parentCommit") not in (None, parent.oid):
                        raise HubError(412, None, f"parent commit {value['parentCommit']} is not the head")
                elif key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, None, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                else:  # lfsFile: the preupload answer never asks for LFS
                    raise HubError(400, None, f"the fake Hub takes regular uploads only, got {key!r}")
            the_repo = hub.repo(repo)
            commit = hub._new_commit(the_repo, files, summary, parent.oid)
            if rev in the_repo.refs:
                the_repo.refs[rev] = commit.oid
        self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{commit.oid}", "commitOid": commit.oid,
                         "pullRequestUrl": None})

    def _model_info(self, repo: str, body: bytes, query, rev: str = "main") -> None:
        the_repo = self.hub.repo(repo)
        commit = self.hub.commit_at(repo, rev)
        self._json(200, {
            "id": repo, "modelId": repo, "sha": commit.oid, "private": the_repo.private,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "lastModified": "2025-01-01T00:00:00.000Z",
        })

    def _tree(self, repo: str, rev: str, body: bytes, query, path: str | None = None) -> None:
        commit = self.hub.commit_at(repo, rev)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{path.strip('/')}/" if path else ""
        entries, folders = [], set()
        for name in sorted(commit.files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):].split("/")
            data = commit.files[name]
            entry = {"type": "file", "oid": git_oid(data), "size": len(data), "path": name}
            if recursive:
                folders.update(prefix + "/".join(rest[:i]) for i in range(1, len(rest)))
                entries.append(entry)
            elif len(rest) == 1:
                entries.append(entry)
            else:
                folders.add(prefix + rest[0])
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders)]
        self._json(200, entries)

    def _resolve(self, repo: str, rev: str, path: str, body: bytes, query) -> None:
        commit = self.hub.commit_at(repo, rev)
        if path not in commit.files:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}", commit=commit.oid)
        data = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{git_oid(data)}"', "Accept-Ranges": "bytes"}
        self._send(200, data, headers, content_type="application/octet-stream", length=len(data))


# ---------------------------------------------------------------------------------- pytest helpers
def point_hub_at(monkeypatch, endpoint: str, home, *, offline: bool = False) -> None:
    """Aim huggingface_hub at `endpoint` with its cache, token and state files under `home`.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and the cache paths when it is imported, so the
    attributes of `huggingface_hub.constants` are patched (every module reads them from there at call
    time); environment variables are set too, for subprocesses.
    """
    from huggingface_hub import constants

    home = Path(home)
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": offline,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / "agent_harnesses.json"),
    }
    for name, value in values.items():
        monkeypatch.setattr(constants, name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch, tmp_path):
    """Whatever a test forgets, huggingface_hub talks to a closed local port, never to huggingface.co."""
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf-default")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A started FakeHub that huggingface_hub talks to, with a fresh cache; stopped when the test ends."""
    hub = FakeHub().start()
    try:
        point_hub_at(monkeypatch, hub.url, tmp_path / "hf-home")
        yield hub
    finally:
        hub.shutdown()


_RUNS: list[Path] = []  # each importing module gets its own fixture; the run is trained once


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, data_root: Path, isolated_env) -> Path:
    """A real DMsH-LN run (offline preset, 16 bits, 2 epochs) on the first 48 coco-mini pairs.

    Trained once per test session (about 20 s, mostly the frozen features), shared by every Hub test.
    Treat it as read-only.
    """
    if not _RUNS:
        import numpy as np

        from cmhash.zoo.data import load_dataset
        from cmhash.zoo.recipes import make_config
        from cmhash.zoo.train import train

        out = tmp_path_factory.mktemp("tiny-run") / "dmsh16-48"
        dataset = load_dataset("coco-mini", data_root).subset(np.arange(48))
        config = make_config("dmsh", "offline", bits=16, seed=0, epochs=2, label_stage_epochs=2)
        train("dmsh", config, dataset, out, progress=False)
        _RUNS.append(out)
    return _RUNS[0]
