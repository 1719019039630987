"""cmhash.validators: the one positive-integer and positive-number check, and what its errors say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmhash.errors import ConfigError, InvalidInputError
from cmhash.validators import optional_positive_int, positive_int, positive_number


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(200)])
def test_positive_integers_pass_as_ints(value):
    out = positive_int(value, "n")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 2.5, "3", None, np.bool_(True), math.nan])
def test_anything_else_is_refused_with_its_name_and_value(value):
    with pytest.raises(InvalidInputError) as info:
        positive_int(value, "batch_size")
    assert str(info.value) == f"batch_size must be a positive integer, got {value!r}"


def test_the_caller_picks_the_error_type_and_the_fix():
    with pytest.raises(ConfigError, match=r"^DCPHConfig.rounds must be a positive integer, got 0; use 80$"):
        positive_int(0, "DCPHConfig.rounds", error=ConfigError, fix="use 80")


def test_optional_positive_int():
    assert optional_positive_int(None, "threads") is None and optional_positive_int(4, "threads") == 4
    with pytest.raises(InvalidInputError, match=r"threads must be a positive integer or None, got 0"):
        optional_positive_int(0, "threads")


@pytest.mark.parametrize("value, ok", [(1e-5, True), (3, True), (np.float32(0.5), True), (0, False), (-1.0, False),
                                       (math.inf, False), (math.nan, False), (True, False), ("1", False)])
def test_positive_number(value, ok):
    if ok:
        assert positive_number(value, "lr") == float(value)
    else:
        with pytest.raises(InvalidInputError, match="lr must be a positive number"):
            positive_number(value, "lr")


def test_the_configs_and_arguments_use_it():
    """Spot checks that the former hand-written checks now give this module's message."""
    pytest.importorskip("torch")
    from cmhash.zoo.methods.dcph import DCPHConfig
    from cmhash.zoo.methods.dhaph import DHaPHConfig
    from cmhash.zoo.data import proportional_split

    with pytest.raises(ConfigError, match=r"DCPHConfig.rounds must be a positive integer, got 0"):
        DCPHConfig.paper(rounds=0)
    with pytest.raises(ConfigError, match=r"^bits must be a positive multiple of 8 .*got True"):
        DHaPHConfig.paper(bits=True)
    with pytest.raises(InvalidInputError, match=r"^n must be a positive integer, got -3$"):
        proportional_split(-3, 0)


@pytest.mark.parametrize("value", [0, 7, 12, -8, True, 8.0, "64"])
def test_code_bits_refuses_what_cannot_be_packed_in_the_users_words(value):
    from cmhash.validators import code_bits

    with pytest.raises(InvalidInputError, match=r"^bits must be a positive multiple of 8 .*--bits 64"):
        code_bits(value)


def test_train_refuses_bad_bits_before_any_work(tmp_path):
    """Before: --bits 7 failed only after the first epoch; --bits 0 named DMsHLNConfig."""
    from typer.testing import CliRunner

    from cmhash.cli import app
    from cmhash.errors import ConfigError

    for bits in ("7", "0"):
        result = CliRunner().invoke(app, ["train", "dmsh", "--bits", bits, "--out", str(tmp_path / "run")])
        assert isinstance(result.exception, ConfigError) and "Config" not in str(result.exception)
        assert not (tmp_path / "run").exists()
