"""Hash encoders loaded from an export folder: images or texts in, packed uint8 codes out.

    from cmhash.runtime.encoder import load_encoder
    images = load_encoder("exports/dmsh64", "image")              # onnxruntime, CPU
    codes = images.encode(["a.jpg", "b.png"]).codes                # (2, 8) uint8, FAISS bit layout
    texts = load_encoder("exports/dmsh64", "text", provider="cuda", allow_fallback=True)
    result = texts.encode(["a dog on a sofa", ...]); result.truncated  # which texts were cut

The codes are the graph's own `codes` output (bit packing is in the ONNX graph, exactly
`runtime.codes.pack`), so every backend hands out the same layout. Loading checks the sha256 of
every file it uses against export.json and the model's metadata against export.json
(`runtime.export_folder`). Inputs are prepared exactly as in training: `ImagePreprocess` from the
model's metadata, the export's `tokenizer.json` with its max_length, or its BoW vocabulary.

Backends: "onnxruntime" with provider "cpu", "cuda" or "tensorrt" (a GPU provider that onnxruntime
does not deliver raises ProviderUnavailableError unless allow_fallback=True; see
runtime/ort_session.py), or "tensorrt": a native engine built by `cmhash export trt`
(runtime/trt_session.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from cmhash.errors import EncoderError, ExportFolderError, InvalidInputError
from cmhash.runtime.batching import batch_ranges, check_batch_size, progress_bar, show_progress
from cmhash.runtime.export_folder import ExportFolder, check_metadata
from cmhash.runtime.preprocess import ImageInput, ImagePreprocess

BACKENDS = ("onnxruntime", "tensorrt")
DEFAULT_BATCH = 32


@dataclass
class EncodeResult:
    """Codes of n inputs, plus what the caller should be told about them.

    truncated: texts cut to the tokenizer's max_length (token towers), else None.
    no_known_words: texts with no vocabulary word, whose BoW row is all zero (BoW towers), else None.
    hash: the float32 tanh values, when asked for with return_hash=True.
    """

    codes: np.ndarray
    truncated: np.ndarray | None = None
    no_known_words: np.ndarray | None = None
    hash: np.ndarray | None = None


class Encoder:
    """One modality's encoder: a session plus the checks on its inputs and outputs."""

    def __init__(self, folder: ExportFolder, modality: str, session: Any, info: Mapping[str, Any]) -> None:
        self.folder = folder
        self.modality = modality
        self.session = session
        self.bits = int(info["bits"])
        self.nbytes = self.bits // 8
        self.input_kind = str(info["input_kind"])
        self.input_names = tuple(info["inputs"])
        self.method = folder.method
        self.model_id = folder.manifest.model_id
        missing = [n for n in (*self.input_names, "hash", "codes")
                   if n not in (*session.inputs, *session.outputs)]
        if missing:
            raise ExportFolderError(f"{session.model} lacks the tensors {', '.join(missing)} of a cmhash encoder; "
                                    "export the checkpoint again")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.folder.path)!r}, {self.modality}, {self.bits} bits, "
                f"{self.provider})")

    @property
    def provider(self) -> str:
        return self.session.providers[0]

    def encode_arrays(self, feed: Mapping[str, np.ndarray], return_hash: bool = False) -> EncodeResult:
        """Run prepared model inputs (e.g. pixels from your own pipeline), checked for shape, dtype, NaN/inf."""
        feed = self._check_feed(feed)
        out = self.session.run(feed, ["hash", "codes"])
        h, codes = out["hash"], out["codes"]
        n = len(next(iter(feed.values())))
        if codes.dtype != np.uint8 or codes.shape != (n, self.nbytes) or h.shape != (n, self.bits):
            raise EncoderError(
                f"{self.session.model.name} returned codes {codes.dtype}{codes.shape} and hash {h.shape}; expected "
                f"uint8({n}, {self.nbytes}) and ({n}, {self.bits}): the model is not this export's encoder"
            )
        bad = ~np.isfinite(h).all(axis=1)
        if bad.any():
            raise EncoderError(
                f"the {self.modality} encoder produced NaN/inf hash values for input(s) {np.flatnonzero(bad)[:10].tolist()}"
                " (their codes would be meaningless); with an fp16 model, use the fp32 one (precision='fp32')"
            )
        return EncodeResult(codes, hash=h.astype(np.float32) if return_hash else None)

    def _check_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(feed) != set(self.input_names):
            raise InvalidInputError(f"the {self.modality} encoder takes inputs {list(self.input_names)}, "
                                    f"got {sorted(feed)}")
        arrays = {name: np.asarray(feed[name]) for name in self.input_names}
        rows = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        if rows == {0}:
            raise InvalidInputError(f"no {self.modality} inputs to encode (empty batch)")
        if len(rows) != 1:
            raise InvalidInputError(f"inputs {list(arrays)} have different batch sizes {sorted(rows)}")
        for name, a in arrays.items():
            self._check_input(name, a)
        return arrays

    def _check_input(self, name: str, a: np.ndarray) -> None:
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise InvalidInputError(f"input {name!r} holds {int((~np.isfinite(a)).sum())} NaN or infinite value(s); "
                                    "the encoder needs finite inputs")
        if a.dtype.kind not in "fiub":
            raise InvalidInputError(f"input {name!r} must be numeric, got dtype {a.dtype}")


class ImageEncoder(Encoder):
    """Images (paths or PIL images) -> codes, preprocessed as in training."""

    def __init__(self, folder: ExportFolder, modality: str, session: Any, info: Mapping[str, Any]) -> None:
        super().__init__(folder, modality, session, info)
        self.preprocess = ImagePreprocess.from_dict(info["preprocess"])

    def _check_input(self, name: str, a: np.ndarray) -> None:
        size = self.preprocess.crop
        if a.ndim != 4 or a.shape[1:] != (3, size, size):
            raise InvalidInputError(f"pixels must have shape (n, 3, {size}, {size}) (ImagePreprocess output), "
                                    f"got {a.shape}")
        super()._check_input(name, a)

    def encode(self, images: Sequence[ImageInput], *, batch_size: int = DEFAULT_BATCH,
               progress: bool | None = None, return_hash: bool = False) -> EncodeResult:
        """Codes of `images` in order; an unreadable image raises DataFormatError naming it."""
        images = _as_list(images, "images", (str, os.PathLike))
        check_batch_size(batch_size)
        parts = []
        with progress_bar(len(images), f"encoding {len(images)} images", show_progress(progress, len(images))) as advance:
            for start, stop in batch_ranges(len(images), batch_size):
                pixels = self.preprocess(images[start:stop])
                parts.append(self.encode_arrays({self.input_names[0]: pixels}, return_hash))
                advance(stop - start)
        return _concat(parts)


class TextEncoder(Encoder):
    """Texts -> codes, through the export's tokenizer.json (token towers) or vocabulary.json (BoW)."""

    def __init__(self, folder: ExportFolder, modality: str, session: Any, info: Mapping[str, Any],
                 verify: bool = True) -> None:
        super().__init__(folder, modality, session, info)
        entry = folder.encoder(modality)
        if entry.asset is None:
            raise ExportFolderError(f"export.json names no tokenizer or vocabulary for the {modality} encoder; "
                                    "export the checkpoint again")
        asset = folder.file(entry.asset, verify=verify)
        if self.input_kind == "tokens":
            from cmhash.runtime.tokenize import TextTokenizer

            self.max_length = int(info["max_length"])
            self.tokenizer = TextTokenizer(asset, self.max_length)
        else:
            from cmhash.runtime.bow import BowTextInput

            self.max_length = None
            self.vocabulary = BowTextInput(asset)

    def _check_input(self, name: str, a: np.ndarray) -> None:
        if self.input_kind == "tokens":
            if a.ndim != 2 or a.dtype.kind not in "iu" or not 1 <= a.shape[1] <= self.max_length:
                raise InvalidInputError(f"{name} must be integer (n, length) with 1 <= length <= {self.max_length}, "
                                        f"got {a.dtype}{a.shape}")
            top = self.tokenizer.vocab_size if name == self.input_names[0] else 2
            if a.min() < 0 or a.max() >= top:
                raise InvalidInputError(f"{name} must hold values in [0, {top}) (the export's tokenizer), "
                                        f"got [{a.min()}, {a.max()}]")
            if name == self.input_names[1] and not a.any(axis=1).all():
                raise InvalidInputError(f"every row of {name} needs at least one token (an all-zero row has no text)")
        elif a.ndim != 2 or a.shape[1] != len(self.vocabulary):
            raise InvalidInputError(f"{name} must have shape (n, {len(self.vocabulary)}), got {a.shape}")
        super()._check_input(name, a)

    def encode(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH, progress: bool | None = None,
               return_hash: bool = False) -> EncodeResult:
        """Codes of `texts` in order; see EncodeResult for the truncation / unknown-word report."""
        texts = _as_list(texts, "texts", ())
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise InvalidInputError(f"texts must be strings; item {bad[0]} is a {type(texts[bad[0]]).__name__}")
        check_batch_size(batch_size)
        parts, flags = [], []
        with progress_bar(len(texts), f"encoding {len(texts)} texts", show_progress(progress, len(texts))) as advance:
            for start, stop in batch_ranges(len(texts), batch_size):
                feed, flag = self._prepare(texts[start:stop])
                parts.append(self.encode_arrays(feed, return_hash))
                flags.append(flag)
                advance(stop - start)
        result = _concat(parts)
        if self.input_kind == "tokens":
            result.truncated = np.concatenate(flags)
        else:
            result.no_known_words = ~np.concatenate(flags)
        return result

    def _prepare(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self.input_kind == "tokens":
            batch = self.tokenizer(texts)
            ids_name, mask_name = self.input_names
            return {ids_name: batch.input_ids, mask_name: batch.attention_mask}, batch.truncated
        rows, known = self.vocabulary(texts)
        return {self.input_names[0]: rows}, known


def _as_list(items: Any, what: str, scalar_types: tuple[type, ...]) -> list:
    if isinstance(items, (str, bytes, *scalar_types)) or not hasattr(items, "__len__"):
        raise InvalidInputError(f"pass a list of {what}, not a single {type(items).__name__}")
    items = list(items)
    if not items:
        raise InvalidInputError(f"no {what} to encode (empty list)")
    return items


def _concat(parts: list[EncodeResult]) -> EncodeResult:
    codes = np.concatenate([p.codes for p in parts])
    hashes = [p.hash for p in parts]
    return EncodeResult(codes, hash=np.concatenate(hashes) if hashes[0] is not None else None)


def load_encoder(folder: str | os.PathLike | ExportFolder, modality: str, *, backend: str = "onnxruntime",
                 provider: str = "cpu", allow_fallback: bool = False, precision: str = "fp32",
                 threads: int | None = None, verify: bool = True) -> ImageEncoder | TextEncoder:
    """The `modality` ("image" or "text") encoder of an export folder (see the module docstring).

    verify=False skips the sha256 checks of the files (about 0.2 s for a 90 MB text model).
    """
    folder = folder if isinstance(folder, ExportFolder) else ExportFolder(folder)
    entry = folder.encoder(modality)
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        from cmhash.runtime.ort_session import OrtSession

        path = folder.model_path(modality, precision, verify=verify)
        session = OrtSession(path, provider, allow_fallback=allow_fallback, threads=threads)
        info = check_metadata(session.metadata, folder, entry, str(path))
    else:
        session = _tensorrt_session(folder, modality)
        info = {"bits": folder.bits, "input_kind": entry.input_kind, **entry.fields}
    info = {**info, "inputs": entry.inputs or session.inputs}
    if entry.input_kind == "pixels":
        return ImageEncoder(folder, modality, session, info)
    return TextEncoder(folder, modality, session, info, verify=verify)


def _tensorrt_session(folder: ExportFolder, modality: str):
    from cmhash.runtime.trt_session import TensorRTSession

    engines = folder.manifest.engines
    if modality not in engines:
        raise ExportFolderError(f"{folder.path} has no TensorRT engine for the {modality} encoder; build one on this "
                                f"machine with: cmhash export trt {folder.path}")
    entry = engines[modality]
    onnx_path = folder.path / entry.source_onnx if entry.source_onnx else None
    return TensorRTSession(folder.path / entry.file, onnx_path=onnx_path)
