import numpy as np
import pytest

from cmhash.errors import CmhashError, CodeFormatError, InvalidInputError
from cmhash.runtime.codes import check_codes, hamming_distances, pack, sign, unpack


@pytest.mark.parametrize("bits", [16, 32, 64, 128])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    h = rng.standard_normal((37, bits)).astype(np.float32)
    codes = pack(h)
    assert codes.dtype == np.uint8 and codes.shape == (37, bits // 8)
    np.testing.assert_array_equal(unpack(codes), sign(h))
    np.testing.assert_array_equal(pack(unpack(codes)), codes)


def test_sign_of_zero_is_plus_one():
    h = np.array([[0.0, -0.0, 1e-30, -1e-30, 2.0, -3.0, 0.0, 0.0]])
    np.testing.assert_array_equal(sign(h), [[1, 1, 1, -1, 1, -1, 1, 1]])
    # Bit order: bit j lives in byte j // 8, least significant bit first.
    assert pack(h)[0, 0] == 0b11010111  # bits 7..0 read right to left: 1,1,1,0,1,0,1,1


def test_faiss_layout_by_hand():
    bits = np.full((1, 16), -1.0)
    bits[0, 0] = 1.0  # bit 0 -> byte 0, value 1
    bits[0, 9] = 1.0  # bit 9 -> byte 1, value 2
    np.testing.assert_array_equal(pack(bits), [[1, 2]])


@pytest.mark.parametrize("bits", [0, 7, 12, 65])
def test_bits_not_multiple_of_8_is_a_typed_error(bits):
    with pytest.raises(CodeFormatError, match="multiple of 8"):
        pack(np.ones((2, bits)))


def test_nan_is_rejected():
    h = np.ones((2, 16))
    h[1, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        pack(h)


def test_check_codes_errors_are_typed_and_builtin():
    with pytest.raises(CodeFormatError, match="uint8"):
        check_codes(np.zeros((2, 8), np.int32))
    with pytest.raises(CodeFormatError, match="64-bit"):
        check_codes(np.zeros((2, 8), np.uint8), bits=32)
    with pytest.raises(ValueError):  # typed errors are also the matching builtin
        check_codes(np.zeros(8, np.uint8))
    with pytest.raises(CmhashError):
        unpack(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("bits", [8, 16, 24, 64, 128])
def test_hamming_matches_unpacked_inner_product(bits):
    rng = np.random.default_rng(0)
    q, db = rng.standard_normal((9, bits)), rng.standard_normal((31, bits))
    expected = (bits - unpack(pack(q)).astype(int) @ unpack(pack(db)).astype(int).T) // 2
    np.testing.assert_array_equal(hamming_distances(pack(q), pack(db)), expected)
