"""The Hub model id rule, shared by the hub client (`cmhash.zoo.hub`) and the zoo registry
(`cmhash.zoo.registry`), which both check ids; here so that neither imports the other for it."""

from __future__ import annotations

from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import validate_repo_id

from cmhash.errors import RepoIdError


def check_repo_id(repo_id: str) -> str:
    """`ORG/NAME` as the Hub accepts it, else a RepoIdError naming the value and the rules."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise RepoIdError(f"{repo_id!r} is not a Hub model id: write ORG/NAME, e.g. my-lab/dmsh-coco-mini-64")
    try:
        validate_repo_id(repo_id)
    except hf_errors.HFValidationError as exc:
        raise RepoIdError(f"{repo_id!r} is not a valid Hub model id ({exc}). Use ORG/NAME with letters, digits, "
                          "'-', '_' and '.', at most 96 characters, e.g. my-lab/dmsh-coco-mini-64") from exc
    return repo_id
