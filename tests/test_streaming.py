"""Rows of at least 8 MB: their output pass (softmax, log_softmax and both backward passes)
writes with streaming stores, whole vectors from the first one aligned in memory, the partial
ones around them written plainly. Whatever the
output's alignment, every entry must be written, nothing around the output touched, and the
values be those of the float64 reference; on one thread or two alike.
"""

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs
from conftest import ATOL_TINY_F32, TINY_F32, assert_backward_matches_reference, ref_softmax

STREAM_BYTES = 8 << 20  # the kernels' threshold (csrc/softmax_impl.inc, stream_bytes)
SENTINEL = 12345.0  # a value no softmax or log_softmax output of these rows can take


def _row(dtype, rng):
    # Just past the threshold, with a length that is no multiple of a vector, so that the
    # output pass ends on a partial vector whatever the start.
    n = STREAM_BYTES // np.dtype(dtype).itemsize + 37
    return rng.normal(0, 3, size=(1, n)).astype(dtype)


def _into_offset(fn, x, offset, **kw):
    """fn(x, out=...) into a view `offset` entries into a larger buffer of sentinels; returns
    the view and the buffer."""
    buf = np.full(x.size + offset + 64, SENTINEL, dtype=x.dtype)
    out = buf[offset : offset + x.size].reshape(x.shape)
    fn(x, axis=-1, out=out, **kw)
    return out, buf


def _reference(name, x):
    """softmax or log_softmax of x in np.longdouble (64-bit mantissa on x86), as float64."""
    if name == "softmax":
        return ref_softmax(x, -1, np.longdouble).astype(np.float64)
    xl = x.astype(np.longdouble)
    m = xl.max(axis=-1, keepdims=True)
    return (xl - m - np.log(np.exp(xl - m).sum(axis=-1, keepdims=True))).astype(np.float64)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_streamed_rows_match_the_reference_at_any_alignment(backend, name, dtype, offset, rng):
    x = _row(dtype, rng)
    fn = getattr(fs, name)
    out, buf = _into_offset(fn, x, offset)
    # Nothing before or after the output was written.
    assert (buf[:offset] == SENTINEL).all()
    assert (buf[offset + x.size :] == SENTINEL).all()
    ref = _reference(name, x)
    if name == "softmax":
        big = ref > (TINY_F32 if dtype == np.float32 else 1e-300)
        # Tolerance: 4 ULP of the output's type against the reference rounded to it (float64
        # for float32 rows, longdouble for float64 ones), absolute 1e-37 below the threshold.
        expected = ref.astype(dtype)
        npt.assert_array_max_ulp(out[big], expected[big], maxulp=4)
        npt.assert_allclose(out[~big], expected[~big], rtol=0, atol=ATOL_TINY_F32)
    else:
        # Tolerance: 4 ULP of each output or 4 ULP of 1 (the output near 0), whichever is larger.
        eps = np.finfo(dtype).eps
        err = np.abs(out.astype(np.float64) - ref)
        assert (err <= 4 * eps * np.maximum(np.abs(ref), 1.0)).all(), float((err / np.maximum(np.abs(ref), 1.0)).max())
    # The same values as into a fresh (aligned) array, bitwise.
    npt.assert_array_equal(out, fn(x, axis=-1))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_streamed_rows_are_bitwise_the_same_on_one_and_two_threads(backend, name, rng):
    x = _row(np.float32, rng)
    fn = getattr(fs, name)
    one, _ = _into_offset(fn, x, 1, threads=1)
    two, _ = _into_offset(fn, x, 1, threads=2)
    npt.assert_array_equal(one, two)


def test_long_rows_with_a_selection_leave_the_unselected_at_zero(backend, rng):
    # (Written plainly: streaming is for rows without a selection.)
    x = _row(np.float32, rng)
    where = np.zeros(x.shape, bool)
    where[:, 5::3] = True
    out, buf = _into_offset(fs.softmax, x, 2, where=where)
    assert (buf[:2] == SENTINEL).all() and (buf[2 + x.size :] == SENTINEL).all()
    # Unselected entries are exactly 0; the selected ones are the softmax of those alone
    # (tolerance 4 ULP against the float64 reference rounded to float32, as above).
    assert (out[~where] == 0).all()
    sel = x[where].reshape(1, -1)
    ref = ref_softmax(sel, -1, np.float64)
    big = ref > TINY_F32
    npt.assert_array_max_ulp(out[where].reshape(1, -1)[big], ref.astype(np.float32)[big], maxulp=4)


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1])
def test_streamed_backward_rows_match_the_reference(backend, name, dtype, offset, rng):
    x = _row(dtype, rng)
    grad = rng.normal(0, 1, size=x.shape).astype(dtype)
    y = fs.softmax(x) if name == "softmax_backward" else fs.log_softmax(x)
    buf = np.full(x.size + offset + 64, SENTINEL, dtype=dtype)
    out = buf[offset : offset + x.size].reshape(x.shape)
    getattr(fs, name)(grad, y, axis=-1, out=out)
    assert (buf[:offset] == SENTINEL).all() and (buf[offset + x.size :] == SENTINEL).all()
    if name == "softmax_backward":
        # The forward-error bound of conftest (n + 4 units of the type times y (|g| + sum |g| y)).
        assert_backward_matches_reference(out, grad, y)
    else:
        # dx = g - exp(y) sum(g), in longdouble; tolerance: 4 units of the type times
        # |g| + exp(y) sum(|g|) (the terms' sizes), plus a tiny absolute slack.
        gl, yl = grad.astype(np.longdouble), y.astype(np.longdouble)
        ref = gl - np.exp(yl) * gl.sum(axis=-1, keepdims=True)
        scale = np.abs(gl) + np.exp(yl) * np.abs(gl).sum(axis=-1, keepdims=True)
        err = np.abs(out.astype(np.longdouble) - ref)
        eps = np.finfo(dtype).eps
        assert (err <= 4 * eps * scale + 16 * np.finfo(dtype).smallest_normal).all(), float((err / scale).max())
    npt.assert_array_equal(out, getattr(fs, name)(grad, y, axis=-1))
