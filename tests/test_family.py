"""The softmax family beyond plain softmax: log_softmax, logsumexp, softmin, beta,
where= selections, special values, dtype=, accuracy, backward passes and errors (#3).

Tests taking the ``backend`` fixture (tests/conftest.py) run once per entry of
``fs._api.available_backends()``, forced with ``fs._api.use_backend``.  Every expected
value comes from an independent reference written here: float64 or np.longdouble NumPy
(with np.where masking for selections), exact values, or finite differences.
"""

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs

from conftest import OneStepDeclining, rows_with_s_near_1

FLOATS = [np.float32, np.float64]
SIMD = ("avx2", "avx512")

def _softmax_maxulp(backend):
    """The issue's accuracy bound: 2 ULP on every ISA; the NumPy path is held to 4."""
    return 4 if backend == "numpy" else 2


# ----------------------------------------------------------------------------
# Independent references (masked entries read as -inf, as np.where gives them)
# ----------------------------------------------------------------------------


def _wide_for(dtype):
    return np.float64 if np.dtype(dtype).itemsize <= 4 else np.longdouble


def ref_lse(x, axis=-1, where=None, wide=np.longdouble, keepdims=False):
    z = np.asarray(x).astype(wide)
    if where is not None:
        z = np.where(np.broadcast_to(where, z.shape), z, -np.inf)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(z, axis=axis, keepdims=True, initial=-np.inf)
        mf = np.where(np.isfinite(m), m, 0)
        # m + log1p(ties - 1 + sum over z < m of e^(z - m)): tiny terms are not lost to 1 + t.
        ties = (z == m).sum(axis=axis, keepdims=True)
        rest = np.where(z < m, np.exp(z - mf), 0).sum(axis=axis, keepdims=True)
        out = np.where(np.isfinite(m), mf + np.log1p((ties - 1) + rest), m)
        out = np.where(np.isnan(z).any(axis=axis, keepdims=True), np.nan, out)
    return out if keepdims else np.squeeze(out, axis=axis)


def ref_softmax(x, axis=-1, where=None, wide=np.longdouble):
    """Softmax in `wide`; outside `where`, and on rows with nothing selected, 0."""
    z = np.asarray(x).astype(wide)
    w = None if where is None else np.broadcast_to(where, z.shape)
    if w is not None:
        z = np.where(w, z, -np.inf)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        m = np.max(z, axis=axis, keepdims=True, initial=-np.inf)
        e = np.exp(z - m)
        y = e / e.sum(axis=axis, keepdims=True)
    if w is not None:
        y = np.where(w & w.any(axis=axis, keepdims=True), y, 0)
    return y


def ref_log_softmax(x, axis=-1, where=None, wide=np.longdouble):
    """x - logsumexp(x) in `wide`; outside `where`, and on empty rows, -inf."""
    z = np.asarray(x).astype(wide)
    w = None if where is None else np.broadcast_to(where, z.shape)
    with np.errstate(invalid="ignore"):
        y = z - ref_lse(z, axis, w, wide, keepdims=True)
    if w is not None:
        y = np.where(w & w.any(axis=axis, keepdims=True), y, -np.inf)
    return y


def ref_softmax_jvp(grad, y, axis, beta=1.0, where=None):
    """dx = J^T grad with the explicit Jacobian J = beta (diag(y) - y y^T), longdouble."""
    g = np.moveaxis(np.asarray(grad).astype(np.longdouble), axis, -1)
    p = np.moveaxis(np.asarray(y).astype(np.longdouble), axis, -1)
    if where is not None:
        w = np.moveaxis(np.broadcast_to(where, np.shape(grad)), axis, -1)
        g, p = np.where(w, g, 0), np.where(w, p, 0)
    n = g.shape[-1]
    eye = np.eye(n, dtype=np.longdouble)
    jac = beta * (p[..., :, None] * eye - p[..., :, None] * p[..., None, :])  # J[i, j] = dy_i/dx_j
    dx = np.einsum("...i,...ij->...j", g, jac)
    return np.moveaxis(dx, -1, axis)


def ref_log_softmax_jvp(grad, logy, axis, beta=1.0, where=None):
    """dx = J^T grad with J = beta (I - 1 p^T), p = exp(logy), in longdouble."""
    g = np.moveaxis(np.asarray(grad).astype(np.longdouble), axis, -1)
    p = np.exp(np.moveaxis(np.asarray(logy).astype(np.longdouble), axis, -1))
    if where is not None:
        w = np.moveaxis(np.broadcast_to(where, np.shape(grad)), axis, -1)
        g, p = np.where(w, g, 0), np.where(w, p, 0)
    n = g.shape[-1]
    eye = np.eye(n, dtype=np.longdouble)
    jac = beta * (eye - np.ones((n, 1), np.longdouble) * p[..., None, :])  # J[i, j] = d logy_i / dx_j
    dx = np.einsum("...i,...ij->...j", g, jac)
    return np.moveaxis(dx, -1, axis)


# ----------------------------------------------------------------------------
# Comparison helpers (the tolerance is an argument, stated at each call site)
# ----------------------------------------------------------------------------


def ulp_errors(actual, ref, dtype):
    """|actual - ref| in units of the spacing of `dtype` at |ref| (fractional ULPs)."""
    ref = np.asarray(ref).astype(np.longdouble)
    sp = np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble)
    return np.abs(np.asarray(actual).astype(np.longdouble) - ref) / sp


def assert_same_specials(actual, ref, zeros=True):
    """Where the reference is NaN, +-inf (or, with `zeros`, exactly 0) the result must be
    identical."""
    actual = np.asarray(actual)
    ref = np.asarray(ref)
    special = ~np.isfinite(ref) | ((ref == 0) if zeros else False)
    a, r = actual[special], ref[special].astype(actual.dtype)
    assert np.array_equal(np.isnan(a), np.isnan(r)), "NaN positions differ"
    ok = np.isnan(r) | (a == r)
    assert ok.all(), f"{int((~ok).sum())} special value(s) differ: got {a[~ok][:5]}, want {r[~ok][:5]}"


def assert_probs_within_ulp(actual, ref, maxulp):
    """Finite outputs with ref in the normal range within `maxulp` ULP of the reference;
    below it (where results may be subnormal or flushed) absolute error <= tiny."""
    actual = np.asarray(actual)
    dtype = actual.dtype
    tiny = np.finfo(dtype).tiny
    ref = np.asarray(ref)
    assert actual.shape == ref.shape
    assert_same_specials(actual, ref)
    fin = np.isfinite(ref) & (ref != 0)
    big = fin & (np.abs(ref) > tiny)
    err = ulp_errors(actual[big], ref[big], dtype)
    assert err.size == 0 or err.max() <= maxulp, f"max error {float(err.max()):.3f} ULP > {maxulp}"
    small = fin & ~big
    npt.assert_allclose(actual[small].astype(np.longdouble), ref[small], rtol=0, atol=tiny)


def assert_log_within(actual, ref, maxulp, floor):
    """Finite outputs: |actual - ref| <= max(maxulp * ulp(ref), floor); specials identical."""
    actual = np.asarray(actual)
    ref = np.asarray(ref)
    assert actual.shape == ref.shape
    assert_same_specials(actual, ref, zeros=False)
    fin = np.isfinite(ref)
    sp = np.spacing(np.abs(ref[fin]).astype(actual.dtype)).astype(np.longdouble)
    err = np.abs(actual[fin].astype(np.longdouble) - ref[fin].astype(np.longdouble))
    bound = np.maximum(maxulp * sp, floor)
    bad = err > bound
    assert not bad.any(), f"{int(bad.sum())} entries exceed the bound; max err/bound {float((err / bound).max()):.3f}"


def assert_backward_close(actual, ref, scale, n, dtype):
    """|actual - ref| <= (n + 4) * eps * scale + 16 * tiny, scale the sum of |terms|."""
    eps = np.finfo(dtype).eps
    tiny = np.finfo(dtype).tiny
    bound = (n + 4) * eps * np.asarray(scale, np.longdouble) + 16 * tiny
    err = np.abs(np.asarray(actual).astype(np.longdouble) - ref)
    bad = ~(err <= bound)
    assert not bad.any(), f"{int(bad.sum())} entries exceed the bound; max err/bound {float((err / bound).max()):.3f}"


# ----------------------------------------------------------------------------
# log_softmax: x - logsumexp(x), never log(softmax(x))
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_log_softmax_of_1000_and_1_is_exactly_0_and_minus_999(backend, dtype):
    y = fs.log_softmax(np.array([1000.0, 1.0], dtype))
    assert y.dtype == dtype
    # Exact: 1000 - (1000 + log1p(e^-999)) rounds to 0 and 1 - 1000 = -999 exactly.
    npt.assert_array_equal(y, np.array([0.0, -999.0], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_log_softmax_keeps_log_probabilities_whose_softmax_underflows(backend, dtype):
    # exp(-2000) and exp(-800.5) underflow to 0 in both dtypes, so log(softmax(x)) would
    # give -inf; x - logsumexp(x) gives the exact values (lse ~ 1e-348 rounds away).
    x = np.array([0.0, -2000.0, -800.5], dtype)
    y = fs.log_softmax(x)
    ref = ref_log_softmax(x).astype(dtype)  # longdouble x - lse, rounded once
    # Exact comparison: the correctly rounded values are 0 (or -0), -2000, -800.5.
    npt.assert_array_equal(y, ref)
    npt.assert_array_equal(y, np.array([0.0, -2000.0, -800.5], dtype))


# ----------------------------------------------------------------------------
# logsumexp
# ----------------------------------------------------------------------------


def test_logsumexp_of_0_and_minus_40_is_log1p_exact_in_float64(backend):
    # log(1 + e^-40) = e^-40 - e^-80/2 + ...; the float64 nearest is 4.248354255291589e-18.
    # A log(sum) form would round 1 + e^-40 to 1 and return 0.
    ref = float(np.log1p(np.exp(np.longdouble(-40.0))))
    assert ref == 4.248354255291589e-18
    got = fs.logsumexp(np.array([0.0, -40.0]))
    assert got.dtype == np.float64
    # Exact (full precision).
    assert float(got) == 4.248354255291589e-18


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_is_minus_inf_for_empty_axis_and_all_minus_inf_rows(backend, dtype):
    empty = fs.logsumexp(np.zeros((3, 0), dtype))
    # Exact: the sum over an empty set is 0, its log -inf.
    npt.assert_array_equal(empty, np.full(3, -np.inf, dtype))
    assert empty.dtype == dtype
    x = np.array([[-np.inf] * 5, [-np.inf, 0.0, -np.inf, -np.inf, -np.inf]], dtype)
    # Exact: row 0 has sum 0 -> -inf; row 1 is log(e^0) = 0.
    npt.assert_array_equal(fs.logsumexp(x), np.array([-np.inf, 0.0], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_matches_longdouble_reference_along_axes_with_keepdims(backend, dtype, axis, keepdims, rng):
    x = rng.normal(0, 3, size=(7, 19, 33)).astype(dtype)
    got = fs.logsumexp(x, axis=axis, keepdims=keepdims)
    ref = ref_lse(x, axis=axis, wide=_wide_for(dtype), keepdims=keepdims)
    assert got.shape == ref.shape == np.sum(x, axis=axis, keepdims=keepdims).shape
    assert got.dtype == dtype
    # Tolerance: 2 ULP of the result, and at least 2 ULP of the row maximum (the result is
    # max + log1p(...); the values here are of order 10, so this is a relative 1e-15/1e-6 check).
    mx = np.max(np.abs(x), axis=axis, keepdims=keepdims).astype(np.longdouble)
    floor = 2 * np.spacing(mx.astype(dtype)).astype(np.longdouble)
    err = np.abs(got.astype(np.longdouble) - ref)
    bound = np.maximum(2 * np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble), floor)
    assert (err <= bound).all(), float((err / bound).max())


@pytest.mark.parametrize("dtype", FLOATS)
def test_logsumexp_of_large_equal_values_adds_log_k_without_overflow(backend, dtype):
    x = np.full((2, 40), 80.0, dtype)  # e^80 overflows float32
    x[1] = 1000.0
    got = fs.logsumexp(x)
    ref = (x[:, 0].astype(np.longdouble) + np.log(np.longdouble(40))).astype(dtype)
    # Tolerance: 1 ULP of the correctly rounded max + log(40).
    npt.assert_array_max_ulp(got, ref, maxulp=1)


# ----------------------------------------------------------------------------
# beta, softmin
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("beta", [0.5, -2.0, 0.7, -1.3, 1e3])
@pytest.mark.parametrize("fn_name", ["softmax", "log_softmax", "logsumexp"])
def test_beta_gives_bitwise_the_result_of_the_prescaled_input(backend, dtype, beta, fn_name, rng, request):
    fn = getattr(fs, fn_name)
    x = rng.normal(0, 3, size=(16, 37)).astype(dtype)
    bx = x * dtype(beta)  # beta * x rounded in the input dtype
    # Exact: the issue defines fn(x, beta=b) as fn(b * x) with b * x rounded in the dtype.
    npt.assert_array_equal(fn(x, beta=beta), fn(bx))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [1, 5, 16, 37, 1000])
def test_beta_zero_gives_the_uniform_distribution(backend, dtype, n, rng):
    x = rng.normal(0, 30, size=(3, n)).astype(dtype)
    y = fs.softmax(x, beta=0.0)
    # Tolerance: 1 ULP of the correctly rounded 1/n.
    npt.assert_array_max_ulp(y, np.full_like(y, dtype(1) / dtype(n)), maxulp=1)
    ly = fs.log_softmax(x, beta=0.0)
    # Tolerance: 1 ULP of -log(n) (exactly 0 for n = 1).
    npt.assert_array_max_ulp(ly, np.full_like(ly, -np.log(np.longdouble(n)).astype(dtype)), maxulp=1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_beta_plus_inf_gives_argmax_one_hot_with_ties_split(backend, dtype):
    x = np.array([[1, 3, 3, 2], [5, 0, 0, 0], [-1, -1, -1, -1]], dtype)
    y = fs.softmax(x, beta=np.inf)
    # Exact: the limit beta -> inf puts 1/k on each of the k maxima.
    npt.assert_array_equal(y, np.array([[0, 0.5, 0.5, 0], [1, 0, 0, 0], [0.25] * 4], dtype))
    ly = fs.log_softmax(x, beta=np.inf)
    ref = np.array([[-np.inf, -np.log(2), -np.log(2), -np.inf], [0, -np.inf, -np.inf, -np.inf], [-np.log(4)] * 4])
    # Tolerance: 1 ULP for log(1/k); the -inf entries and the 0 are exact.
    npt.assert_array_max_ulp(ly, ref.astype(dtype), maxulp=1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_beta_minus_inf_gives_argmin_one_hot_with_ties_split(backend, dtype):
    x = np.array([[1, 3, 1, 2], [5, 0, 7, 9]], dtype)
    y = fs.softmax(x, beta=-np.inf)
    # Exact: 1/k on each of the k minima.
    npt.assert_array_equal(y, np.array([[0.5, 0, 0.5, 0], [0, 1, 0, 0]], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_negative_beta_and_softmin_are_softmax_of_minus_x(backend, dtype, rng):
    x = rng.normal(0, 3, size=(9, 41)).astype(dtype)
    # Exact: negating is exact, so softmax(x, beta=-1) is softmax(-x) bit for bit.
    npt.assert_array_equal(fs.softmin(x), fs.softmax(-x))
    npt.assert_array_equal(fs.softmax(x, beta=-1.0), fs.softmax(-x))
    # And against the independent reference: 2 ULP (4 on the numpy path).
    assert_probs_within_ulp(fs.softmin(x), ref_softmax(-x, wide=_wide_for(dtype)), _softmax_maxulp(backend))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(64, 7), (64, 37), (8, 1000)])
def test_huge_beta_on_normal_data_gives_argmax_one_hot_never_nan(backend, dtype, shape, rng, request):
    x = rng.normal(0, 1, size=shape).astype(dtype)
    beta = 3e9
    z = x * dtype(beta)  # rounded in the dtype: gaps between entries are ~1e8 or more
    ref = ref_softmax(z, wide=_wide_for(dtype))  # exactly one-hot here
    y = fs.softmax(x, beta=beta)
    assert not np.isnan(y).any()
    # Exact: the reference is 1 at the arg max and exp(-1e8)=0 elsewhere.
    npt.assert_array_equal(y, ref.astype(dtype))
    npt.assert_array_equal(y.sum(axis=-1), np.ones(shape[0], dtype))
    # log_softmax: z - max(z) (the other terms vanish); 2 ULP of |z - max|.
    assert_log_within(fs.log_softmax(x, beta=beta), ref_log_softmax(z, wide=_wide_for(dtype)), 2, 0)
    # logsumexp: the maximum itself, 1 ULP.
    npt.assert_array_max_ulp(fs.logsumexp(x, beta=beta), z.max(axis=-1), maxulp=1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_beta_times_huge_values_overflowing_to_inf_gives_limit_not_nan(backend, dtype, rng):
    big = np.finfo(dtype).max / 4  # 8.5e37 in float32 (spec: 1e38), 4.5e307 in float64
    x = rng.normal(0, 1, size=(4, 37)).astype(dtype)
    x[0, 3] = big
    x[0, 30] = -big
    x[1, [2, 20]] = big  # two +inf products: 1/2 each
    x[2, :] = -big  # all products -inf and nothing else... except one normal entry
    x[2, 11] = 0.5
    x[3, 5] = -big
    with np.errstate(over="ignore"):
        z = x * dtype(10.0)
    assert np.isinf(z[0, 3]) and np.isinf(z[0, 30])
    expected = np.zeros_like(x)
    expected[0, 3] = 1
    expected[1, [2, 20]] = 0.5
    expected[2, 11] = 1
    expected[3] = ref_softmax(z[3], wide=_wide_for(dtype)).astype(dtype)
    y = fs.softmax(x, beta=10.0)
    assert not np.isnan(y).any()
    # Rows 0-2 exact (limits); row 3 (one -inf product among normal values): 2 ULP (4 numpy).
    npt.assert_array_equal(y[:3], expected[:3])
    assert_probs_within_ulp(y[3], expected[3].astype(np.longdouble), _softmax_maxulp(backend))
    # Rows sum to 1: tolerance 64 eps (37 terms, each within a few ULP).
    npt.assert_allclose(y.sum(axis=-1), 1, rtol=0, atol=64 * np.finfo(dtype).eps)


# ----------------------------------------------------------------------------
# +inf, -inf and NaN
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [4, 37, 5000])
@pytest.mark.parametrize("k", [1, 3])
def test_plus_inf_entries_share_the_mass_as_the_limit(backend, dtype, n, k, rng):
    x = rng.normal(0, 3, size=(2, n)).astype(dtype)
    pos = rng.choice(n, size=k, replace=False)
    x[:, pos] = np.inf
    x[1, rng.choice(np.setdiff1d(np.arange(n), pos))] = -np.inf  # an -inf alongside does not matter
    inf_mask = np.isposinf(x)
    want = np.where(inf_mask, dtype(1) / dtype(k), dtype(0))
    # Exact: 1/k (correctly rounded) on the +inf entries, 0 elsewhere.
    npt.assert_array_equal(fs.softmax(x), want)
    want_log = np.where(inf_mask, -np.log(np.longdouble(k)), -np.inf).astype(dtype)
    # Tolerance: 1 ULP for log(1/k); -inf elsewhere is exact.
    npt.assert_array_max_ulp(fs.log_softmax(x), want_log, maxulp=1)
    # Exact: logsumexp is +inf.
    npt.assert_array_equal(fs.logsumexp(x), np.full(2, np.inf, dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [3, 37, 5000])
def test_nan_anywhere_in_a_row_gives_nan_for_the_whole_row(backend, dtype, n, rng):
    x = rng.normal(0, 3, size=(4, n)).astype(dtype)
    x[0, n // 2] = np.nan
    x[1, 0] = np.nan
    x[1, -1] = np.inf  # NaN wins over +inf
    x[2, -1] = np.nan
    y = fs.softmax(x)
    ly = fs.log_softmax(x)
    lse = fs.logsumexp(x)
    # Exact: rows 0-2 are NaN throughout; row 3 is untouched by them (2/4 ULP vs reference).
    assert np.isnan(y[:3]).all() and np.isnan(ly[:3]).all() and np.isnan(lse[:3]).all()
    assert_probs_within_ulp(y[3], ref_softmax(x[3], wide=_wide_for(dtype)), _softmax_maxulp(backend))
    assert not np.isnan(ly[3]).any() and not np.isnan(lse[3])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [3, 37])
def test_row_of_all_minus_inf_without_mask_gives_nan(backend, dtype, n):
    x = np.full((2, n), -np.inf, dtype)
    x[1, 0] = 0.0
    y = fs.softmax(x)
    ly = fs.log_softmax(x)
    # Exact: 0/0 in the limit is undefined -> NaN; row 1 is one-hot / (0, -inf, ...).
    assert np.isnan(y[0]).all() and np.isnan(ly[0]).all()
    npt.assert_array_equal(y[1], np.eye(n, dtype=dtype)[0])
    npt.assert_array_equal(ly[1], np.where(np.arange(n) == 0, 0, -np.inf).astype(dtype))


# ----------------------------------------------------------------------------
# where=
# ----------------------------------------------------------------------------


def _causal_case(rng, dtype, k=0, shape=(2, 3, 17, 17)):
    x = rng.normal(0, 3, size=shape).astype(dtype)
    mask = np.tril(np.ones(shape[-2:], bool), k=k)
    return x, mask


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("k", [0, -1])
def test_causal_mask_forward_matches_masked_reference(backend, dtype, axis, k, rng):
    # k = -1 leaves the first row (axis -1) or the last column (axis -2) with nothing selected.
    x, mask = _causal_case(rng, dtype, k)
    if axis in (0, 1):
        # Along the batch/head axes: a mask broadcast from (2, 1, 17, 17) / (1, 3, 1, 17).
        mask = rng.random((2, 1, 17, 17)) < 0.5 if axis == 0 else rng.random((1, 3, 1, 17)) < 0.4
        mask[..., 0] = False  # some slices select nothing along the axis
    x_masked_nan = x.copy()
    wfull = np.broadcast_to(mask, x.shape)
    x_masked_nan[~wfull] = np.nan  # NaN in masked-out positions must not matter
    wide = _wide_for(dtype)
    tol = _softmax_maxulp(backend)
    for xin in (x, x_masked_nan):
        y = fs.softmax(xin, axis=axis, where=mask)
        assert y.dtype == dtype and y.shape == x.shape
        # Tolerance: 2 ULP (4 numpy) where selected; exactly 0 outside and on empty rows.
        assert_probs_within_ulp(y, ref_softmax(x, axis, mask, wide), tol)
        ly = fs.log_softmax(xin, axis=axis, where=mask)
        # Tolerance: max(2 ULP, 1e-7 (f32) / 1e-15 (f64)); exactly -inf outside/empty rows.
        floor = 1e-7 if dtype == np.float32 else 1e-15
        assert_log_within(ly, ref_log_softmax(x, axis, mask, wide), tol, floor)
        lse = fs.logsumexp(xin, axis=axis, where=mask)
        ref = ref_lse(x, axis, mask, wide)
        # Tolerance: max(2 ULP, 2 ULP of the row max ~ 1e-6/1e-15); exactly -inf for empty rows.
        assert_log_within(lse, ref, 2, floor * 10)
        assert not np.isnan(y).any() and not np.isnan(ly).any() and not np.isnan(lse).any()


@pytest.mark.parametrize("dtype", FLOATS)
def test_row_with_nothing_selected_gives_0_minus_inf_and_zero_gradients(backend, dtype, rng):
    x = rng.normal(0, 3, size=(3, 37)).astype(dtype)
    x[1] = -np.inf  # also -inf values: masked away they must not give NaN
    where = np.ones_like(x, bool)
    where[0] = False
    where[1] = False
    where[2, 5:] = False
    y = fs.softmax(x, where=where)
    ly = fs.log_softmax(x, where=where)
    lse = fs.logsumexp(x, where=where)
    # Exact: empty rows are 0 / -inf / -inf.
    npt.assert_array_equal(y[:2], 0)
    npt.assert_array_equal(ly[:2], -np.inf)
    npt.assert_array_equal(lse[:2], -np.inf)
    g = rng.normal(size=x.shape).astype(dtype)
    dx = fs.softmax_backward(g, y, where=where)
    dlx = fs.log_softmax_backward(g, ly, where=where)
    # Exact: no NaN, zero gradient on the empty rows and outside the selection.
    assert not np.isnan(dx).any() and not np.isnan(dlx).any()
    npt.assert_array_equal(dx[~where], 0)
    npt.assert_array_equal(dlx[~where], 0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [-1, -2, 1])
@pytest.mark.parametrize("beta", [1.0, -0.75])
def test_masked_backward_matches_masked_jacobian(backend, dtype, axis, beta, rng):
    x, mask = _causal_case(rng, dtype, k=-1, shape=(2, 3, 13, 13))
    if axis == 1:
        mask = rng.random((1, 3, 13, 1)) < 0.5
    wfull = np.broadcast_to(mask, x.shape)
    g = rng.normal(size=x.shape).astype(dtype)  # nonzero outside the selection too
    y = fs.softmax(x, axis=axis, beta=beta, where=mask)
    ly = fs.log_softmax(x, axis=axis, beta=beta, where=mask)
    n = x.shape[axis]
    dx = fs.softmax_backward(g, y, axis=axis, beta=beta, where=mask)
    ref = ref_softmax_jvp(g, y, axis, beta, mask)
    gl = np.abs(np.where(wfull, g, 0).astype(np.longdouble))
    yl = y.astype(np.longdouble)
    scale = abs(beta) * yl * (gl + (gl * yl).sum(axis=axis, keepdims=True))
    # Tolerance: (n + 4) eps * |beta| y (|g| + sum |g| y); exactly 0 outside.
    assert_backward_close(dx, ref, scale, n, dtype)
    npt.assert_array_equal(dx[~wfull], 0)
    dlx = fs.log_softmax_backward(g, ly, axis=axis, beta=beta, where=mask)
    ref = ref_log_softmax_jvp(g, ly, axis, beta, mask)
    p = np.exp(ly.astype(np.longdouble))
    scale = abs(beta) * (gl + p * gl.sum(axis=axis, keepdims=True))
    # Tolerance: (n + 4) eps * |beta| (|g| + p sum |g|); exactly 0 outside.
    assert_backward_close(dlx, ref, scale, n, dtype)
    npt.assert_array_equal(dlx[~wfull], 0)
    assert not np.isnan(dx).any() and not np.isnan(dlx).any()


@pytest.mark.parametrize("dtype", FLOATS)
def test_masked_out_plus_inf_and_nan_do_not_affect_the_row(backend, dtype, rng):
    x = rng.normal(0, 3, size=(2, 37)).astype(dtype)
    where = rng.random(x.shape) < 0.6
    where[:, 0] = True
    xs = x.copy()
    xs[0, ~where[0]] = np.inf
    xs[1, ~where[1]] = np.nan
    # Tolerance: 2 ULP (4 numpy) vs the masked reference of the clean data.
    assert_probs_within_ulp(fs.softmax(xs, where=where), ref_softmax(x, -1, where, _wide_for(dtype)), _softmax_maxulp(backend))


@pytest.mark.parametrize("dtype", FLOATS)
def test_selected_nan_or_plus_inf_follow_the_unmasked_rules(backend, dtype):
    x = np.array([[0.0, np.nan, 1.0, 2.0], [np.inf, 1.0, np.inf, np.inf]], dtype)
    where = np.array([[True, True, True, False], [True, True, False, True]])
    y = fs.softmax(x, where=where)
    # Exact: a selected NaN gives NaN on the row's selected entries; two selected +inf
    # share the mass 1/2 each; unselected entries read 0.
    assert np.isnan(y[0, :3]).all()
    npt.assert_array_equal(y[1], np.array([0.5, 0, 0, 0.5], dtype))
    npt.assert_array_equal(fs.logsumexp(x[1:], where=where[1:]), np.array([np.inf], dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("layout", ["fortran", "strided", "in_place"])
def test_masked_forward_along_any_axis_is_independent_of_memory_layout(backend, dtype, axis, layout, rng):
    x = rng.normal(0, 3, size=(5, 12, 33)).astype(dtype)
    mask = rng.random(x.shape) < 0.6
    if layout == "strided":
        x, mask = x[:, ::2, 1:], mask[:, ::2, 1:]
    wide = _wide_for(dtype)
    ref = ref_softmax(x, axis, mask, wide)
    lref = ref_log_softmax(x, axis, mask, wide)
    tol = _softmax_maxulp(backend)
    floor = 1e-7 if dtype == np.float32 else 1e-15
    if layout == "fortran":
        xf, mf = np.asfortranarray(x), np.asfortranarray(mask)
        y, ly = fs.softmax(xf, axis=axis, where=mf), fs.log_softmax(xf, axis=axis, where=mf)
        lse = fs.logsumexp(xf, axis=axis, where=mf)
    elif layout == "strided":
        y, ly = fs.softmax(x, axis=axis, where=mask), fs.log_softmax(x, axis=axis, where=mask)
        lse = fs.logsumexp(x, axis=axis, where=mask)
    else:
        y, ly = x.copy(), x.copy()
        assert fs.softmax(y, axis=axis, where=mask, out=y) is y
        assert fs.log_softmax(ly, axis=axis, where=mask, out=ly) is ly
        lse = fs.logsumexp(x, axis=axis, where=mask)
    # Tolerances: softmax 2 ULP (4 numpy), exact 0 outside; log_softmax max(2 ULP, 1e-7 /
    # 1e-15), exact -inf outside; logsumexp max(2 ULP, 1e-6 / 1e-14).
    assert_probs_within_ulp(y, ref, tol)
    assert_log_within(ly, lref, tol, floor)
    assert_log_within(lse, ref_lse(x, axis, mask, wide), 2, 10 * floor)


def test_where_not_broadcastable_raises_value_error():
    x = np.zeros((3, 4))
    for fn in (fs.softmax, fs.log_softmax, fs.logsumexp):
        with pytest.raises(ValueError):
            fn(x, where=np.ones((3, 3), bool))
    with pytest.raises(ValueError):
        fs.softmax_backward(x, x, where=np.ones((2, 4), bool))
    with pytest.raises(ValueError):
        fs.log_softmax_backward(x, x, where=np.ones(5, bool))


@pytest.mark.parametrize("mask", [np.ones((3, 4), np.int8), np.ones((3, 4)), np.ones(4, np.uint8), [1, 0, 1, 1]])
def test_where_not_boolean_raises_type_error(mask):
    x = np.zeros((3, 4))
    for fn in (fs.softmax, fs.log_softmax, fs.logsumexp, fs.softmin):
        with pytest.raises(TypeError):
            fn(x, where=mask)
    with pytest.raises(TypeError):
        fs.softmax_backward(x, x, where=mask)
    with pytest.raises(TypeError):
        fs.log_softmax_backward(x, x, where=mask)


# ----------------------------------------------------------------------------
# dtype=
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("in_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("out_dtype", [np.float16, np.float32, np.float64])
def test_dtype_argument_computes_and_returns_in_that_dtype(backend, in_dtype, out_dtype, rng):
    # Inputs exactly representable in float16 so that "convert, then compute" is unambiguous.
    x = rng.normal(0, 3, size=(5, 37)).astype(np.float16).astype(in_dtype)
    y = fs.softmax(x, dtype=out_dtype)
    ly = fs.log_softmax(x, dtype=out_dtype)
    assert y.dtype == out_dtype and ly.dtype == out_dtype
    ref = ref_softmax(x, wide=np.longdouble)
    lref = ref_log_softmax(x, wide=np.longdouble)
    if out_dtype == np.float16:
        # float16 is computed in float32 and rounded once more: 1 ULP of float16.
        assert_probs_within_ulp(y, ref, 1)
        assert_log_within(ly, lref, 1, 0)
    else:
        # 2 ULP (4 numpy) of the requested dtype; log_softmax max(2 ULP, 1e-7/1e-15).
        assert_probs_within_ulp(y, ref, _softmax_maxulp(backend))
        assert_log_within(ly, lref, 2, 1e-7 if out_dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("bad", [np.int32, np.int64, np.bool_, np.complex128, "i4"])
def test_non_floating_dtype_argument_raises_type_error(bad):
    x = np.zeros(4)
    with pytest.raises(TypeError):
        fs.softmax(x, dtype=bad)
    with pytest.raises(TypeError):
        fs.log_softmax(x, dtype=bad)
    with pytest.raises(TypeError):
        fs.softmin(x, dtype=bad)


# ----------------------------------------------------------------------------
# Accuracy
# ----------------------------------------------------------------------------

ACCURACY_CASES = {
    "normal3_rows_1000": lambda rng: rng.normal(0, 3, size=(64, 1000)),
    "normal3_rows_32000": lambda rng: rng.normal(0, 3, size=(8, 32000)),
    "normal30_rows_1000": lambda rng: rng.normal(0, 30, size=(64, 1000)),
    "uniform_single_row_2pow22": lambda rng: rng.uniform(-1, 1, size=(1, 2**22)),
    "shape_65536_by_10": lambda rng: rng.normal(0, 3, size=(65536, 10)),
    # float32 rows of 768 KB take the three-pass path with the exponentials stored, longer
    # ones the two-pass online path; on AMD's Zen cores the limit is 2 MB (float64: 1 MB and
    # 2 MB rows below, stored there, online elsewhere).
    "normal3_rows_of_768KB": lambda rng: rng.normal(0, 3, size=(2, 196608)),
    "normal3_rows_past_768KB": lambda rng: rng.normal(0, 3, size=(2, 196624)),
    "normal3_rows_of_1MB": lambda rng: rng.normal(0, 3, size=(2, 262144)),
    "normal3_rows_of_2MB": lambda rng: rng.normal(0, 3, size=(2, 524288)),
    "normal3_rows_past_2MB": lambda rng: rng.normal(0, 3, size=(2, 524304)),
}


@pytest.mark.parametrize("case", list(ACCURACY_CASES))
def test_float32_softmax_within_2_ulp_of_float64_softmax(backend, case, rng):
    x = ACCURACY_CASES[case](rng).astype(np.float32)
    y = fs.softmax(x)
    ref = ref_softmax(x, wide=np.float64)
    # Tolerance: 2 ULP (4 on the numpy path) wherever ref > float32 tiny; below, abs tiny.
    assert_probs_within_ulp(y, ref, _softmax_maxulp(backend))


@pytest.mark.parametrize("case", list(ACCURACY_CASES))
def test_float32_log_softmax_within_max_of_2_ulp_and_1e_7(backend, case, rng):
    x = ACCURACY_CASES[case](rng).astype(np.float32)
    y = fs.log_softmax(x)
    ref = ref_log_softmax(x, wide=np.float64)
    # Tolerance: |err| <= max(2 ULP of the output's magnitude, 1e-7) (4 ULP numpy).
    assert_log_within(y, ref, _softmax_maxulp(backend), 1e-7)


@pytest.mark.parametrize("case", list(ACCURACY_CASES))
def test_float64_softmax_within_2_ulp_of_longdouble_softmax(backend, case, rng):
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("np.longdouble is not x87 extended precision here")
    x = ACCURACY_CASES[case](rng)
    y = fs.softmax(x)
    ref = ref_softmax(x, wide=np.longdouble)
    # Tolerance: 2 ULP (4 on the numpy path) wherever ref > float64 tiny.
    assert_probs_within_ulp(y, ref, _softmax_maxulp(backend))


# ----------------------------------------------------------------------------
# Backward passes
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_softmax_backward_matches_analytic_jacobian(backend, dtype, axis, beta, rng):
    x = rng.normal(0, 2, size=(6, 19, 11)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    y = fs.softmax(x, axis=axis, beta=beta)
    dx = fs.softmax_backward(g, y, axis=axis, beta=beta)
    assert dx.dtype == dtype and dx.shape == x.shape
    ref = ref_softmax_jvp(g, y, axis, beta)
    gl, yl = np.abs(g.astype(np.longdouble)), y.astype(np.longdouble)
    scale = beta * yl * (gl + (gl * yl).sum(axis=axis, keepdims=True))
    # Tolerance: (n + 4) eps * beta y (|g| + sum |g| y) (forward error of an n-term dot).
    assert_backward_close(dx, ref, scale, x.shape[axis], dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_log_softmax_backward_matches_analytic_jacobian(backend, dtype, axis, beta, rng):
    x = rng.normal(0, 2, size=(6, 19, 11)).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    ly = fs.log_softmax(x, axis=axis, beta=beta)
    dx = fs.log_softmax_backward(g, ly, axis=axis, beta=beta)
    assert dx.dtype == dtype and dx.shape == x.shape
    ref = ref_log_softmax_jvp(g, ly, axis, beta)
    gl = np.abs(g.astype(np.longdouble))
    p = np.exp(ly.astype(np.longdouble))
    scale = beta * (gl + p * gl.sum(axis=axis, keepdims=True))
    # Tolerance: (n + 4) eps * beta (|g| + p sum |g|).
    assert_backward_close(dx, ref, scale, x.shape[axis], dtype)


def _central_differences(f, x, h):
    d = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        d[idx] = (f(xp) - f(xm)) / (2 * h)
    return d


@pytest.mark.parametrize("beta", [0.5, 3.0, -1.7])
@pytest.mark.parametrize("axis", [0, -1])
def test_backward_with_beta_matches_finite_differences_of_softmax_of_beta_x(backend, beta, axis, rng):
    x = rng.normal(0, 1, size=(4, 6))
    g = rng.normal(size=x.shape)

    def loss_soft(v):
        return float(np.sum(g * ref_softmax(beta * v, axis, wide=np.float64)))

    def loss_log(v):
        return float(np.sum(g * ref_log_softmax(beta * v, axis, wide=np.float64)))

    h = 1e-5
    # Tolerance: central differences have error ~h^2 |f'''| + eps/h ~ 1e-10 here; atol 1e-8.
    fd = _central_differences(loss_soft, x, h)
    dx = fs.softmax_backward(g, fs.softmax(x, axis=axis, beta=beta), axis=axis, beta=beta)
    npt.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)
    fd = _central_differences(loss_log, x, h)
    dx = fs.log_softmax_backward(g, fs.log_softmax(x, axis=axis, beta=beta), axis=axis, beta=beta)
    npt.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------
# out= and argument errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn_name", ["softmax", "log_softmax", "softmin"])
def test_forward_out_receives_the_result_and_is_returned(backend, fn_name, rng):
    fn = getattr(fs, fn_name)
    x = rng.normal(size=(5, 37))
    out = np.full_like(x, 7.0)
    got = fn(x, out=out)
    assert got is out
    # Exact: writing into out changes nothing about the values.
    npt.assert_array_equal(out, fn(x))


@pytest.mark.parametrize("bad_out", ["shape", "dtype"])
def test_out_with_wrong_shape_or_dtype_raises_value_error_and_is_untouched(bad_out):
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    g = np.ones_like(x)
    calls = [
        (lambda o: fs.softmax(x, out=o), (3, 4)),
        (lambda o: fs.log_softmax(x, out=o), (3, 4)),
        (lambda o: fs.softmin(x, out=o), (3, 4)),
        (lambda o: fs.logsumexp(x, out=o), (3,)),
        (lambda o: fs.logsumexp(x, keepdims=True, out=o), (3, 1)),
        (lambda o: fs.softmax_backward(g, x, out=o), (3, 4)),
        (lambda o: fs.log_softmax_backward(g, x, out=o), (3, 4)),
    ]
    for call, good_shape in calls:
        if bad_out == "shape":
            out = np.full((good_shape[0] + 1,) + good_shape[1:], 5.0)
        else:
            out = np.full(good_shape, 5.0, np.float32)
        before = out.copy()
        with pytest.raises(ValueError):
            call(out)
        # Exact: the rejected out is not written to.
        npt.assert_array_equal(out, before)
    out = np.full((3, 1), 5.0)  # keepdims=False wants (3,)
    with pytest.raises(ValueError):
        fs.logsumexp(x, keepdims=False, out=out)
    npt.assert_array_equal(out, 5.0)


def test_beta_nan_raises_value_error():
    x = np.zeros((2, 3))
    for call in (
        lambda: fs.softmax(x, beta=np.nan),
        lambda: fs.log_softmax(x, beta=float("nan")),
        lambda: fs.logsumexp(x, beta=np.nan),
        lambda: fs.softmax_backward(x, x, beta=np.nan),
        lambda: fs.log_softmax_backward(x, x, beta=np.nan),
    ):
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("n", [3, 100])  # grouped short rows, and the row kernels
@pytest.mark.parametrize("axis", [-1, 0])
def test_logsumexp_near_zero_keeps_its_relative_accuracy(backend, n, axis, rng):
    # Rows whose logsumexp nearly cancels (m < 0, m + log S close to 0): the result must keep
    # its own digits, not only an absolute accuracy of the order of the exponential's.
    y = rng.normal(0, 2, size=(4000, n))
    shift = y.max(axis=1, keepdims=True) + np.log(np.exp(y - y.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
    x = (y - shift + rng.uniform(-1e-2, 1e-2, size=(4000, 1))).astype(np.float32)  # logsumexp ~ +-1e-2
    xl = x.astype(np.longdouble)
    m = xl.max(axis=1, keepdims=True)
    ref = (m + np.log(np.exp(xl - m).sum(axis=1, keepdims=True)))[:, 0]
    near = (m[:, 0] < 0) & (np.abs(ref) < -m[:, 0] / 4)
    assert near.sum() >= 1000  # the sample holds such rows
    # float32 only: for float64 the long double reference (and the kernels' long double
    # recomputation) is itself limited to a few ULP at these cancellations.
    got = fs.logsumexp(x if axis == -1 else np.ascontiguousarray(x.T), axis=axis)
    err = np.abs(got.astype(np.longdouble) - ref) / np.spacing(np.abs(ref).astype(np.float32))
    # Tolerance: 2 ULP (log S taken again in double where the result cancels).
    assert err[near].max() <= 2.0, err[near].max()


@pytest.mark.parametrize("n", [200, 20000])  # one block and several (8192 float32 entries each)
def test_log_softmax_of_the_largest_entry_on_both_sides_of_the_ties_limit(backend, n, rng):
    # Rows of more than a vector sum every entry for log_softmax, unless S comes out within
    # 1/16 of the largest entry's term: then the row is taken again with the entries equal to
    # the maximum counted apart, so that log S = log1p(S - 1) keeps its digits. S - 1 from 1e-9
    # to 0.5, across that limit.
    rows = 256 if n == 200 else 32
    u = np.exp(rng.uniform(np.log(1e-9), np.log(0.5), rows))  # S - 1
    x, ref = rows_with_s_near_1(rng, rows, n, u)
    got = fs.log_softmax(x)[:, 0].astype(np.longdouble)
    err = np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.longdouble)
    if backend == "numpy":
        # The documented bound, max(2 ULP, 1e-7) absolutely.
        bound = np.maximum(2 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.longdouble), 1e-7)
        assert (np.abs(got - ref) <= bound).all()
    else:
        # Tolerance: in ULP of the output itself, no absolute floor: 2 above the limit (the
        # output is at least log(1 + 1/16)), 4 below it (S - 1 a few ULP relative, scalar).
        above = u >= 1 / 16
        assert err[above].max() <= 2.0
        assert err[~above].max() <= 4.0
    # logsumexp of the same rows, m + log S (log_softmax's statistics): within 2 ULP.
    lse_ref = x[:, 0].astype(np.longdouble) - ref
    npt.assert_array_max_ulp(fs.logsumexp(x, axis=-1), lse_ref.astype(np.float32), maxulp=2)
    # Which way a row is summed first follows the rows before it; the results must not:
    # exact, in reverse order, one row at a time, and peaked rows first.
    whole, lse = fs.log_softmax(x), fs.logsumexp(x, axis=-1)
    npt.assert_array_equal(fs.log_softmax(x[::-1])[::-1], whole)
    npt.assert_array_equal(fs.logsumexp(x[::-1], axis=-1)[::-1], lse)
    npt.assert_array_equal(np.concatenate([fs.log_softmax(x[i : i + 1]) for i in range(rows)]), whole)
    order = np.argsort(u)
    npt.assert_array_equal(fs.log_softmax(x[order]), whole[order])
    # A row whose other entries are all -inf: exactly 0 at its maximum.
    x[:, 1:] = -np.inf
    npt.assert_array_equal(fs.log_softmax(x)[:, 0], 0.0)


# ----------------------------------------------------------------------------
# beta beyond the normal range of the compute dtype
# ----------------------------------------------------------------------------


@pytest.fixture(params=["one_step", "python_layer"])
def way_in(request, monkeypatch):
    if request.param == "python_layer" and fs._api._core is not None:
        monkeypatch.setattr(fs._api, "_core", OneStepDeclining(fs._api._core))
    return request.param


def _limit_aware_softmax(z, log=False):
    """Softmax (log_softmax) of z in long double; rows holding +inf give the limit, the +inf
    entries sharing the mass."""
    z = np.asarray(z).astype(np.longdouble)
    posinf = z == np.inf
    k = posinf.sum(axis=-1, keepdims=True)
    finite_rows = np.where(k > 0, 0, z)
    with np.errstate(divide="ignore"):
        if log:
            return np.where(k > 0, np.where(posinf, -np.log(np.maximum(k, 1)), -np.inf), ref_log_softmax(finite_rows))
        return np.where(k > 0, posinf / np.maximum(k, 1), ref_softmax(finite_rows))


def _product_rounded_once(x, beta, dtype):
    """beta * x formed exactly enough (float64, or long double for float64 x) and rounded
    once to dtype, the input's compute dtype."""
    wide = np.longdouble if dtype == np.float64 else np.float64
    with np.errstate(over="ignore"):
        return (np.asarray(x).astype(wide) * wide(beta)).astype(dtype)


def _beta_case(dtype, beta, rng):
    """Rows whose products with beta are normal numbers, +-inf and 0 side by side."""
    if abs(beta) >= 1:  # huge: products of entries far below 1 stay finite
        x = rng.normal(0, 1, size=(6, 37)) * 10.0 ** rng.integers(-40, 1, size=(6, 37))
        x[0] = np.linspace(-1, 1, 37)  # one +inf product (or one at the other end)
        x[1, :5] = 0
        x[2] = -np.abs(x[2]) * 1e-38  # only finite products: a normal softmax
    else:  # tiny: the entries are huge, their products near 1
        top = float(np.finfo(dtype).max) / 2
        x = rng.uniform(-1, 1, size=(6, 37)) * min(top, 2.0 / abs(beta))
    return np.clip(x, -float(np.finfo(dtype).max), float(np.finfo(dtype).max)).astype(dtype)


@pytest.mark.parametrize("dtype, beta", [
    (np.float32, 1e39), (np.float32, -3e300), (np.float32, 2e-39), (np.float32, -1e-44),
    (np.float16, 1e39), (np.float16, -1e300),
    (np.float64, 2e-309), (np.float64, -5e-320),
])
@pytest.mark.parametrize("fn_name", ["softmax", "log_softmax", "logsumexp"])
def test_beta_beyond_the_compute_dtype_gives_the_result_of_the_product_rounded_once(
    backend, way_in, dtype, beta, fn_name, rng
):
    fn = getattr(fs, fn_name)
    x = _beta_case(dtype, beta, rng)
    work = np.float32 if dtype == np.float16 else dtype
    z = _product_rounded_once(x, beta, work)
    got = fn(x, beta=beta)
    assert got.dtype == dtype
    # Exact: fn(x, beta=b) is fn(b * x) with b * x rounded once in the compute dtype (float32
    # for float16, whose result is then rounded to float16).
    with np.errstate(over="ignore"):  # a float32 logsumexp beyond float16's range is inf there
        want = fn(z, dtype=dtype) if fn_name != "logsumexp" else fn(z).astype(dtype)
    npt.assert_array_equal(got, want)
    assert not np.isnan(got).any()
    if fn_name == "softmax":
        ref = _limit_aware_softmax(z)
        if dtype == np.float16:
            # Tolerance: 1 ULP of float16 (a float32 result within 2 ULP, rounded once more).
            npt.assert_array_max_ulp(got, ref.astype(np.float16), maxulp=1)
        else:
            # Tolerance: 2 ULP (4 on the numpy path), absolute tiny below the normal range.
            assert_probs_within_ulp(got, ref, _softmax_maxulp(backend))
    elif fn_name == "log_softmax" and dtype != np.float16:
        # Tolerance: 2 ULP, or 1e-7 absolutely (float32's documented floor; 0 for float64).
        assert_log_within(got, _limit_aware_softmax(z, log=True), 2, 1e-7 if dtype == np.float32 else 0)


@pytest.mark.parametrize("dtype, beta", [(np.float32, 1e39), (np.float32, -2e-39), (np.float64, 2e-309)])
@pytest.mark.parametrize("log", [False, True])
def test_backward_with_beta_beyond_the_compute_dtype_is_beta_times_the_unit_gradient(
    backend, way_in, dtype, beta, log, rng
):
    x = rng.normal(0, 2, size=(5, 23)).astype(dtype)
    g = (rng.normal(size=x.shape) * 1e-3).astype(dtype)  # beta * dx stays within the range
    y = fs.log_softmax(x) if log else fs.softmax(x)
    dx = (fs.log_softmax_backward if log else fs.softmax_backward)(g, y, beta=beta)
    assert dx.dtype == dtype and not np.isnan(dx).any()
    unit = (fs.log_softmax_backward if log else fs.softmax_backward)(g, y)
    wide = np.longdouble if dtype == np.float64 else np.float64
    # Exact: the gradient at beta = 1 times beta, the product rounded once.
    npt.assert_array_equal(dx, (unit.astype(wide) * wide(beta)).astype(dtype))
    gl, yl = np.abs(g.astype(np.longdouble)), y.astype(np.longdouble)
    if log:
        ref = ref_log_softmax_jvp(g, y, -1, np.longdouble(beta))
        p = np.exp(yl)
        scale = abs(beta) * (gl + p * gl.sum(axis=-1, keepdims=True))
    else:
        ref = ref_softmax_jvp(g, y, -1, np.longdouble(beta))
        scale = abs(beta) * yl * (gl + (gl * yl).sum(axis=-1, keepdims=True))
    # Tolerance: (n + 4) eps * |beta| (the forward error bound of the unit gradient, scaled),
    # and 16 tiny absolutely.
    assert_backward_close(dx, ref, scale, x.shape[-1], dtype)


# ----------------------------------------------------------------------------
# log_softmax of large, equal entries (z - m first, then log S)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, value", [
    (np.float32, 1e10), (np.float32, 3e38), (np.float64, 1e17), (np.float64, -1e300), (np.longdouble, 1e30),
])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_log_softmax_of_k_equal_large_entries_is_minus_log_k(backend, dtype, value, k):
    x = np.full((2, k), value, dtype)
    ref = np.full(x.shape, -np.log(np.longdouble(k)))
    # Tolerance: 1 ULP of -log(k) in the dtype (the value's size must not enter: z - m = 0).
    assert_log_within(fs.log_softmax(x), ref, 1, 0)
    # The same along axis 0 and with a selection (the other kernel paths).
    assert_log_within(fs.log_softmax(x.T, axis=0), ref.T, 1, 0)
    assert_log_within(fs.log_softmax(x, where=np.ones(x.shape, bool)), ref, 1, 0)
