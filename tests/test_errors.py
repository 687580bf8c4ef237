"""Error handling of fastsoftmax.softmax / softmax_backward.

Every error case also checks that a provided ``out`` array is left exactly as
it was (it is pre-filled with a sentinel and compared bit for bit).
Each test runs for every available backend (``backend`` fixture).
"""

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs
from conftest import assert_softmax_matches_reference, ref_softmax

AxisError = np.exceptions.AxisError

SENTINEL = -123.25  # exactly representable in float16/32/64


def sentinel_like(shape, dtype):
    return np.full(shape, SENTINEL, dtype=dtype)


def assert_untouched(arr, snapshot):
    # Exact, bit-for-bit comparison (NaN-aware is not needed: no NaNs here).
    npt.assert_array_equal(arr, snapshot)
    assert arr.dtype == snapshot.dtype


# ----------------------------------------------------------------------------
# Unsupported input dtypes -> TypeError
# ----------------------------------------------------------------------------

BAD_INPUTS = {
    "complex128": lambda: np.array([[1 + 2j, 3.0, -1j]], dtype=np.complex128),
    "complex64": lambda: np.array([[1 + 2j, 3.0, -1j]], dtype=np.complex64),
    "complex-list": lambda: [[1 + 2j, 3.0, 0.5j]],
    "object-floats": lambda: np.array([[1.0, 2.0, 3.0]], dtype=object),
    "object-mixed": lambda: np.array([[1.0, None, 3.0]], dtype=object),
    "str-array": lambda: np.array([["1", "2", "3"]]),
    "bytes-array": lambda: np.array([[b"1", b"2", b"3"]]),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_unsupported_input_dtype_raises_type_error(backend, kind):
    x = BAD_INPUTS[kind]()
    with pytest.raises(TypeError):
        fs.softmax(x)


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_unsupported_input_dtype_leaves_out_untouched(backend, kind):
    x = BAD_INPUTS[kind]()
    out = sentinel_like((1, 3), np.float64)
    snapshot = out.copy()
    with pytest.raises(TypeError):
        fs.softmax(x, out=out)
    assert_untouched(out, snapshot)


def test_python_string_raises_type_error(backend):
    with pytest.raises(TypeError):
        fs.softmax("abc")


def test_list_of_strings_raises_type_error(backend):
    with pytest.raises(TypeError):
        fs.softmax(["1.0", "2.0"])


@pytest.mark.parametrize("which", ["grad", "y"])
def test_backward_complex_input_raises_type_error(backend, which):
    good = np.full((2, 3), 1.0 / 3.0)
    bad = good.astype(np.complex128)
    out = sentinel_like((2, 3), np.float64)
    snapshot = out.copy()
    args = (bad, good) if which == "grad" else (good, bad)
    with pytest.raises(TypeError):
        fs.softmax_backward(*args, out=out)
    assert_untouched(out, snapshot)


# ----------------------------------------------------------------------------
# Axis validation
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape,axis", [((5,), 1), ((5,), -2), ((3, 4), 2), ((3, 4), -3),
                                        ((2, 3, 4), 3), ((2, 3, 4), -4), ((2, 3, 4), 100)])
def test_axis_out_of_range_raises_axis_error(backend, shape, axis):
    x = np.ones(shape)
    out = sentinel_like(shape, np.float64)
    snapshot = out.copy()
    with pytest.raises(AxisError):
        fs.softmax(x, axis=axis, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize("axis", [2, -3])
def test_backward_axis_out_of_range_raises_axis_error(backend, axis):
    y = np.full((3, 4), 0.25)
    g = np.ones((3, 4))
    out = sentinel_like((3, 4), np.float64)
    snapshot = out.copy()
    with pytest.raises(AxisError):
        fs.softmax_backward(g, y, axis=axis, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize("axis", [1.0, 0.5, "1", "last", [1], b"1"])
def test_non_integer_axis_raises_type_error(backend, axis):
    x = np.ones((3, 4))
    out = sentinel_like((3, 4), np.float64)
    snapshot = out.copy()
    with pytest.raises(TypeError):
        fs.softmax(x, axis=axis, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize("axis", [1.0, "1"])
def test_backward_non_integer_axis_raises_type_error(backend, axis):
    y = np.full((3, 4), 0.25)
    g = np.ones((3, 4))
    with pytest.raises(TypeError):
        fs.softmax_backward(g, y, axis=axis)


# ----------------------------------------------------------------------------
# out= validation
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("out_shape", [(4, 3), (3, 5), (12,), (1, 3, 4), ()])
def test_out_with_wrong_shape_raises_value_error(backend, out_shape):
    x = np.arange(12.0).reshape(3, 4)
    out = sentinel_like(out_shape, np.float64)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax(x, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [(np.float32, np.float64), (np.float64, np.float32), (np.int64, np.float32),
     (np.int32, np.int32), (np.float64, np.int64), (np.float16, np.float32),
     (np.float32, np.float16), (np.bool_, np.bool_), (np.float64, np.complex128)],
)
def test_out_with_wrong_dtype_raises_value_error(backend, in_dtype, out_dtype):
    x = np.arange(12).reshape(3, 4).astype(in_dtype)
    out = np.full((3, 4), 7, dtype=out_dtype)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax(x, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_out_raises_value_error(backend, dtype):
    x = np.arange(12.0).reshape(3, 4).astype(dtype)
    out = sentinel_like((3, 4), dtype)
    out.setflags(write=False)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax(x, out=out)
    assert_untouched(out, snapshot)


def test_read_only_input_used_as_out_raises_value_error(backend):
    x = np.arange(12.0).reshape(3, 4)
    x.setflags(write=False)
    snapshot = x.copy()
    with pytest.raises(ValueError):
        fs.softmax(x, out=x)
    assert_untouched(x, snapshot)


def test_read_only_input_without_out_is_fine(backend):
    x = np.arange(12.0).reshape(3, 4)
    x.setflags(write=False)
    y = fs.softmax(x)
    # Tolerance: 4 ULP float64 vs longdouble reference.
    assert_softmax_matches_reference(y, x, axis=-1)


@pytest.mark.parametrize(
    "make_views",
    [
        pytest.param(lambda b: (b[:-1], b[1:]), id="out-shifted-forward"),
        pytest.param(lambda b: (b[1:], b[:-1]), id="out-shifted-backward"),
        pytest.param(lambda b: (b[::2][:5], b[:5]), id="strided-vs-contiguous"),
        pytest.param(lambda b: (b[:9].reshape(3, 3), b[3:12].reshape(3, 3)),
                     id="2d-rows-shifted"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partially_overlapping_out_raises_value_error(backend, make_views, dtype):
    buf = np.linspace(-3.0, 3.0, 16).astype(dtype)
    x, out = make_views(buf)
    assert np.shares_memory(x, out)
    snapshot = buf.copy()
    with pytest.raises(ValueError):
        fs.softmax(x, out=out)
    # The whole buffer (input and out) is unchanged: exact comparison.
    assert_untouched(buf, snapshot)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partially_overlapping_2d_column_shift_raises_value_error(backend, dtype):
    buf = np.linspace(-3.0, 3.0, 24).astype(dtype).reshape(4, 6)
    x, out = buf[:, :-1], buf[:, 1:]
    snapshot = buf.copy()
    with pytest.raises(ValueError):
        fs.softmax(x, axis=0, out=out)
    assert_untouched(buf, snapshot)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interleaved_non_overlapping_out_in_same_buffer_works(backend, dtype):
    # x and out live in the same buffer but share no element.
    buf = np.linspace(-3.0, 3.0, 40).astype(dtype)
    x, out = buf[::2], buf[1::2]
    assert not np.shares_memory(x, out)
    x_orig = x.copy()
    fs.softmax(x, out=out)
    # Tolerance: 4 ULP (dtype-specific) vs reference of the untouched input.
    assert_softmax_matches_reference(buf[1::2], x_orig, axis=-1)
    # Input elements unchanged: exact comparison.
    npt.assert_array_equal(buf[::2], x_orig)


# ----------------------------------------------------------------------------
# softmax_backward argument validation
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("g_shape,y_shape", [((3, 4), (4, 3)), ((3, 4), (3, 5)),
                                             ((3, 4), (4,)), ((3, 4), (1, 4)),
                                             ((12,), (3, 4)), ((2, 3, 4), (3, 4))])
def test_backward_with_mismatched_shapes_raises_value_error(backend, g_shape, y_shape):
    g = np.ones(g_shape)
    y = np.full(y_shape, 0.25)
    out = sentinel_like(g_shape, np.float64)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax_backward(g, y, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize("out_shape", [(4, 3), (3, 5), (12,)])
def test_backward_out_with_wrong_shape_raises_value_error(backend, out_shape):
    y = ref_softmax(np.arange(12.0).reshape(3, 4))
    g = np.ones((3, 4))
    out = sentinel_like(out_shape, np.float64)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax_backward(g, y, out=out)
    assert_untouched(out, snapshot)


@pytest.mark.parametrize("dtype,out_dtype", [(np.float32, np.float64),
                                             (np.float64, np.float32)])
def test_backward_out_with_wrong_dtype_raises_value_error(backend, dtype, out_dtype):
    y = ref_softmax(np.arange(12.0).reshape(3, 4)).astype(dtype)
    g = np.ones((3, 4), dtype=dtype)
    out = sentinel_like((3, 4), out_dtype)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax_backward(g, y, out=out)
    assert_untouched(out, snapshot)


def test_backward_read_only_out_raises_value_error(backend):
    y = ref_softmax(np.arange(12.0).reshape(3, 4))
    g = np.ones((3, 4))
    out = sentinel_like((3, 4), np.float64)
    out.setflags(write=False)
    snapshot = out.copy()
    with pytest.raises(ValueError):
        fs.softmax_backward(g, y, out=out)
    assert_untouched(out, snapshot)
