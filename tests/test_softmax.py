"""Numerical correctness of fastsoftmax.softmax and softmax_backward.

Every test that takes the ``backend`` fixture runs once for each backend in
``fs._api.available_backends()``, forced with ``fs._api.use_backend``.
Expected values come from independent NumPy references (see conftest.py).
"""

import math

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from conftest import (
    WORKED_EXAMPLE_X,
    WORKED_EXAMPLE_Y,
    assert_backward_matches_reference,
    assert_softmax_matches_reference,
    ref_softmax,
    ref_softmax_ld,
)

FLOAT_DTYPES = [np.float32, np.float64]

# Every SIMD tail size for 128/256/512-bit vectors of float32 and float64.
ROW_LENGTHS_WITH_TAILS = list(range(1, 71))

# A representative subset used where iterating over all 70 lengths would be
# wasteful (special values, float16).
TAIL_SAMPLE = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 70]

HYPOTHESIS_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,  # no example database written into the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# ----------------------------------------------------------------------------
# Worked example and basic shapes
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_worked_example_matches_published_values(backend, dtype):
    y = fs.softmax(np.array(WORKED_EXAMPLE_X, dtype=dtype))
    assert y.shape == (7,)
    assert y.dtype == dtype
    # Tolerance: rtol 1e-6 (the published values have 7 significant digits).
    npt.assert_allclose(y, WORKED_EXAMPLE_Y, rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", ROW_LENGTHS_WITH_TAILS)
def test_every_row_length_1_to_70_matches_reference(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(3, n)).astype(dtype)
    x_before = x.copy()
    y = fs.softmax(x)
    # Tolerance: float32 4 ULP / float64 4 ULP (see assert_softmax_matches_reference).
    assert_softmax_matches_reference(y, x, axis=-1)
    # The input must not be modified: exact comparison.
    npt.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", ROW_LENGTHS_WITH_TAILS)
def test_misaligned_contiguous_rows_of_every_length_match_reference(backend, dtype, n, rng):
    # Start the data one element past an allocation boundary so that the
    # rows are contiguous but not vector-aligned.
    buf = rng.normal(0, 3, size=2 * n + 1).astype(dtype)
    x = buf[1:].reshape(2, n)
    y = fs.softmax(x)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1000, 32000])
def test_long_rows_match_reference(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(2, n)).astype(dtype)
    y = fs.softmax(x)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_single_row_of_2_pow_20_matches_reference(backend, dtype, rng):
    x = rng.normal(0, 3, size=2**20).astype(dtype)
    y = fs.softmax(x)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_2d_input_matches_reference_along_each_axis(backend, dtype, axis, rng):
    x = rng.normal(0, 3, size=(7, 45)).astype(dtype)
    y = fs.softmax(x, axis=axis)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_3d_input_matches_reference_along_each_axis(backend, dtype, axis, rng):
    x = rng.normal(0, 3, size=(5, 37, 19)).astype(dtype)
    y = fs.softmax(x, axis=axis)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=axis)


def test_default_axis_is_last_axis(backend, rng):
    x = rng.normal(0, 3, size=(4, 6, 9))
    y = fs.softmax(x)
    # Tolerance: 4 ULP float64, reference along axis -1.
    assert_softmax_matches_reference(y, x, axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,axis", [((37, 19), 0), ((37, 19), 1), ((37, 19), -1),
                                        ((5, 37, 19), 0), ((5, 37, 19), 1),
                                        ((5, 37, 19), 2)])
def test_fortran_ordered_input_matches_reference(backend, dtype, shape, axis, rng):
    x = np.asfortranarray(rng.normal(0, 3, size=shape).astype(dtype))
    assert x.flags.f_contiguous and not x.flags.c_contiguous
    y = fs.softmax(x, axis=axis)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_strided_view_matches_reference(backend, dtype, axis, rng):
    base = rng.normal(0, 3, size=(9, 71)).astype(dtype)
    x = base[:, ::2]
    base_before = base.copy()
    y = fs.softmax(x, axis=axis)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=axis)
    # Input buffer unchanged: exact comparison.
    npt.assert_array_equal(base, base_before)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_negative_stride_view_matches_reference(backend, dtype, axis, rng):
    base = rng.normal(0, 3, size=(11, 70)).astype(dtype)
    x = base[::-1, ::-3]
    y = fs.softmax(x, axis=axis)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_3d_mixed_stride_view_matches_reference(backend, dtype, axis, rng):
    base = rng.normal(0, 3, size=(6, 20, 50)).astype(dtype)
    x = base[::2, ::-1, 1::3]
    y = fs.softmax(x, axis=axis)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(y, x, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", TAIL_SAMPLE + [1000])
def test_wide_dynamic_range_underflows_gracefully(backend, dtype, n, rng):
    # Large spread so that many outputs underflow to tiny/subnormal/zero:
    # exercises the masked (absolute-tolerance) part of the comparison.
    scale = 40.0 if dtype == np.float32 else 300.0
    x = rng.normal(0, scale, size=(4, n)).astype(dtype)
    y = fs.softmax(x)
    # Tolerance: 4 ULP where ref > 1e-30 (f32) / 1e-300 (f64); absolute
    # 1e-37 (f32) / 2e-307 (f64) below that.
    assert_softmax_matches_reference(y, x, axis=-1)


# ----------------------------------------------------------------------------
# out= and in-place
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 7, 16, 33, 70, 1000])
def test_in_place_out_equals_input_gives_reference(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(3, n)).astype(dtype)
    x_orig = x.copy()
    res = fs.softmax(x, out=x)
    # Tolerance: 4 ULP (dtype-specific) vs the reference of the original data.
    assert_softmax_matches_reference(x, x_orig, axis=-1)
    # The returned array holds the same values as out: exact comparison.
    npt.assert_array_equal(res, x)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
def test_in_place_on_fortran_input_gives_reference(backend, dtype, axis, rng):
    x = np.asfortranarray(rng.normal(0, 3, size=(23, 17)).astype(dtype))
    x_orig = x.copy()
    fs.softmax(x, axis=axis, out=x)
    # Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(x, x_orig, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
def test_in_place_on_strided_view_changes_only_the_view(backend, dtype, axis, rng):
    base = rng.normal(0, 3, size=(8, 41)).astype(dtype)
    base_orig = base.copy()
    x = base[:, ::2]
    x_orig = x.copy()
    fs.softmax(x, axis=axis, out=x)
    # Tolerance: 4 ULP (dtype-specific) on the view.
    assert_softmax_matches_reference(base[:, ::2], x_orig, axis=axis)
    # Elements outside the view are untouched: exact comparison.
    npt.assert_array_equal(base[:, 1::2], base_orig[:, 1::2])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_in_place_with_separately_created_identical_view(backend, dtype, rng):
    # a[0] creates a new view object each time: same memory, same layout.
    a = rng.normal(0, 3, size=(2, 37)).astype(dtype)
    a_orig = a.copy()
    fs.softmax(a[0], out=a[0])
    # Tolerance: 4 ULP (dtype-specific) on the row processed in place.
    assert_softmax_matches_reference(a[0], a_orig[0])
    # The other row is untouched: exact comparison.
    npt.assert_array_equal(a[1], a_orig[1])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_out_array_receives_result(backend, dtype, rng):
    x = rng.normal(0, 3, size=(5, 29)).astype(dtype)
    out = np.full_like(x, -7.0)
    res = fs.softmax(x, axis=0, out=out)
    # Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(out, x, axis=0)
    # The returned array holds the same values as out: exact comparison.
    npt.assert_array_equal(res, out)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_strided_out_array_receives_result_and_gaps_are_untouched(backend, dtype, rng):
    x = rng.normal(0, 3, size=(4, 19)).astype(dtype)
    buf = np.full((4, 38), -7.0, dtype=dtype)
    out = buf[:, ::2]
    fs.softmax(x, out=out)
    # Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(buf[:, ::2], x, axis=-1)
    # Gaps in the out buffer keep the sentinel: exact comparison.
    npt.assert_array_equal(buf[:, 1::2], np.full((4, 19), -7.0, dtype=dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("in_order,out_order", [("C", "F"), ("F", "C")])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_out_with_other_memory_order_than_input_receives_result(backend, dtype, in_order,
                                                               out_order, axis, rng):
    x = np.array(rng.normal(0, 3, size=(4, 9, 21)).astype(dtype), order=in_order)
    out = np.full(x.shape, -7.0, dtype=dtype, order=out_order)
    fs.softmax(x, axis=axis, out=out)
    # Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(out, x, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_in_place_on_3d_fortran_input_gives_reference(backend, dtype, axis, rng):
    x = np.asfortranarray(rng.normal(0, 3, size=(6, 11, 17)).astype(dtype))
    x_orig = x.copy()
    fs.softmax(x, axis=axis, out=x)
    # Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(x, x_orig, axis=axis)


def test_in_place_float16_gives_float16_within_1_ulp(backend, rng):
    x = rng.normal(0, 3, size=(5, 33)).astype(np.float16)
    x_orig = x.copy()
    fs.softmax(x, out=x)
    # Tolerance: 1 ULP (float16) vs float16(float64 reference).
    assert_softmax_matches_reference(x, x_orig, axis=-1)


# ----------------------------------------------------------------------------
# dtype handling and array-likes
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_input_promotes_to_float64_and_matches_reference(backend, dtype, rng):
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -20), min(info.max, 20)
    x = rng.integers(lo, hi, size=(4, 33), endpoint=True).astype(dtype)
    y = fs.softmax(x)
    assert y.dtype == np.float64
    # Tolerance: 4 ULP float64 vs longdouble reference.
    assert_softmax_matches_reference(y, x, axis=-1)


def test_bool_input_promotes_to_float64_and_matches_reference(backend, rng):
    x = rng.random(size=(5, 21)) < 0.4
    y = fs.softmax(x, axis=0)
    assert y.dtype == np.float64
    # Tolerance: 4 ULP float64 vs longdouble reference.
    assert_softmax_matches_reference(y, x, axis=0)


@pytest.mark.parametrize("n", TAIL_SAMPLE + [1000])
def test_float16_returns_float16_within_1_ulp(backend, n, rng):
    x = rng.normal(0, 3, size=(3, n)).astype(np.float16)
    y = fs.softmax(x)
    assert y.dtype == np.float16
    # Tolerance: 1 ULP (float16) vs float16(float64 reference).
    assert_softmax_matches_reference(y, x, axis=-1)


@pytest.mark.parametrize("axis", [0, 1])
def test_float16_along_each_axis_within_1_ulp(backend, axis, rng):
    x = rng.normal(0, 3, size=(13, 22)).astype(np.float16)
    y = fs.softmax(x, axis=axis)
    assert y.dtype == np.float16
    # Tolerance: 1 ULP (float16) vs float16(float64 reference).
    assert_softmax_matches_reference(y, x, axis=axis)


def test_python_float_scalar_gives_0d_array_of_one(backend):
    y = fs.softmax(3.0)
    assert isinstance(y, np.ndarray)
    assert y.shape == ()
    assert y.dtype == np.float64
    # Exact: softmax of a single element is exactly 1.
    assert y == 1.0


def test_python_int_scalar_gives_0d_float64_one(backend):
    y = fs.softmax(5)
    assert isinstance(y, np.ndarray)
    assert y.shape == ()
    assert y.dtype == np.float64
    # Exact: softmax of a single element is exactly 1.
    assert y == 1.0


def test_numpy_float32_scalar_gives_0d_float32_one(backend):
    y = fs.softmax(np.float32(-2.5))
    assert isinstance(y, np.ndarray)
    assert y.shape == ()
    assert y.dtype == np.float32
    # Exact: softmax of a single element is exactly 1.
    assert y == 1.0


def test_worked_example_as_python_list(backend):
    y = fs.softmax(WORKED_EXAMPLE_X)
    assert isinstance(y, np.ndarray)
    assert y.shape == (7,)
    assert y.dtype == np.float64
    # Tolerance: rtol 1e-6 (published values have 7 significant digits).
    npt.assert_allclose(y, WORKED_EXAMPLE_Y, rtol=1e-6)


def test_nested_list_keeps_shape_and_matches_reference(backend):
    x = [[0.5, -1.0, 2.0], [3.0, 3.0, -4.25]]
    y = fs.softmax(x, axis=0)
    assert y.shape == (2, 3)
    # Tolerance: 4 ULP float64 vs longdouble reference.
    assert_softmax_matches_reference(y, np.array(x), axis=0)


def test_tuple_of_ints_promotes_to_float64(backend):
    x = (1, 2, 3, 4, 1, 2, 3)
    y = fs.softmax(x)
    assert y.dtype == np.float64
    # Tolerance: rtol 1e-6 vs published values, and 4 ULP vs reference.
    npt.assert_allclose(y, WORKED_EXAMPLE_Y, rtol=1e-6)
    assert_softmax_matches_reference(y, np.array(x), axis=-1)


def test_numpy_integer_axis_is_accepted(backend, rng):
    x = rng.normal(0, 3, size=(6, 10))
    y = fs.softmax(x, axis=np.int64(0))
    # Tolerance: 4 ULP float64 vs longdouble reference.
    assert_softmax_matches_reference(y, x, axis=0)


# ----------------------------------------------------------------------------
# Empty inputs
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,axis",
    [((0,), -1), ((0,), 0), ((0, 5), -1), ((0, 5), 0), ((5, 0), -1), ((5, 0), 0),
     ((3, 0, 4), 1), ((3, 0, 4), 2), ((3, 0, 4), 0)],
)
@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [(np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float16),
     (np.int32, np.float64), (np.bool_, np.float64)],
)
def test_empty_input_gives_empty_output_of_same_shape(backend, shape, axis, in_dtype,
                                                       out_dtype):
    x = np.zeros(shape, dtype=in_dtype)
    y = fs.softmax(x, axis=axis)
    assert isinstance(y, np.ndarray)
    # Exact: shape and dtype are fully determined.
    assert y.shape == shape
    assert y.dtype == out_dtype
    assert y.size == 0


def test_empty_list_gives_empty_float64_array(backend):
    y = fs.softmax([])
    assert y.shape == (0,)
    assert y.dtype == np.float64


# ----------------------------------------------------------------------------
# Special values
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", TAIL_SAMPLE)
def test_nan_poisons_only_its_own_row(backend, dtype, n, rng):
    for pos in sorted({0, n // 2, n - 1}):
        x = rng.normal(0, 3, size=(4, n)).astype(dtype)
        x[1, pos] = np.nan
        y = fs.softmax(x)
        # Exact: the whole NaN-containing row is NaN.
        assert np.isnan(y[1]).all(), (n, pos, y[1])
        # Other rows unaffected. Tolerance: 4 ULP (dtype-specific).
        keep = [0, 2, 3]
        assert_softmax_matches_reference(y[keep], x[keep], axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 5, 17, 70])
def test_nan_poisons_only_its_own_column_along_axis_0(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(n, 3)).astype(dtype)
    x[n - 1, 1] = np.nan
    y = fs.softmax(x, axis=0)
    # Exact: the NaN-containing column is entirely NaN.
    assert np.isnan(y[:, 1]).all()
    # Other columns unaffected. Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(y[:, [0, 2]], x[:, [0, 2]], axis=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 2, 5, 8, 17, 70])
def test_row_of_all_negative_infinity_is_nan(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(3, n)).astype(dtype)
    x[2] = -np.inf
    y = fs.softmax(x)
    # Exact: the all -inf row is NaN.
    assert np.isnan(y[2]).all()
    # Other rows unaffected. Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(y[:2], x[:2], axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [2, 5, 9, 17, 33, 70])
def test_negative_infinity_entries_get_zero_weight(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(2, n)).astype(dtype)
    x[:, ::3] = -np.inf
    x[:, 1] = 0.0  # guarantee at least one finite entry per row
    y = fs.softmax(x)
    # Exact: -inf entries get exactly 0.
    assert (y[:, ::3] == 0).all()
    # Tolerance: 4 ULP (dtype-specific) vs reference (which handles -inf
    # correctly as long as the row has a finite entry).
    assert_softmax_matches_reference(y, x, axis=-1)


def test_huge_finite_values_do_not_overflow_float64_list(backend):
    y = fs.softmax([1e38, 0, -1e38])
    # Exact, as specified.
    npt.assert_array_equal(y, [1.0, 0.0, 0.0])


def test_huge_finite_values_do_not_overflow_float32(backend):
    y = fs.softmax(np.array([1e38, 0, -1e38], dtype=np.float32))
    assert y.dtype == np.float32
    # Exact, as specified.
    npt.assert_array_equal(y, np.array([1.0, 0.0, 0.0], dtype=np.float32))


def test_two_equal_near_max_float32_values_give_exact_halves(backend):
    y = fs.softmax(np.array([3.4e38, 3.4e38], dtype=np.float32))
    # Exact, as specified.
    npt.assert_array_equal(y, np.array([0.5, 0.5], dtype=np.float32))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_opposite_extreme_finite_values_give_one_and_zero(backend, dtype):
    big = np.finfo(dtype).max
    # x - max overflows to -inf for the second entry, whose weight is 0.
    y = fs.softmax(np.array([big, -big], dtype=dtype))
    # Exact.
    npt.assert_array_equal(y, np.array([1.0, 0.0], dtype=dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 3, 8, 16, 17, 70])
def test_rows_of_max_finite_value_are_uniform(backend, dtype, n):
    x = np.full((2, n), np.finfo(dtype).max, dtype=dtype)
    y = fs.softmax(x)
    # Tolerance: 4 ULP (dtype-specific) vs reference (uniform 1/n).
    assert_softmax_matches_reference(y, x, axis=-1)


def test_positive_infinity_example_gives_exact_halves(backend):
    y = fs.softmax([np.inf, 1.0, np.inf])
    # Exact, as specified.
    npt.assert_array_equal(y, [0.5, 0.0, 0.5])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", TAIL_SAMPLE)
def test_positive_infinity_entries_share_mass_equally(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(3, n)).astype(dtype)
    inf_pos = sorted({0, n // 3, n - 1})
    x[1, inf_pos] = np.inf
    y = fs.softmax(x)
    k = len(inf_pos)
    expected = np.zeros(n, dtype=dtype)
    expected[inf_pos] = dtype(1.0) / dtype(k)
    # Exact zeros away from the +inf entries.
    mask = np.ones(n, dtype=bool)
    mask[inf_pos] = False
    npt.assert_array_equal(y[1][mask], expected[mask])
    # Tolerance: 4 ULP on the 1/k entries (exact for k = 1, 2).
    npt.assert_array_max_ulp(y[1][inf_pos], expected[inf_pos], maxulp=4)
    # Other rows unaffected. Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(y[[0, 2]], x[[0, 2]], axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_positive_and_negative_infinity_give_one_and_zero(backend, dtype):
    y = fs.softmax(np.array([-np.inf, np.inf, 0.0], dtype=dtype))
    # Exact.
    npt.assert_array_equal(y, np.array([0.0, 1.0, 0.0], dtype=dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [2, 5, 16, 17, 70])
def test_positive_infinity_with_nan_gives_nan_row(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(2, n)).astype(dtype)
    x[0, 0] = np.inf
    x[0, n - 1] = np.nan
    y = fs.softmax(x)
    # Exact: whole row NaN.
    assert np.isnan(y[0]).all()
    # Other row unaffected. Tolerance: 4 ULP (dtype-specific).
    assert_softmax_matches_reference(y[1:], x[1:], axis=-1)


# ----------------------------------------------------------------------------
# Properties (hypothesis)
# ----------------------------------------------------------------------------


@HYPOTHESIS_SETTINGS
@given(x=hnp.arrays(np.float64, st.integers(1, 200),
                    elements=st.floats(-100, 100, allow_nan=False)))
def test_float64_rows_sum_to_one(backend, x):
    y = fs.softmax(x)
    eps = np.finfo(np.float64).eps
    # Tolerance: each output is within 4 ULP (<= 4 eps relative) of the true
    # value and the true values sum to 1, so |sum - 1| <= 4 eps (+ rounding
    # of the reference); we allow 8 eps.  Summed exactly with math.fsum.
    assert abs(math.fsum(y.tolist()) - 1.0) <= 8 * eps


@HYPOTHESIS_SETTINGS
@given(x=hnp.arrays(np.float32, st.integers(1, 200),
                    elements=st.floats(-60, 60, allow_nan=False, width=32)))
def test_float32_rows_sum_to_one(backend, x):
    y = fs.softmax(x)
    assert y.dtype == np.float32
    eps = float(np.finfo(np.float32).eps)
    # Tolerance: same argument as for float64 with float32 eps: 8 eps.
    assert abs(math.fsum(y.astype(np.float64).tolist()) - 1.0) <= 8 * eps


@HYPOTHESIS_SETTINGS
@given(
    k=hnp.arrays(np.int64, st.tuples(st.integers(1, 5), st.integers(1, 80)),
                 elements=st.integers(-2**16, 2**16)),
    c=st.integers(-50, 50),
)
def test_translation_invariance_float64(backend, k, c):
    # x has at most 17 significant bits and |x + c| < 2**7, so x + c is exact.
    x = k.astype(np.float64) / 1024.0
    xc = x + c
    npt.assert_array_equal(xc - c, x)  # sanity: the shift is exact
    # Tolerance: rtol 1e-12 (and no absolute slack).
    npt.assert_allclose(fs.softmax(xc), fs.softmax(x), rtol=1e-12, atol=0)


@HYPOTHESIS_SETTINGS
@given(t=st.floats(-600, 600, allow_nan=False))
def test_two_element_softmax_is_logistic_sigmoid(backend, t):
    y = fs.softmax(np.array([0.0, t]))
    tl = np.longdouble(t)
    sig = np.longdouble(1) / (np.longdouble(1) + np.exp(-tl))
    # Tolerance: 2 ULP (float64) vs the sigmoid computed in longdouble.
    npt.assert_array_max_ulp(y[1:2], np.array([sig]).astype(np.float64), maxulp=2)


# ----------------------------------------------------------------------------
# softmax_backward
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", list(range(1, 10)) + [16, 17, 33])
def test_backward_equals_explicit_jacobian_product(backend, n, rng):
    x = rng.normal(0, 3, size=n)
    s = ref_softmax(x)  # independent forward
    dy = rng.normal(0, 1, size=n)
    sl = s.astype(np.longdouble)
    jac = np.diag(sl) - np.outer(sl, sl)
    expected = (jac @ dy.astype(np.longdouble)).astype(np.float64)
    got = fs.softmax_backward(dy, s)
    assert got.dtype == np.float64
    assert got.shape == (n,)
    # Tolerance: rtol 1e-12, atol 1e-15.
    npt.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 17])
def test_backward_matches_central_finite_differences_1d(backend, n, rng):
    x = rng.normal(0, 1, size=n)
    dy = rng.normal(0, 1, size=n)
    dyl = dy.astype(np.longdouble)
    h = 1e-6

    def f(v):  # independent forward, in longdouble to keep FD noise small
        return (ref_softmax_ld(v) * dyl).sum()

    xl = x.astype(np.longdouble)
    fd = np.empty(n)
    for i in range(n):
        xp, xm = xl.copy(), xl.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = float((f(xp) - f(xm)) / (xp[i] - xm[i]))
    got = fs.softmax_backward(dy, fs.softmax(x))
    # Tolerance: rtol 1e-6 (O(h^2) truncation) plus atol 1e-10 for
    # components near zero (FD round-off ~ eps_ld * |f| / h ~ 1e-13).
    npt.assert_allclose(got, fd, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("axis", [0, 1])
def test_backward_matches_central_finite_differences_2d(backend, axis, rng):
    x = rng.normal(0, 1, size=(4, 6))
    dy = rng.normal(0, 1, size=(4, 6))
    dyl = dy.astype(np.longdouble)
    h = 1e-6

    def f(v):
        return (ref_softmax_ld(v, axis=axis) * dyl).sum()

    xl = x.astype(np.longdouble)
    fd = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        xp, xm = xl.copy(), xl.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = float((f(xp) - f(xm)) / (xp[idx] - xm[idx]))
    got = fs.softmax_backward(dy, fs.softmax(x, axis=axis), axis=axis)
    # Tolerance: rtol 1e-6 plus atol 1e-10 (see the 1-D test).
    npt.assert_allclose(got, fd, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,axis", [((6, 11), 0), ((6, 11), 1), ((6, 11), -1),
                                        ((5, 37, 19), 0), ((5, 37, 19), 1),
                                        ((5, 37, 19), 2), ((5, 37, 19), -1)])
def test_backward_matches_reference_along_each_axis(backend, dtype, shape, axis, rng):
    x = rng.normal(0, 3, size=shape)
    y = ref_softmax(x, axis).astype(dtype)
    g = rng.normal(0, 1, size=shape).astype(dtype)
    got = fs.softmax_backward(g, y, axis=axis)
    # Tolerance: (n + 4) * eps(dtype) * y * (|g| + sum|g| y) (see helper).
    assert_backward_matches_reference(got, g, y, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", ROW_LENGTHS_WITH_TAILS[::3] + [70, 1000])
def test_backward_row_lengths_with_tails_match_reference(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(3, n))
    y = ref_softmax(x).astype(dtype)
    g = rng.normal(0, 1, size=(3, n)).astype(dtype)
    got = fs.softmax_backward(g, y)
    # Tolerance: (n + 4) * eps(dtype) * y * (|g| + sum|g| y) (see helper).
    assert_backward_matches_reference(got, g, y, axis=-1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
def test_backward_on_strided_and_fortran_inputs_matches_reference(backend, dtype, axis,
                                                                    rng):
    x = rng.normal(0, 3, size=(9, 40))
    y = np.asfortranarray(ref_softmax(x[::-1, ::2], axis).astype(dtype))
    gbase = rng.normal(0, 1, size=(9, 80)).astype(dtype)
    g = gbase[:, ::4]
    assert g.shape == y.shape
    got = fs.softmax_backward(g, y, axis=axis)
    # Tolerance: (n + 4) * eps(dtype) * y * (|g| + sum|g| y) (see helper).
    assert_backward_matches_reference(got, g, y, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, -1])
def test_backward_in_place_into_grad_matches_reference(backend, dtype, axis, rng):
    x = rng.normal(0, 3, size=(7, 23))
    y = ref_softmax(x, axis).astype(dtype)
    g = rng.normal(0, 1, size=(7, 23)).astype(dtype)
    g_orig = g.copy()
    y_orig = y.copy()
    res = fs.softmax_backward(g, y, axis=axis, out=g)
    # Tolerance: (n + 4) * eps(dtype) * y * (|g| + sum|g| y) (see helper).
    assert_backward_matches_reference(g, g_orig, y_orig, axis=axis)
    # Returned values equal out, and y is not modified: exact comparisons.
    npt.assert_array_equal(res, g)
    npt.assert_array_equal(y, y_orig)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
def test_backward_in_place_into_fortran_grad_matches_reference(backend, dtype, axis, rng):
    x = rng.normal(0, 3, size=(12, 19))
    y = np.asfortranarray(ref_softmax(x, axis).astype(dtype))
    g = np.asfortranarray(rng.normal(0, 1, size=(12, 19)).astype(dtype))
    g_orig = g.copy()
    fs.softmax_backward(g, y, axis=axis, out=g)
    # Tolerance: (n + 4) * eps(dtype) * y * (|g| + sum|g| y) (see helper).
    assert_backward_matches_reference(g, g_orig, y, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_backward_out_array_receives_result(backend, dtype, rng):
    x = rng.normal(0, 3, size=(4, 15))
    y = ref_softmax(x).astype(dtype)
    g = rng.normal(0, 1, size=(4, 15)).astype(dtype)
    out = np.full_like(g, -7.0)
    fs.softmax_backward(g, y, out=out)
    # Tolerance: (n + 4) * eps(dtype) * y * (|g| + sum|g| y) (see helper).
    assert_backward_matches_reference(out, g, y, axis=-1)


def test_backward_of_uniform_gradient_is_zero(backend, rng):
    # sum(y) == 1 so a constant upstream gradient has zero input gradient.
    x = rng.normal(0, 3, size=(3, 25))
    y = ref_softmax(x)
    g = np.full_like(y, 2.5)
    got = fs.softmax_backward(g, y)
    # Tolerance: atol 1e-14 (= |g| * |1 - sum(y)| plus rounding, both ~1e-15).
    npt.assert_allclose(got, np.zeros_like(got), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,axis", [((0,), -1), ((0, 4), 0), ((0, 4), 1),
                                        ((4, 0), 1), ((2, 0, 3), 1)])
def test_backward_of_empty_input_is_empty(backend, dtype, shape, axis):
    g = np.zeros(shape, dtype=dtype)
    y = np.zeros(shape, dtype=dtype)
    got = fs.softmax_backward(g, y, axis=axis)
    # Exact: shape and dtype are fully determined.
    assert got.shape == shape
    assert got.dtype == dtype
    assert got.size == 0


# ----------------------------------------------------------------------------
# Softmax over a non-last axis whose slice fits in cache (exponentials stored between passes)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape,axis", [((64, 100, 49), 1), ((5, 33, 17), 1), ((40, 3), 0), ((2, 1000, 31), 1)])
def test_non_last_axis_in_cache_matches_reference(backend, dtype, shape, axis, rng):
    x = rng.normal(0, 3, size=shape).astype(dtype)
    # Tolerance: 4 ULP (dtype-specific, see helper).
    assert_softmax_matches_reference(fs.softmax(x, axis=axis), x, axis=axis)
    y = x.copy()
    fs.softmax(y, axis=axis, out=y)  # in place: each entry read before it is written
    assert_softmax_matches_reference(y, x, axis=axis)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_non_last_axis_special_columns_match_the_numpy_backend(backend, dtype, rng):
    x = rng.normal(0, 2, size=(3, 20, 9))
    x[1, :, 0] = -np.inf           # only -inf: NaN
    x[1, 4, 1] = np.nan            # NaN in a column: NaN
    x[2, :, 2] = 3e4 + np.arange(20)  # beyond the direct reduction
    x[0, ::2, 3] = -np.inf         # some -inf: 0 there
    x = x.astype(dtype)
    with fs._api.use_backend("numpy"):
        want = fs.softmax(x, axis=1)
    got = fs.softmax(x, axis=1)
    # Tolerance: 4 ULP relative plus the smallest normal number absolute; NaN where NumPy has it.
    npt.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny, equal_nan=True)
    npt.assert_array_equal(np.isnan(got), np.isnan(want))
    x[0, 3, 5] = np.inf  # a +inf column: the slice takes the column path, nothing half-written
    with fs._api.use_backend("numpy"):
        want = fs.softmax(x, axis=1)
    got = fs.softmax(x, axis=1)
    npt.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny, equal_nan=True)
    npt.assert_array_equal(np.isnan(got), np.isnan(want))


def test_non_last_axis_in_cache_bitwise_identical_on_one_and_two_threads(backend, rng):
    x = rng.normal(0, 3, size=(64, 1000, 49)).astype(np.float32)
    # Exact: each slice is computed whole by one thread.
    npt.assert_array_equal(fs.softmax(x, axis=1, threads=1), fs.softmax(x, axis=1, threads=2))
