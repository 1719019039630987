import numpy as np
import pytest
import torch

from cmhash.errors import CodeFormatError
from cmhash.export.encoders import PackBits, packing_matrix
from cmhash.runtime.codes import pack


@pytest.mark.parametrize("bits", [16, 64, 128])
def test_torch_packing_is_bit_identical_to_runtime_pack(bits):
    rng = np.random.default_rng(bits)
    h = rng.standard_normal((50, bits)).astype(np.float32)
    h[0] = 0.0  # sign(0) = +1
    h[1] = -0.0  # -0.0 >= 0 too
    h[2, ::2] = 1e-30
    h[3, ::3] = -1e-30
    out = PackBits(bits)(torch.from_numpy(h)).numpy()
    assert out.dtype == np.uint8 and out.shape == (50, bits // 8)
    np.testing.assert_array_equal(out, pack(h))
    assert (out[0] == 255).all() and (out[1] == 255).all()


def test_packing_matrix_is_faiss_layout():
    w = packing_matrix(16).numpy()
    assert w.shape == (16, 2)
    assert w[0, 0] == 1 and w[7, 0] == 128 and w[8, 1] == 1 and w[15, 1] == 128
    assert w.sum() == 2 * 255


def test_packing_needs_whole_bytes():
    with pytest.raises(CodeFormatError):
        PackBits(12)
