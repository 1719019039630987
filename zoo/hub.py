"""Publish checkpoints to the Hugging Face Hub and get them back, pinned to a commit and checked.

A published repository holds exactly these files:

- `config.json`, `model.safetensors` (and a BoW tower's `vocabulary.json`): the checkpoint
  (runtime/formats/checkpoint.py);
- `README.md`: the model card (`cmhash.zoo.hub_card`);
- `onnx/...`: an ONNX export, when one is given;
- `manifest.json`: the sha256 and size of every other file (runtime/formats/manifest.py), checked
  on every load, so a corrupted cache or a hand-edited file fails loudly instead of giving different codes.

The rest of a run folder (`metrics.jsonl`, the `train_state.*` resume state) is never published.

Sources that `load_hasher` accepts, as in timm and open_clip: `hf-hub:ORG/NAME[@REV]`,
`local-dir:PATH`, `zoo:NAME` (a zoo entry, shipped in the package or published: `cmhash.zoo.registry`),
or a plain folder path.

This module does not import torch (only `load_hasher` does, when it builds the model), so
`cmhash download` and `cmhash publish` start fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import httpx2
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

import cmhash
from cmhash.errors import (
    CheckpointNotFoundError, ChecksumError, HubError, HubNotFoundError, NotCachedError, RepoIdError,
)
from cmhash.runtime.formats.checkpoint import CONFIG_NAME, REQUIRED_FILES, WEIGHTS_NAME, read_checkpoint
from cmhash.runtime.formats.manifest import MANIFEST_NAME, read_manifest, write_manifest
from cmhash.runtime.io import atomic_write
from cmhash.zoo import registry
from cmhash.zoo.repo_id import check_repo_id

CARD_NAME = "README.md"
ONNX_DIR = "onnx"
DEFAULT_REVISION = "main"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# ----------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class HubSource:
    """A model repository on the Hub and the revision (branch, tag or commit) asked for."""

    repo_id: str
    revision: str = DEFAULT_REVISION

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def parse_hub_source(text: str, revision: str | None = None) -> HubSource:
    """`ORG/NAME[@REV]` (an `hf-hub:` prefix is allowed); `revision` fills in a missing `@REV`."""
    body = text[len("hf-hub:"):] if text.startswith("hf-hub:") else text
    repo_id, sep, rev = body.partition("@")
    if sep and not rev:
        raise RepoIdError(f"{text!r} ends with '@' but names no revision: write ORG/NAME@BRANCH|TAG|COMMIT")
    if sep and revision and revision != rev:
        raise RepoIdError(f"{text!r} pins revision {rev!r} but revision={revision!r} was also given: pass one")
    return HubSource(check_repo_id(repo_id), rev or revision or DEFAULT_REVISION)


# ------------------------------------------------------------------------------------------ errors
def _endpoint() -> str:
    return hf_constants.ENDPOINT


@contextlib.contextmanager
def _hub_errors(source: HubSource, action: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into cmhash's typed errors, naming repo, revision and fix.

    `LocalEntryNotFoundError` (offline and not cached) passes through: `download` words it.
    """
    try:
        yield
    except hf_errors.LocalEntryNotFoundError:
        raise
    except hf_errors.HFValidationError as exc:
        raise RepoIdError(f"{source.repo_id!r} is not a valid Hub model id ({exc})") from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise HubNotFoundError(
            f"{source.repo_id} has no revision {source.revision!r} on {_endpoint()}: pass a branch, tag or 40-hex "
            "commit that exists (the commit `cmhash publish` printed, or one from `cmhash zoo list`)") from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise HubNotFoundError(
            f"no model repository {source.repo_id} on {_endpoint()} (or it is private or gated and no valid token "
            "was sent): check the name, or log in with `hf auth login` or set HF_TOKEN") from exc
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = (" Log in with `hf auth login` or set HF_TOKEN to a token with write access to the namespace."
                if status in (401, 403) else "")
        raise HubError(f"the Hub at {_endpoint()} refused to {action} {source} (HTTP {status}: "
                       f"{exc.server_message or exc}).{hint}") from exc
    except hf_errors.OfflineModeIsEnabled as exc:
        raise HubError(f"cannot {action} {source}: HF_HUB_OFFLINE is set; unset it (or set HF_HUB_OFFLINE=0)") from exc
    except (httpx2.TransportError, hf_errors.FileMetadataError) as exc:
        raise HubError(f"could not {action} {source}: the Hub at {_endpoint()} could not be reached or did not answer "
                       f"like a Hub ({type(exc).__name__}: {exc}). Check the network and HF_ENDPOINT") from exc
    except ValueError as exc:  # upload_folder: the Hub refused the README's YAML metadata
        raise HubError(f"the Hub at {_endpoint()} refused to {action} {source}: {exc}") from exc


# ------------------------------------------------------------------------------------------ publish
def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """A run folder that holds a checkpoint, else a typed error listing what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointNotFoundError(
            f"{run_dir} is not a folder. Train one with: cmhash train dmsh --data coco-mini --out {run_dir}")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise CheckpointNotFoundError(
            f"{run_dir} lacks {' and '.join(missing)}: not a finished training run. Produce them with "
            f"`cmhash train METHOD --out {run_dir}` (rerunning it resumes an interrupted run); a run writes "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} when it ends")
    return run_dir


def _onnx_files(export_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """(path inside onnx/, file) for every visible file of an export folder; it must hold a .onnx file."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise CheckpointNotFoundError(f"--with-onnx {export_dir}: no such folder; pass the folder an ONNX export wrote")
    files = [(p.relative_to(export_dir).as_posix(), p) for p in sorted(export_dir.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(export_dir).parts)]
    if not any(rel.endswith(".onnx") for rel, _ in files):
        raise CheckpointNotFoundError(
            f"--with-onnx {export_dir} holds no .onnx file; pass the folder an ONNX export wrote")
    return files


def stage(run_dir: str | os.PathLike, dest: str | os.PathLike, *, repo_id: str | None = None,
          with_onnx: str | os.PathLike | None = None, shipped: str | None = None) -> Path:
    """Copy exactly the publishable files of a run into `dest`, render the card, write the manifest."""
    from cmhash.zoo.hub_card import render_card

    run_dir, dest = check_run_dir(run_dir), Path(dest)
    onnx = _onnx_files(with_onnx) if with_onnx is not None else []
    card = render_card(run_dir, repo_id=repo_id, onnx_files=[rel for rel, _ in onnx], shipped=shipped)
    dest.mkdir(parents=True, exist_ok=True)
    vocabulary = read_checkpoint(run_dir).config.vocabulary
    for name in (*REQUIRED_FILES, *([vocabulary] if vocabulary else [])):
        shutil.copyfile(run_dir / name, dest / name)
    with atomic_write(dest / CARD_NAME, "w") as fh:
        fh.write(str(card))
    for rel, src in onnx:
        (dest / ONNX_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / ONNX_DIR / rel)
    write_manifest(dest)
    return dest


def publish(run_dir: str | os.PathLike, repo_id: str, private: bool = False,
            with_onnx: str | os.PathLike | None = None, token: str | None = None, *,
            commit_message: str | None = None) -> str:
    """Upload a trained run to `repo_id` (created if needed) and return the 40-hex commit id.

    The commit replaces config.json, model.safetensors, README.md and manifest.json, and removes any
    `onnx/` files of an earlier commit that this one does not carry, so the repo never mixes an old
    export with new weights. `private` only applies when the repo is created. `token` defaults to
    HF_TOKEN or the token saved by `hf auth login`.
    """
    source = HubSource(check_repo_id(repo_id), DEFAULT_REVISION)
    config = read_checkpoint(check_run_dir(run_dir)).config
    if with_onnx is not None:
        _onnx_files(with_onnx)
    if hf_constants.is_offline_mode():
        raise HubError(f"publishing {source.repo_id} needs the network, but HF_HUB_OFFLINE is set: unset it "
                       "(or set HF_HUB_OFFLINE=0) and run again")
    message = commit_message or (f"cmhash publish: {config.method} {config.bits} bits on "
                                 f"{config.dataset} (cmhash {cmhash.__version__})")
    with tempfile.TemporaryDirectory(prefix="cmhash-publish-") as tmp:
        folder = stage(run_dir, tmp, repo_id=source.repo_id, with_onnx=with_onnx)
        api = HfApi(token=token)  # endpoint: HF_ENDPOINT, read now (not at import)
        with _hub_errors(source, "publish to"):
            # None, not False: a new repo follows the namespace's default visibility unless asked private
            api.create_repo(source.repo_id, private=True if private else None, exist_ok=True, repo_type="model")
            info = api.upload_folder(repo_id=source.repo_id, folder_path=folder, repo_type="model",
                                     commit_message=message, delete_patterns=[f"{ONNX_DIR}/*"])
    return info.oid


# ----------------------------------------------------------------------------------------- download
def download(source: str, revision: str | None = None, local_files_only: bool | None = None, *,
             force_download: bool = False, cache_dir: str | os.PathLike | None = None,
             token: str | None = None) -> Path:
    """Fetch `ORG/NAME[@REV]` (or `zoo:NAME`, a published entry's pinned commit) into the Hub cache, or
    find it there, and return its checked folder; a shipped `zoo:NAME` is the package's checked folder.

    Offline (HF_HUB_OFFLINE=1, or `local_files_only=True`) only the cache is read: a pinned 40-hex
    commit is found without any HTTP call, a branch through the cache's `refs/`. The manifest is
    verified before the folder is returned.
    """
    if source.startswith("zoo:"):
        entry = registry.get_model(source[len("zoo:"):])
        if isinstance(entry, registry.ShippedModel):
            if revision is not None:
                raise RepoIdError(f"{source} ships inside cmhash; it takes no revision ({revision!r})")
            _verify(entry.folder, fix="reinstall cmhash: pip install --force-reinstall cmhash")
            return entry.folder
        if revision not in (None, entry.revision):
            raise RepoIdError(f"{source} is pinned to {entry.revision}; it takes no other revision ({revision!r})")
        source, revision = f"{entry.repo_id}@{entry.revision}", None
    src = parse_hub_source(source, revision)
    env_offline = hf_constants.is_offline_mode()
    offline = bool(local_files_only) or env_offline
    cache = Path(cache_dir) if cache_dir is not None else Path(hf_constants.HF_HUB_CACHE)
    fetch = f"cmhash download {src}"
    try:
        with _hub_errors(src, "download"):
            path = Path(snapshot_download(src.repo_id, revision=src.revision, repo_type="model",
                                             cache_dir=cache_dir, local_files_only=offline,
                                             force_download=force_download, token=token,
                                             library_name="cmhash", library_version=cmhash.__version__))
    except hf_errors.LocalEntryNotFoundError as exc:
        if env_offline:
            why, command = "downloads are off (HF_HUB_OFFLINE is set)", f"HF_HUB_OFFLINE=0 {fetch}"
        elif offline:
            why, command = "downloads are off (--offline / local_files_only=True)", fetch
        else:
            why, command = f"the Hub at {_endpoint()} could not be reached ({exc.__cause__ or exc})", fetch
        pin = ("" if _COMMIT.match(src.revision or "") else
               f" Then pin a commit (cmhash download {src.repo_id}@COMMIT, with the 40-hex commit that "
               "`cmhash publish` printed or that the download's folder is named after): a branch such as "
               f"{src.revision!r} can move, a commit cannot.")
        raise NotCachedError(f"{src.repo_id} at revision {src.revision!r} is not in the local Hugging Face cache "
                             f"{cache} (or only partly), and {why}. Fetch it once with network: {command}.{pin}") from exc
    pinned = f"{src.repo_id}@{path.name}" if _COMMIT.match(path.name) else str(src)
    _verify(path, fix=f"fetch it again with: cmhash download {pinned} --force")
    return path


# ------------------------------------------------------------------------------------------- loading
def _verify(folder: Path, *, fix: str, required: bool = True) -> None:
    """Check the folder's manifest; it must list the checkpoint's files, its vocabulary included."""
    files = read_manifest(folder, fix=fix, required=required, must_list=REQUIRED_FILES)
    vocabulary = read_checkpoint(folder).config.vocabulary if files is not None else None
    if vocabulary and vocabulary not in files:
        raise ChecksumError(f"{folder / MANIFEST_NAME} does not list {vocabulary}, which config.json names: "
                            f"the checkpoint cannot be checked. Fix: {fix}")


def resolve_source(source: str | os.PathLike, *, revision: str | None = None,
                   local_files_only: bool | None = None) -> Path:
    """The local checkpoint folder of `hf-hub:ORG/NAME[@REV]`, `zoo:NAME`, `local-dir:PATH` or a path.

    Hub and zoo sources are downloaded (manifest checked); a local folder's manifest is checked when
    it has one (checkpoints written before format 2 have none).
    """
    if isinstance(source, str) and source.startswith(("hf-hub:", "zoo:")):
        return download(source, revision, local_files_only)
    text = os.fspath(source)
    folder = Path(text[len("local-dir:"):] if text.startswith("local-dir:") else text)
    if folder.is_file():
        from cmhash.zoo.model import refuse_pickles  # imports torch, on this error path only

        refuse_pickles(folder)
        raise CheckpointNotFoundError(f"{folder} is a file; pass the checkpoint folder that holds "
                                      f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    if not folder.is_dir():
        hint = (f"; for a Hub model write hf-hub:{text}" if re.fullmatch(r"[\w.-]+/[\w.-]+(@\S+)?", text)
                and not text.startswith("local-dir:") else "")
        raise CheckpointNotFoundError(f"no checkpoint folder at {folder}{hint}")
    if not (folder / WEIGHTS_NAME).is_file():
        from cmhash.zoo.model import refuse_pickles  # imports torch, on this error path only

        refuse_pickles(folder)  # a pickle-only folder gets the why-and-how-to-convert message first
    _verify(folder, required=False, fix="copy the folder again from where it came from, or publish and download it again")
    return folder


def load_hasher(source: str | os.PathLike, *, revision: str | None = None, local_files_only: bool | None = None,
                backbone_weights: Mapping[str, str | os.PathLike] | None = None):
    """A `CrossModalHasher` from any source `resolve_source` takes, loaded with strict key checks.

    Example: `load_hasher("hf-hub:my-lab/dmsh-coco-mini-64@<commit>")`.
    """
    from cmhash.zoo.model import CrossModalHasher

    folder = resolve_source(source, revision=revision, local_files_only=local_files_only)
    return CrossModalHasher.from_pretrained(folder, backbone_weights)
