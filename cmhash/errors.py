"""One exception hierarchy for cmhash.

Every error derives from `CmhashError` and from the builtin it refines, so callers can catch either
`cmhash.errors.CmhashError` or the plain builtin (`ValueError`, `FileNotFoundError`, ...).
Messages name the bad value and say what to do next.
"""

from __future__ import annotations


class CmhashError(Exception):
    """Base class of every error cmhash raises on purpose."""


class DataNotFoundError(CmhashError, FileNotFoundError):
    """A dataset file or folder is missing."""


class DataFormatError(CmhashError, ValueError):
    """A dataset file exists but its content is not what its format promises."""


class CodeFormatError(CmhashError, ValueError):
    """Hash codes of the wrong bit width, dtype or shape."""


class OutputExistsError(CmhashError, FileExistsError):
    """The output path already holds other work; it is replaced only when asked (--overwrite)."""


class ModelMismatchError(CmhashError, ValueError):
    """A query was encoded by another model than the one whose codes fill the index."""


class InvalidInputError(CmhashError, ValueError):
    """An argument is out of range or holds NaN/inf (empty queries, k <= 0, ...)."""


class ConfigError(CmhashError, ValueError):
    """A configuration names an unknown option or inconsistent values."""


class WeightsError(CmhashError, ValueError):
    """Model weights are missing, do not match the architecture, or are in an unsafe format."""


class MissingDependencyError(CmhashError, ImportError):
    """An optional extra is needed for this feature but is not installed."""


def require(module: str, extra: str, feature: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs the Python package '{module}', which is not installed ({exc}). "
            f"Install it with: pip install 'cmhash[{extra}]'"
        ) from exc


class IndexFormatError(CmhashError, ValueError):
    """A saved search index is truncated, corrupted, or written by a newer format version."""


class ExportError(CmhashError, RuntimeError):
    """Exporting an encoder (ONNX, fp16 or TensorRT) failed; the message says which step and why."""


class ExportValidationError(ExportError):
    """An exported model disagrees with its source; `failures` lists every failed check, `report` the rest.

    `result`: the whole export (both reports), when the export itself raised it.
    """

    def __init__(self, message: str, failures: list[str] | None = None, report: dict | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])
        self.report = report or {}
        self.result = None


class EngineBuildError(ExportError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


class EngineMismatchError(CmhashError, RuntimeError):
    """A TensorRT engine was built for another TensorRT version, GPU or ONNX file; rebuild it."""


class CheckpointNotFoundError(CmhashError, FileNotFoundError):
    """A run or checkpoint folder lacks the files a command needs (config.json, model.safetensors, ...)."""


class RepoIdError(CmhashError, ValueError):
    """A Hub repository id or model source (`ORG/NAME[@REV]`, `hf-hub:...`, `local-dir:...`) is malformed."""


class ChecksumError(CmhashError, ValueError):
    """A published file does not match the sha256 and size that its `manifest.json` records."""


class HubError(CmhashError, OSError):
    """Talking to the Hugging Face Hub failed (network, server, authentication, rejected upload)."""


class HubNotFoundError(HubError, LookupError):
    """The Hub has no such model repository, or the repository has no such revision."""


class NotCachedError(HubError, FileNotFoundError):
    """The Hub cannot be asked (offline, or unreachable) and the revision is not in the local cache."""


class ExportFolderError(ExportError, ValueError):
    """An export folder is incomplete or inconsistent (no export.json, a missing or modified model file,
    metadata that disagrees with export.json); the message says which file and how to re-export.

    A subclass of `ExportError` as well (and so of `CmhashError`): export.json has one reader
    (`cmhash.runtime.formats.export_manifest.read_export_manifest`) for the runtime and the export side,
    so callers of either side can catch the type they always caught.
    """


class ProviderUnavailableError(CmhashError, RuntimeError):
    """onnxruntime was asked for a GPU execution provider (CUDA, TensorRT) and silently gave another.

    onnxruntime falls back to the CPU without raising; cmhash raises this instead, unless the caller
    passed `allow_fallback=True`.
    """


class ProviderFallbackWarning(UserWarning):
    """A GPU provider was asked for, was not available, and `allow_fallback=True` let the CPU run it."""


class EncoderError(CmhashError, RuntimeError):
    """Running an encoder failed, or it gave unusable outputs (NaN/inf hash values, wrong shapes)."""


class ShardUnavailableError(CmhashError, RuntimeError):
    """A shard of a sharded index (a Ray actor) died, restarted empty, or cannot be reached.

    Raised instead of returning results without that shard's items. `shard` is its number.
    """

    def __init__(self, message: str, shard: int | None = None) -> None:
        super().__init__(message)
        self.shard = shard


class ClusterError(CmhashError, RuntimeError):
    """Starting or connecting to a Ray cluster failed, or a distributed job failed on it."""
