"""Error handling of fastsoftmax.softmax / softmax_backward.

Every error case also checks that a provided ``out`` array is left exactly as
it was (it is pre-filled with a sentinel and compared bit for bit).
Each test runs for every available backend (``backend`` fixture).
"""

import warnings

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


# ----------------------------------------------------------------------------
# The compiled module's own buffer checks (fastsoftmax._core, called directly)
# ----------------------------------------------------------------------------
# The public functions hand the kernels aligned, C-contiguous copies; these tests call the
# private module with what a careless caller might pass instead.

_core = pytest.importorskip("fastsoftmax._core")

F16_SENTINEL_BITS = np.float16(SENTINEL).view(np.uint16)


def _filled(shape, dtype):
    """An output buffer pre-filled with the sentinel (its float16 bits for uint16)."""
    if np.dtype(dtype) == np.uint16:
        return np.full(shape, F16_SENTINEL_BITS, np.uint16)
    return sentinel_like(shape, dtype)


def _core_calls(dtype):
    """For each binding: its keyword arguments (valid, aligned) and the names of those it writes."""
    ft = np.dtype(dtype)
    x = np.linspace(-3.0, 3.0, 15).reshape(3, 5).astype(ft)
    y = np.full((3, 5), 0.2, ft)
    h = np.linspace(-3.0, 3.0, 15).reshape(3, 5).astype(np.float16).view(np.uint16)
    target = np.array([0, 4, 2], np.int64)
    stats = dict(m=np.full(3, 3.0, ft), s_hi=np.full(3, 1.5, np.float64), s_lo=np.zeros(3, np.float64))
    ce = dict(target=target, weight=np.ones(5, ft), ignore_index=-100, smoothing=0.1, scale_nll=1.0,
              scale_smooth=1.0, nll=_filled(3, np.float64), smooth=_filled(3, np.float64), grad=_filled((3, 5), ft))
    ce_half = dict(ce, weight=np.ones(5, np.float32), grad=_filled((3, 5), np.uint16))
    return {
        "forward": (dict(x=x, out=_filled((3, 5), ft), axis=1, beta=1.0, log=False), ("out",)),
        "logsumexp": (dict(x=x, out=_filled(3, ft), axis=1, beta=1.0), ("out",)),
        "backward": (dict(grad=x, y=y, out=_filled((3, 5), ft), axis=1, beta=1.0, log=False), ("out",)),
        "partial_stats": (
            dict(x=x, m=_filled(3, ft), s_hi=_filled(3, np.float64), s_lo=_filled(3, np.float64), axis=1),
            ("m", "s_hi", "s_lo"),
        ),
        "normalise": (dict(x=x, out=_filled((3, 5), ft), axis=1, **stats), ("out",)),
        "forward_half": (dict(x=h, out=_filled((3, 5), np.uint16), axis=1, beta=1.0, log=False, bf16=False), ("out",)),
        "forward_half_to_f32": (
            dict(x=h, out=_filled((3, 5), np.float32), axis=1, beta=1.0, log=False, bf16=False), ("out",)
        ),
        "logsumexp_half": (dict(x=h, out=_filled(3, np.float32), axis=1, beta=1.0, bf16=False), ("out",)),
        "cross_entropy": (dict(logits=x, **ce), ("nll", "smooth", "grad")),
        "cross_entropy_probabilities": (dict(logits=x, **dict(ce, target=y, smooth=None)), ("nll", "grad")),
        "cross_entropy_half": (dict(logits=h, bf16=False, **ce_half), ("nll", "smooth", "grad")),
    }


def _binding(name):
    base = {"forward_half_to_f32": "forward_half", "cross_entropy_probabilities": "cross_entropy"}.get(name, name)
    return getattr(_core, base)


def _misaligned_copy(a):
    """``a``'s values in a writeable buffer one byte past an element boundary."""
    b = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    b[...] = a
    assert b.flags.writeable and b.flags.c_contiguous and not b.flags.aligned
    return b


# The 16-bit bindings read float16 bits and compute in float32 whatever `dtype` says: once.
_CORE_CALLS = [(name, dtype) for dtype in (np.float32, np.float64) for name in sorted(_core_calls(dtype))
               if not (dtype == np.float64 and "half" in name)]
_CORE_CASES = [
    (name, arg, dtype)
    for name, dtype in _CORE_CALLS
    for arg, value in _core_calls(dtype)[name][0].items()
    if isinstance(value, np.ndarray)
]


@pytest.mark.parametrize("name,dtype", _CORE_CALLS, ids=[f"{n}-{np.dtype(d).name}" for n, d in _CORE_CALLS])
def test_core_bindings_accept_the_aligned_arguments_used_below(name, dtype):
    kwargs, written = _core_calls(dtype)[name]
    _binding(name)(**kwargs)
    assert all(not np.array_equal(kwargs[w], _filled(kwargs[w].shape, kwargs[w].dtype)) for w in written)


@pytest.mark.parametrize("name,arg,dtype", _CORE_CASES, ids=[f"{n}-{a}-{np.dtype(d).name}" for n, a, d in _CORE_CASES])
def test_core_bindings_reject_a_misaligned_buffer_and_write_nothing(name, arg, dtype):
    kwargs, written = _core_calls(dtype)[name]
    kwargs[arg] = _misaligned_copy(kwargs[arg])
    snapshots = {w: kwargs[w].copy() for w in written}
    itemsize = kwargs[arg].itemsize
    with pytest.raises(ValueError, match=rf"^{arg}: buffer is not aligned to its element size \({itemsize} bytes\)$"):
        _binding(name)(**kwargs)
    for w, snapshot in snapshots.items():
        assert kwargs[w].tobytes() == snapshot.tobytes(), f"{w} was written"


def test_core_bindings_accept_an_empty_buffer_at_any_address():
    # NumPy calls an empty array aligned wherever it points; nothing is read from it.
    x = np.frombuffer(bytearray(1), dtype=np.float32, count=0, offset=1).reshape(0, 4)
    out = np.empty((0, 4), np.float32)
    _core.forward(x, out, 1, 1.0, False)
    _core.logsumexp(x, np.empty(0, np.float32), 1, 1.0)


@pytest.mark.parametrize("arg", ["x", "out"])
def test_core_forward_rejects_a_non_contiguous_buffer(arg):
    kwargs, _ = _core_calls(np.float64)["forward"]
    kwargs[arg] = np.asarray(np.repeat(kwargs[arg], 2, axis=1)[:, ::2])
    snapshot = kwargs["out"].copy()
    with pytest.raises(ValueError, match=f"^{arg} must be C-contiguous"):
        _core.forward(**kwargs)
    assert kwargs["out"].tobytes() == snapshot.tobytes()


@pytest.mark.parametrize("arg,bad", [("m", np.float32), ("s_hi", np.float32), ("s_lo", (4,))])
def test_core_statistics_of_the_wrong_dtype_or_shape_are_named(arg, bad):
    kwargs, _ = _core_calls(np.float64)["partial_stats"]
    a = kwargs[arg]
    kwargs[arg] = _filled(bad, a.dtype) if isinstance(bad, tuple) else a.astype(bad)
    with pytest.raises(ValueError, match=f"^{arg} must have dtype float64 and shape \\(3,\\)"):
        _core.partial_stats(**kwargs)


# ----------------------------------------------------------------------------
# A result beyond a narrower dtype's range is +-inf there, without a warning
# ----------------------------------------------------------------------------
# The inputs are rounded to dtype= (or a float16 result from its float32 computation) as
# NumPy rounds: to +-inf past the largest finite value. That is the correctly rounded value,
# so NumPy's "overflow encountered in cast" must not reach the caller.

F16_BIG = np.array([6e4, -6e4], np.float16)
INF = np.inf

NARROWING_CALLS = {
    "softmax-dtype-f32": (lambda: fs.softmax(np.array([1e300, 0.0]), dtype=np.float32), [1.0, 0.0], np.float32),
    "softmax-dtype-f32-fortran": (
        lambda: fs.softmax(np.asfortranarray([[1e300, 0.0], [0.0, 0.0]]), axis=0, dtype=np.float32),
        [[1.0, 0.5], [0.0, 0.5]], np.float32,
    ),
    "softmax-beta-inf-dtype-f32": (
        lambda: fs.softmax(np.array([1e300, 0.0]), beta=INF, dtype=np.float32), [1.0, 0.0], np.float32
    ),
    "softmin-dtype-f32": (lambda: fs.softmin(np.array([-1e300, 0.0]), dtype=np.float32), [1.0, 0.0], np.float32),
    "log_softmax-dtype-f16": (
        lambda: fs.log_softmax(np.array([1e5, 0.0]), dtype=np.float16), [0.0, -INF], np.float16
    ),
    "log_softmax-f32-dtype-f16": (
        lambda: fs.log_softmax(np.array([1e5, 0.0], np.float32), dtype=np.float16), [0.0, -INF], np.float16
    ),
    "log_softmax-f16": (lambda: fs.log_softmax(F16_BIG), [0.0, -INF], np.float16),
    "log_softmax-f16-out": (lambda: fs.log_softmax(F16_BIG, out=np.empty(2, np.float16)), [0.0, -INF], np.float16),
    "softmax_backward-f16": (
        lambda: fs.softmax_backward(F16_BIG, np.full(2, 0.5, np.float16), beta=4.0), [INF, -INF], np.float16
    ),
    "log_softmax_backward-f16": (
        lambda: fs.log_softmax_backward(F16_BIG, np.full(2, np.log(0.5), np.float16), beta=4.0),
        [INF, -INF], np.float16,
    ),
    "cross_entropy-f16-none": (
        lambda: fs.cross_entropy(F16_BIG[None], [1], reduction="none"), [INF], np.float16
    ),
    "cross_entropy-f16-sum": (lambda: fs.cross_entropy(F16_BIG[None], [1], reduction="sum"), INF, np.float16),
    "cross_entropy-f16-mean-grad": (
        lambda: fs.cross_entropy(F16_BIG[None], [1], return_grad=True)[0], INF, np.float16
    ),
    "cross_entropy-f32-none": (
        lambda: fs.cross_entropy(np.array([[3e38, -3e38]], np.float32), [1], reduction="none"), [INF], np.float32
    ),
    "cross_entropy-f32-weight-f64": (
        lambda: fs.cross_entropy(np.zeros((1, 2), np.float32), [0], weight=[1.0, 1e300]), np.log(2), np.float32
    ),
}


@pytest.mark.parametrize("name", sorted(NARROWING_CALLS))
def test_overflow_to_inf_in_a_narrower_dtype_does_not_warn(backend, name):
    call, expected, dtype = NARROWING_CALLS[name]
    errstate = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = call()
    assert np.geterr() == errstate
    assert np.asarray(result).dtype == dtype
    # Exact but for the finite values computed through exp and log: 2 ULP of the result dtype.
    npt.assert_array_max_ulp(np.asarray(result), np.asarray(expected, dtype), maxulp=2)


def test_a_cast_warning_outside_the_calls_is_not_silenced(backend):
    fs.softmax(np.array([1e300, 0.0]), dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="overflow"):
        np.array([1e300]).astype(np.float32)


@pytest.mark.parametrize("fn_name", ["softmax_backward", "log_softmax_backward"])
def test_backward_with_infinite_grad_raises_no_numpy_warning_on_any_backend(backend, fn_name):
    import warnings

    grad = np.float32([np.inf, 1.0])
    y = np.float32([0.5, 0.5]) if fn_name == "softmax_backward" else np.log(np.float32([0.5, 0.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dx = getattr(fs, fn_name)(grad, y)
    # inf - inf: NaN where the exact result is undefined, as IEEE arithmetic gives it.
    assert np.isnan(dx).any()


def test_log_softmax_backward_with_y_beyond_exp_range_raises_no_numpy_warning(backend):
    import warnings

    grad = np.float64([1.0, 2.0])
    y = np.float64([800.0, 0.0])  # not log-probabilities: e^800 overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dx = fs.log_softmax_backward(grad, y)
    # e^800 * 3 is +inf: the first entry is -inf, the second 2 - 3 = -1 exactly.
    assert dx[0] == -np.inf and dx[1] == -1.0


@pytest.mark.parametrize("ignore_index", [2**63, 2**70, -(2**63) - 1, np.uint64(2**63)])
def test_ignore_index_beyond_int64_raises_value_error_naming_it_on_every_backend(backend, ignore_index):
    # As torch.nn.functional.cross_entropy, which raises for it too (no int64 target equals it).
    with pytest.raises(ValueError, match=rf"ignore_index .* got {int(ignore_index)}$"):
        fs.cross_entropy(np.zeros((4, 5), np.float32), np.array([0, 1, 2, 3]), ignore_index=ignore_index)


@pytest.mark.parametrize("ignore_index", [2**63 - 1, -(2**63)])
def test_ignore_index_at_the_int64_limits_is_accepted_on_every_backend(backend, ignore_index):
    loss = fs.cross_entropy(np.zeros((4, 5)), np.array([0, 1, 2, 3]), ignore_index=ignore_index)
    # Exact to 1 ULP: uniform logits, no target ignored, log(5).
    npt.assert_array_max_ulp(loss, np.log(5.0), maxulp=1)


def test_uint64_target_beyond_int64_is_named_as_given_not_wrapped():
    with pytest.raises(ValueError, match=r"target values .* got 18446744073709551516$"):
        fs.cross_entropy(np.zeros((4, 5), np.float32), np.array([0, 1, 2, 2**64 - 100], np.uint64))
