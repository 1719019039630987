"""Argument checks written once: a positive integer, a positive number.

Why here: the same three-line check (not a bool, an integer, at least 1) was written by hand in
about fifteen places, each with its own wording. Every caller names the value (`"batch_size"`,
`"DCPHConfig.rounds"`), picks the typed error its layer raises (InvalidInputError for an argument,
ConfigError for a config field), and may add the fix. Dependency-free apart from numpy, so the
torch-free runtime uses it too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cmhash.errors import CmhashError, InvalidInputError


def _fail(error: type[CmhashError], name: str, what: str, value: Any, fix: str) -> CmhashError:
    return error(f"{name} must be {what}, got {value!r}" + (f"; {fix}" if fix else ""))


def positive_int(value: Any, name: str, *, error: type[CmhashError] = InvalidInputError, fix: str = "") -> int:
    """`value` as an int when it is an integer >= 1 (numpy integers too; never a bool), else raise
    `error("<name> must be a positive integer, got <value>[; <fix>]")`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise _fail(error, name, "a positive integer", value, fix)
    return int(value)


def optional_positive_int(value: Any, name: str, *, error: type[CmhashError] = InvalidInputError,
                          fix: str = "") -> int | None:
    """None, or `positive_int(value)` (its message then says "or None")."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise _fail(error, name, "a positive integer or None", value, fix)
    return int(value)


def code_bits(value: Any, *, error: type[CmhashError] = InvalidInputError) -> int:
    """`value` as an int when it is a valid code length: a positive multiple of 8 (packed codes are whole
    bytes). Named `bits` in messages: the config field and the `--bits` flag alike."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 8 or value % 8:
        raise _fail(error, "bits", "a positive multiple of 8 (16, 32, 64 or 128)", value, "pass e.g. --bits 64")
    return int(value)


def positive_number(value: Any, name: str, *, error: type[CmhashError] = InvalidInputError, fix: str = "") -> float:
    """`value` as a float when it is a finite number > 0 (never a bool), else raise
    `error("<name> must be a positive number, got <value>[; <fix>]")`."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not math.isfinite(value) or value <= 0:
        raise _fail(error, name, "a positive number", value, fix)
    return float(value)
