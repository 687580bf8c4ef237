"""Many short rows (2 to 64 entries): the kernels take W rows at a time, one row per vector
lane, or (float forward passes, rows of an even number of entries from 6 and of any number
from 17) in two halves of W / 2 rows, one row per pair of lanes, the last pair of an odd row
repeating an entry.
These tests use enough rows to fill whole groups plus a remainder taken row by row, on every
backend, and put special rows (NaN, +inf, only -inf, huge values) inside a group.

References: float64 NumPy for float32 inputs and np.longdouble for float64 inputs; special
rows against the NumPy backend.
"""

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs
from fastsoftmax import _api

from conftest import rows_with_s_near_1

# Every row length of the grouped path and both sides of its limits.
ROW_LENGTHS = list(range(1, 18)) + [31, 32, 33, 40, 48, 63, 64, 65]
# 16 float32 lanes (AVX-512) divide 48 and leave 5 rows for the row path; 5 rows alone never
# fill a group.
ROW_COUNTS = [5, 53]


def _ref_softmax(x):
    wide = np.longdouble if x.dtype == np.float64 else np.float64
    z = x.astype(wide)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _ref_logsumexp(x):
    wide = np.longdouble if x.dtype == np.float64 else np.float64
    z = x.astype(wide)
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def _ulps(actual, ref, dtype):
    ref_d = ref.astype(dtype)
    return np.abs(actual.astype(ref.dtype) - ref) / np.spacing(np.abs(ref_d)).astype(ref.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("n", ROW_LENGTHS)
def test_softmax_of_many_short_rows_within_2_ulp(backend, dtype, rows, n, rng):
    x = rng.normal(0, 3, size=(rows, n)).astype(dtype)
    y = fs.softmax(x)
    ref = _ref_softmax(x)
    normal = ref > np.finfo(dtype).tiny
    # Tolerance: 2 ULP of the dtype over outputs in the normal range (the accuracy target).
    assert _ulps(y, ref, dtype)[normal].max() <= 2.0
    # Below the normal range: absolute tolerance of the smallest normal number.
    npt.assert_allclose(y[~normal], ref[~normal].astype(dtype), rtol=0, atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("n", ROW_LENGTHS)
def test_log_softmax_and_logsumexp_of_many_short_float32_rows(backend, rows, n, rng):
    x = rng.normal(0, 3, size=(rows, n)).astype(np.float32)
    lse = _ref_logsumexp(x)
    ref = x.astype(np.float64) - lse[:, None]
    got = fs.log_softmax(x)
    # Tolerance: 2 ULP of each output's magnitude or 1e-7, whichever is larger (issue #4).
    bound = np.maximum(2 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64), 1e-7)
    assert (np.abs(got - ref) <= bound).all()
    got_lse = fs.logsumexp(x, axis=-1)
    # Tolerance: 2 ULP of the result or 1e-7 absolute (results near 0 carry the exponential's
    # 2^-28 relative error as an absolute one).
    bound = np.maximum(2 * np.spacing(np.abs(lse).astype(np.float32)).astype(np.float64), 1e-7)
    assert (np.abs(got_lse - lse) <= bound).all()


@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("n", [2, 10, 64])
def test_log_softmax_and_logsumexp_of_many_short_float64_rows(backend, rows, n, rng):
    x = rng.normal(0, 3, size=(rows, n))
    lse = _ref_logsumexp(x)
    # Tolerance: 4 ULP of the result's magnitude, or 4 ULP of 1 for results near 0.
    tol = 4 * np.spacing(np.maximum(np.abs(lse), 1.0).astype(np.float64))
    assert (np.abs(fs.logsumexp(x, axis=-1) - lse) <= tol).all()
    ref = x.astype(np.longdouble) - lse[:, None]
    tol = 4 * np.spacing(np.maximum(np.abs(ref), 1.0).astype(np.float64))
    assert (np.abs(fs.log_softmax(x) - ref) <= tol).all()


SPECIAL_ROWS = {
    "nan": lambda n: np.where(np.arange(n) == n // 2, np.nan, 0.5),
    "plus_inf": lambda n: np.where(np.arange(n) == 0, np.inf, 1.0),
    "two_plus_inf": lambda n: np.where(np.arange(n) < 2, np.inf, 1.0),
    "only_minus_inf": lambda n: np.full(n, -np.inf),
    "some_minus_inf": lambda n: np.where(np.arange(n) % 2 == 0, -np.inf, np.arange(n, dtype=float)),
    "huge": lambda n: 3e4 + np.arange(n, dtype=float),  # beyond the direct reduction
    "huge_negative": lambda n: -3e4 - np.arange(n, dtype=float),
    "wide_range": lambda n: np.linspace(-200, 80, n),
    # Entry n - 2: the one an odd row in pairs reads twice.
    "nan_at_n_minus_2": lambda n: np.where(np.arange(n) == n - 2, np.nan, 1.0),
    "plus_inf_at_n_minus_2": lambda n: np.where(np.arange(n) == n - 2, np.inf, 1.0),
    "max_at_n_minus_2": lambda n: np.where(np.arange(n) == n - 2, 9.0, 0.5),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 10, 12, 16, 17, 33, 64])
@pytest.mark.parametrize("special", sorted(SPECIAL_ROWS))
def test_special_rows_inside_a_group_match_the_numpy_backend(backend, dtype, n, special, rng):
    x = rng.normal(0, 2, size=(37, n))
    # AVX-512 float32 groups of 16 rows: the first group's first half (twice), the second
    # group's second half (alone in its group), and the rows past the last group (the row path).
    for r in (0, 6, 26, 33):
        x[r] = SPECIAL_ROWS[special](n)
    x = x.astype(dtype)
    with _api.use_backend("numpy"):
        expected = {f: getattr(fs, f)(x) for f in ("softmax", "log_softmax", "logsumexp")}
    for f, want in expected.items():
        got = getattr(fs, f)(x)
        assert got.dtype == want.dtype
        # Tolerance: 4 ULP relative plus 1e-6 absolute (log_softmax of values near 0, tiny
        # softmax outputs); NaN and infinities must match exactly.
        npt.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=1e-6, equal_nan=True, err_msg=f)
        npt.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f)
        npt.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f)
        npt.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f)


@pytest.mark.parametrize("beta", [0.0, -1.5, 7.0])
@pytest.mark.parametrize("n", [12, 33])
def test_beta_on_many_short_rows(backend, beta, n, rng):
    x = rng.normal(0, 1, size=(40, n)).astype(np.float32)
    z = np.float32(beta) * x  # beta * x is rounded in the dtype, as documented
    ref = _ref_softmax(z)
    # Tolerance: 2 ULP.
    assert _ulps(fs.softmax(x, beta=beta), ref, np.float32).max() <= 2.0
    lse = _ref_logsumexp(z)
    # Tolerance: 1e-6 relative plus 1e-7 absolute.
    npt.assert_allclose(fs.logsumexp(x, beta=beta, axis=-1), lse, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("n", [10, 33])
def test_many_short_rows_are_bitwise_identical_on_one_and_two_threads(backend, fn, n, rng):
    x = rng.normal(0, 3, size=(640 * 1024 // n + 7, n)).astype(np.float32)
    one = getattr(fs, fn)(x, threads=1)
    two = getattr(fs, fn)(x, threads=2)
    # Exact: the grouping of rows does not depend on the number of threads.
    npt.assert_array_equal(one, two)


@pytest.mark.parametrize("n", [7, 33])
def test_short_rows_in_place(backend, n, rng):
    x = rng.normal(0, 3, size=(50, n)).astype(np.float32)
    ref = _ref_softmax(x)
    fs.softmax(x, out=x)
    # Tolerance: 2 ULP.
    assert _ulps(x, ref, np.float32).max() <= 2.0


# ---------------------------------------------------------------------------------------
# Backward passes (the grouped path covers rows of 2 to 17 entries)


def _ref_backward(grad, y, log):
    wide = np.longdouble
    g, s = grad.astype(wide), y.astype(wide)
    if log:
        return g - np.exp(s) * g.sum(axis=-1, keepdims=True)
    return s * (g - (g * s).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 10, 15, 16, 17, 18, 31, 32, 33])
@pytest.mark.parametrize("log", [False, True], ids=["softmax_backward", "log_softmax_backward"])
def test_backward_of_many_short_rows_matches_longdouble(backend, dtype, rows, n, log, rng):
    x = rng.normal(0, 3, size=(rows, n)).astype(dtype)
    grad = rng.normal(0, 1, size=(rows, n)).astype(dtype)
    y = fs.log_softmax(x) if log else fs.softmax(x)
    fn = fs.log_softmax_backward if log else fs.softmax_backward
    got = fn(grad, y)
    ref = _ref_backward(grad, y, log)
    # Tolerance: (n + 4) eps times the terms' magnitude (a sum of n products, then one
    # subtraction and one product), as in the backward tests of test_softmax.py.
    eps = np.finfo(dtype).eps
    if log:
        scale = np.abs(grad) + np.exp(y.astype(np.longdouble)) * np.abs(grad).sum(axis=-1, keepdims=True)
    else:
        scale = y * (np.abs(grad) + (np.abs(grad) * y).sum(axis=-1, keepdims=True))
    assert (np.abs(got - ref) <= (n + 4) * eps * scale + np.finfo(dtype).tiny).all()


@pytest.mark.parametrize("log", [False, True], ids=["softmax_backward", "log_softmax_backward"])
def test_backward_group_with_a_sum_beyond_float32_takes_the_row_path(backend, log, rng):
    y = fs.softmax(rng.normal(0, 1, size=(40, 4)).astype(np.float32))
    grad = rng.normal(0, 1, size=(40, 4)).astype(np.float32)
    if log:
        y = np.log(y)
        grad[5] = np.float32([-3e38, 3e38, 3e38, 3e38])  # sum(grad) = 6e38 is beyond float32
    else:
        grad[5] = np.float32(3e38)
        y[5] = np.float32([1.0, 1.0, 0.5, 0.5])  # sum(grad * y) = 9e38 (y need not sum to 1)
    fn = fs.log_softmax_backward if log else fs.softmax_backward
    with _api.use_backend("numpy"):
        expected = fn(grad, y)
    got = fn(grad, y)
    # Row 5, tolerance 1e-5 relative (the sum rounded to float32, then a difference); the
    # infinities of the NumPy path (where the true result overflows) exactly.
    npt.assert_allclose(got[5], expected[5], rtol=1e-5, atol=0)
    assert np.isfinite(got[5]).any()
    # The other rows (|grad| ~ 1): 1e-6 absolute (the NumPy path does not round the sum).
    npt.assert_allclose(np.delete(got, 5, axis=0), np.delete(expected, 5, axis=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fn", ["softmax_backward", "log_softmax_backward"])
def test_backward_of_many_short_rows_bitwise_identical_on_one_and_two_threads(backend, fn, rng):
    x = rng.normal(0, 3, size=(65536 + 3, 12)).astype(np.float32)
    y = fs.softmax(x) if fn == "softmax_backward" else fs.log_softmax(x)
    grad = rng.normal(0, 1, size=x.shape).astype(np.float32)
    # Exact: the grouping of rows does not depend on the number of threads.
    npt.assert_array_equal(getattr(fs, fn)(grad, y, threads=1), getattr(fs, fn)(grad, y, threads=2))


# ---------------------------------------------------------------------------------------
# cross_entropy with class targets (the grouped path: no smoothing, 2 to 64 classes)


def _ref_cross_entropy(logits, target, weight, ignore_index, reduction):
    """Losses and gradient in np.longdouble, with torch's semantics."""
    z = logits.astype(np.longdouble)
    rows, classes = z.shape
    m = z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    p = np.exp(z - lse)
    keep = target != ignore_index
    t = np.where(keep, target, 0)
    w = (np.ones(classes, np.longdouble) if weight is None else weight.astype(np.longdouble))[t] * keep
    losses = -w * (z[np.arange(rows), t] - lse[:, 0])
    scale = 1 / w.sum() if reduction == "mean" else 1
    onehot = np.zeros_like(z)
    onehot[np.arange(rows), t] = 1
    grad = (w * scale)[:, None] * (p - onehot)
    if reduction == "none":
        return losses, grad
    total = losses.sum() * (scale if reduction == "mean" else 1)
    return total, grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [2, 3, 10, 12, 16, 17, 64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_of_many_short_rows_matches_longdouble(backend, dtype, classes, weighted, reduction, rng):
    rows = 53
    logits = rng.normal(0, 3, size=(rows, classes)).astype(dtype)
    target = rng.integers(0, classes, size=rows)
    target[[3, 20]] = -100  # ignored rows inside groups
    weight = rng.uniform(0.5, 2.0, size=classes).astype(dtype) if weighted else None
    loss, grad = fs.cross_entropy(logits, target, weight=weight, reduction=reduction, return_grad=True)
    ref_loss, ref_grad = _ref_cross_entropy(logits, target, weight, -100, reduction)
    eps = np.finfo(dtype).eps
    # Tolerance: losses 8 eps relative plus 8 eps of the row's log-normaliser absolute (x - lse
    # with lse rounded to the dtype); gradient 4 eps of the row's weight times scale absolute.
    npt.assert_allclose(loss, ref_loss.astype(np.float64), rtol=8 * eps, atol=8 * eps * 12)
    npt.assert_allclose(grad, ref_grad.astype(np.float64), rtol=0, atol=4 * eps * 2.0)
    assert (grad[[3, 20]] == 0).all()  # exact: ignored rows have no gradient


@pytest.mark.parametrize("special", ["nan", "plus_inf", "only_minus_inf", "huge"])
def test_cross_entropy_special_rows_inside_a_group_match_the_numpy_backend(backend, special, rng):
    logits = rng.normal(0, 2, size=(37, 10))
    logits[6] = SPECIAL_ROWS[special](10)
    logits = logits.astype(np.float32)
    target = rng.integers(0, 10, size=37)
    with _api.use_backend("numpy"):
        want_loss, want_grad = fs.cross_entropy(logits, target, reduction="none", return_grad=True)
    loss, grad = fs.cross_entropy(logits, target, reduction="none", return_grad=True)
    # Tolerance: 1e-6 relative and absolute; NaN where the NumPy path has NaN.
    npt.assert_allclose(loss, want_loss, rtol=1e-6, atol=1e-6, equal_nan=True)
    npt.assert_array_equal(np.isnan(loss), np.isnan(want_loss))
    ok = ~np.isnan(want_grad).any(axis=1)  # rows the NumPy path gives finite gradients for
    npt.assert_allclose(grad[ok], want_grad[ok], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [2, 10, 17, 33])
def test_log_softmax_and_logsumexp_as_the_sum_crosses_sqrt2(backend, n, rng):
    # Rows whose sum S = 1 + u of exp(x - max) spans u in [1e-9, 9]: both sides of
    # u = sqrt(2) - 1, where log1p(u) changes from u's own digits to 1 + u's.
    rows = 4096
    u = np.exp(rng.uniform(np.log(1e-9), np.log(9.0), rows))
    x = np.zeros((rows, n))
    x[:, 1:] = np.log(u / (n - 1))[:, None] + rng.normal(0, 1e-3, (rows, n - 1))
    x = (np.minimum(x, 0) + rng.normal(0, 5, (rows, 1))).astype(np.float32)
    z = x.astype(np.longdouble)
    lse = _ref_logsumexp(x)
    ref = z - lse[:, None]
    # Tolerance: log_softmax max(2 ULP of the output, 1e-7); logsumexp 2 ULP.
    unit = np.maximum(np.spacing(np.abs(ref).astype(np.float32)).astype(np.longdouble), 5e-8)
    assert (np.abs(fs.log_softmax(x).astype(np.longdouble) - ref) / unit).max() <= 2.0
    npt.assert_array_max_ulp(fs.logsumexp(x), lse.astype(np.float32), maxulp=2)


@pytest.mark.parametrize("n", [2, 10, 64])
def test_log_softmax_of_the_largest_entry_keeps_its_digits_when_s_is_near_1(backend, n, rng):
    # log_softmax at the largest entry is -log1p(S - 1): with S - 1 between 1e-9 and 1e-6 it
    # is that small, and log S must come from S - 1 summed apart from the largest term.
    rows = 4096
    x, ref = rows_with_s_near_1(rng, rows, n, np.exp(rng.uniform(np.log(1e-9), np.log(1e-6), rows)))
    got = fs.log_softmax(x)[:, 0]
    if backend in ("avx2", "avx512"):  # the short-row paths: S - 1 summed apart from e(m)
        # Tolerance: 2 ULP of the (tiny) output itself, no absolute floor.
        npt.assert_array_max_ulp(got, ref.astype(np.float32), maxulp=2)
    else:
        # The row path (scalar: one row a lane is no group) and the NumPy path: the documented
        # bound, max(2 ULP, 1e-7) absolutely (they keep S - 1 to a few ULP relative).
        bound = np.maximum(2 * np.spacing(np.abs(ref).astype(np.float32)).astype(np.longdouble), 1e-7)
        assert (np.abs(got.astype(np.longdouble) - ref) <= bound).all()
    # A row whose other entries are all -inf: exactly 0 at its maximum.
    x[:, 1:] = -np.inf
    npt.assert_array_equal(fs.log_softmax(x)[:, 0], 0.0)
