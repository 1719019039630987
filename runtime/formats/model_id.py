"""The identity of the model that made a set of hash codes: `METHOD/BITS/SHA256`.

Why: codes of two models live in unrelated spaces, so searching an index built by one export with a
query encoded by another gives a ranked list that means nothing. An export folder's identity is its
source checkpoint's method, bits and model.safetensors sha256 (export.json `source`); both towers of
one export share it. Codes files and index files record the identity of the export that encoded
them, and a search refuses a query whose encoder's identity differs. Codes from outside cmhash carry
none ("") and are searched as before.
"""

from __future__ import annotations

from cmhash.errors import ModelMismatchError


def model_id(method: str, bits: int, checkpoint_sha256: str | None) -> str:
    """The identity string, or "" when the checkpoint's sha256 is not known (an export without `source`)."""
    return f"{method}/{bits}/{checkpoint_sha256}" if checkpoint_sha256 else ""


def describe(identity: str) -> str:
    """`dhaph 64-bit, checkpoint 0eb000bb4daf` for messages."""
    parts = identity.split("/")
    if len(parts) != 3:
        return repr(identity)
    method, bits, sha = parts
    return f"{method} {bits}-bit, checkpoint {sha[:12]}"


def check_same_model(index_id: str, query_id: str, index: str, model: str) -> None:
    """Raise ModelMismatchError when both identities are known and differ."""
    if index_id and query_id and index_id != query_id:
        raise ModelMismatchError(
            f"the index {index} holds codes of another model ({describe(index_id)}) than {model} encodes "
            f"({describe(query_id)}): their codes are not comparable. Search with the export that built the "
            f"index, or re-encode the items with this one (cmhash encode ... --model {model}, then cmhash index build)")
