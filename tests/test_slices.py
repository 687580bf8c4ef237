"""Softmax and its backward passes over a non-last axis whose lines are not a whole number of
vectors (the inner size not a multiple of the lanes): the kernels take a slice as one run of
vectors, each vector holding several columns. Row counts, inner sizes (below, at and past a vector, and
periods of several vectors), special columns, in place and threads, on every backend.

References: float64 NumPy for float32 inputs, np.longdouble for float64 inputs; special
columns against the NumPy backend.
"""

import numpy as np
import numpy.testing as npt
import pytest
from conftest import assert_backward_matches_reference

import fastsoftmax as fs
from fastsoftmax import _api

INNER = [2, 3, 7, 15, 17, 24, 49, 100, 65]  # 65: a period of 65 vectors, past the run's tables


def _ref(x, axis):
    z = x.astype(np.longdouble if x.dtype == np.float64 else np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _max_ulp(actual, ref, dtype):
    normal = ref > np.finfo(dtype).tiny
    err = np.abs(actual.astype(ref.dtype) - ref) / np.spacing(np.abs(ref.astype(dtype))).astype(ref.dtype)
    return err[normal].max(), normal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("n", [1, 5, 1000])
def test_softmax_over_the_middle_axis_within_2_ulp(backend, dtype, inner, n, rng):
    x = (rng.normal(0, 3, size=(3, n, inner)) + rng.normal(0, 20, size=(1, 1, inner))).astype(dtype)
    y = fs.softmax(x, axis=1)
    ref = _ref(x, 1)
    worst, normal = _max_ulp(y, ref, dtype)
    # Tolerance: 2 ULP of the dtype over outputs in the normal range (the accuracy target);
    # below it, the smallest normal number absolutely.
    assert worst <= 2.0
    npt.assert_allclose(y[~normal], ref[~normal].astype(dtype), rtol=0, atol=np.finfo(dtype).tiny)


SPECIAL_COLUMNS = {
    "nan": lambda n: np.where(np.arange(n) == n // 2, np.nan, 0.5),
    "only_minus_inf": lambda n: np.full(n, -np.inf),
    "some_minus_inf": lambda n: np.where(np.arange(n) % 3 == 0, -np.inf, np.arange(n, dtype=float)),
    "plus_inf": lambda n: np.where(np.arange(n) == 1, np.inf, 0.0),
    "huge": lambda n: 3e4 + np.arange(n, dtype=float),  # beyond the direct reduction
    "huge_negative": lambda n: -3e4 - np.arange(n, dtype=float),
    "wide_range": lambda n: np.linspace(-200, 80, n),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", [7, 49])
@pytest.mark.parametrize("special", sorted(SPECIAL_COLUMNS))
def test_special_columns_match_the_numpy_backend(backend, dtype, inner, special, rng):
    x = rng.normal(0, 2, size=(2, 40, inner))
    for col in (0, inner // 2, inner - 1):  # first, middle and last column of each line
        x[1, :, col] = SPECIAL_COLUMNS[special](40)
    x = x.astype(dtype)
    with _api.use_backend("numpy"):
        want = fs.softmax(x, axis=1)
    got = fs.softmax(x, axis=1)
    # Tolerance: 4 ULP relative plus the smallest normal number absolutely; NaN where NaN.
    npt.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny, equal_nan=True)
    npt.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("inner", [7, 49])
def test_in_place_over_the_middle_axis(backend, inner, rng):
    x = rng.normal(0, 3, size=(4, 300, inner)).astype(np.float32)
    ref = _ref(x, 1)
    fs.softmax(x, axis=1, out=x)
    # Tolerance: 2 ULP (as above).
    assert _max_ulp(x, ref, np.float32)[0] <= 2.0


@pytest.mark.parametrize("inner", [7, 49])
def test_middle_axis_bitwise_identical_on_one_and_two_threads(backend, inner, rng):
    x = rng.normal(0, 3, size=(64, 1000, inner)).astype(np.float32)
    # Exact: each slice is taken whole by one thread.
    npt.assert_array_equal(fs.softmax(x, axis=1, threads=1), fs.softmax(x, axis=1, threads=2))


# ---------------------------------------------------------------------------------------
# Backward passes over the middle axis (the same runs of vectors)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("n", [1, 5, 300])
def test_softmax_backward_over_the_middle_axis_matches_reference(backend, dtype, inner, n, rng):
    x = rng.normal(0, 3, size=(3, n, inner))
    y = fs.softmax(x.astype(dtype), axis=1)
    g = rng.normal(0, 1, size=x.shape).astype(dtype)
    # Tolerance: the forward-error bound of conftest ((n + 4) eps times the terms' magnitude).
    assert_backward_matches_reference(fs.softmax_backward(g, y, axis=1), g, y, axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", [7, 49])
def test_log_softmax_backward_over_the_middle_axis_matches_longdouble(backend, dtype, inner, rng):
    x = rng.normal(0, 3, size=(2, 200, inner))
    ly = fs.log_softmax(x.astype(dtype), axis=1)
    g = rng.normal(0, 1, size=x.shape).astype(dtype)
    gl, lyl = g.astype(np.longdouble), ly.astype(np.longdouble)
    ref = gl - np.exp(lyl) * gl.sum(axis=1, keepdims=True)
    got = fs.log_softmax_backward(g, ly, axis=1)
    # Tolerance: (n + 4) eps times |g| + e^y sum |g| (a forward-error bound of the sum and the
    # product), as for softmax_backward.
    bound = (200 + 4) * np.finfo(dtype).eps * (np.abs(gl) + np.exp(lyl) * np.abs(gl).sum(axis=1, keepdims=True))
    assert (np.abs(got.astype(np.longdouble) - ref) <= bound).all()


@pytest.mark.parametrize("inner", [7, 49])
def test_backward_over_the_middle_axis_bitwise_identical_on_one_and_two_threads(backend, inner, rng):
    y = fs.softmax(rng.normal(0, 3, size=(64, 500, inner)).astype(np.float32), axis=1)
    g = rng.normal(0, 1, size=y.shape).astype(np.float32)
    # Exact: each slice is taken whole by one thread.
    npt.assert_array_equal(fs.softmax_backward(g, y, axis=1, threads=1), fs.softmax_backward(g, y, axis=1, threads=2))


@pytest.mark.parametrize("beta", [0.0, -0.7, 3.0])
def test_beta_over_the_middle_axis(backend, beta, rng):
    x = rng.normal(0, 2, size=(3, 200, 49)).astype(np.float32)
    z = np.float32(beta) * x  # beta * x is rounded in the dtype, as documented
    # Tolerance: 2 ULP (as above).
    assert _max_ulp(fs.softmax(x, axis=1, beta=beta), _ref(z, 1), np.float32)[0] <= 2.0


# ---------------------------------------------------------------------------------------
# log_softmax and logsumexp over the middle axis (the same runs of vectors for the column
# statistics), and softmax of slices past the in-cache size (statistics, then the output)


def _lse_ref(x, axis):
    z = x.astype(np.longdouble)
    m = z.max(axis=axis, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("n", [1, 5, 1000])
def test_log_softmax_and_logsumexp_over_the_middle_axis(backend, dtype, inner, n, rng):
    x = (rng.normal(0, 3, size=(3, n, inner)) + rng.normal(0, 20, size=(1, 1, inner))).astype(dtype)
    lse = _lse_ref(x, 1)
    ly = fs.log_softmax(x, axis=1)
    ref = x.astype(np.longdouble) - lse
    floor = 1e-7 if dtype == np.float32 else 1e-15
    # Tolerance: max(2 ULP of the output, 1e-7 (float32) / 1e-15 (float64)) absolutely.
    bound = np.maximum(2 * np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble), floor)
    assert (np.abs(ly.astype(np.longdouble) - ref) <= bound).all()
    got = fs.logsumexp(x, axis=1)
    # Tolerance: 2 ULP of the result.
    npt.assert_array_max_ulp(got, lse[:, 0, :].astype(dtype), maxulp=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("inner", [7, 49])
@pytest.mark.parametrize("special", sorted(SPECIAL_COLUMNS))
def test_special_columns_of_log_softmax_and_logsumexp_match_the_numpy_backend(backend, dtype, inner, special, rng):
    x = rng.normal(0, 2, size=(2, 40, inner))
    for col in (0, inner // 2, inner - 1):
        x[1, :, col] = SPECIAL_COLUMNS[special](40)
    x = x.astype(dtype)
    with _api.use_backend("numpy"):
        want_log, want_lse = fs.log_softmax(x, axis=1), fs.logsumexp(x, axis=1)
    got_log, got_lse = fs.log_softmax(x, axis=1), fs.logsumexp(x, axis=1)
    # Tolerance: 4 ULP relative plus 1e-7 (float32) / 1e-15 (float64) absolutely; specials
    # (NaN, +-inf) where the NumPy backend has them.
    atol = 1e-7 if dtype == np.float32 else 1e-15
    for got, want in ((got_log, want_log), (got_lse, want_lse)):
        npt.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=atol, equal_nan=True)
        npt.assert_array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("inner", [7, 49])
def test_log_softmax_middle_axis_bitwise_identical_on_one_and_two_threads(backend, inner, rng):
    x = rng.normal(0, 3, size=(64, 500, inner)).astype(np.float32)
    # Exact: each slice is taken whole by one thread.
    npt.assert_array_equal(fs.log_softmax(x, axis=1, threads=1), fs.log_softmax(x, axis=1, threads=2))
    npt.assert_array_equal(fs.logsumexp(x, axis=1, threads=1), fs.logsumexp(x, axis=1, threads=2))


@pytest.mark.parametrize("inner", [7, 49])
def test_softmax_of_slices_past_the_cache_over_the_middle_axis(backend, inner, rng):
    # 6000 x 49 float32 entries: 1.2 MB a slice, past the stored path's size.
    x = (rng.normal(0, 3, size=(2, 6000, inner)) + rng.normal(0, 20, size=(1, 1, inner))).astype(np.float32)
    x[1, 7, 3] = np.nan
    y = fs.softmax(x, axis=1)
    ref = _ref(x, 1)
    worst, normal = _max_ulp(y[0], ref[0], np.float32)
    # Tolerance: 2 ULP (as above); the column holding NaN is NaN throughout, the others of
    # that slice still within 2 ULP.
    assert worst <= 2.0
    assert np.isnan(y[1, :, 3]).all()
    others = np.delete(np.arange(inner), 3)
    assert _max_ulp(y[1][:, others], ref[1][:, others], np.float32)[0] <= 2.0


@pytest.mark.parametrize("beta", [0.0, -0.7, 3.0])
def test_log_softmax_beta_over_the_middle_axis(backend, beta, rng):
    x = rng.normal(0, 2, size=(3, 200, 49)).astype(np.float32)
    z = np.float32(beta) * x  # beta * x is rounded in the dtype, as documented
    ref = z.astype(np.longdouble) - _lse_ref(z, 1)
    # Tolerance: max(2 ULP, 1e-7) absolutely (as above).
    bound = np.maximum(2 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.longdouble), 1e-7)
    assert (np.abs(fs.log_softmax(x, axis=1, beta=beta).astype(np.longdouble) - ref) <= bound).all()
