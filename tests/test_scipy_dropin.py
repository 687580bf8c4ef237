"""fastsoftmax.scipy: the drop-in for scipy.special.softmax, log_softmax and logsumexp.

Two kinds of tests:

- direct comparisons with the installed SciPy on a matrix of inputs (axes None / int /
  tuple, keepdims, float16/32/64, integers, complex, weights, signs, special values, empty
  and 0-d input, array_likes), with the tolerance stated at each comparison;
- SciPy's own test file for these functions (scipy/special/tests/test_logsumexp.py), run
  in a subprocess with scipy.special's functions swapped for ours by the plugin in
  scipy_dropin_plugin.py.
"""

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

scipy_special = pytest.importorskip("scipy.special")

import fastsoftmax.scipy as fss  # noqa: E402
from fastsoftmax import _api  # noqa: E402

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

FUNCS = ("softmax", "log_softmax", "logsumexp")
INF, NAN = np.inf, np.nan


# ---------------------------------------------------------------------------------------
# Comparison helpers


def scipy_result(name, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SciPy's inf - inf etc.
        return getattr(scipy_special, name)(*args, **kwargs)


def tolerances(dtype, x, name):
    """(rtol, atol) for comparing our result with SciPy's, for result dtype ``dtype``.

    rtol = 256 eps: SciPy's exp(x - max) is off by up to |x - max| * eps relative (|x - max|
    stays below ~100 for the inputs here) and its sums by up to n * eps; fastsoftmax is
    within 2 ULP. float16 gets 16 eps (SciPy rounds every float16 operation; we compute in
    float32 and round once).
    atol: where a log-space result is near 0 its rounding error is absolute, about
    eps * max|x| (log_softmax = x - lse, logsumexp = m + log1p(...)), so 256 eps * max(1,
    max|x|) there; softmax values below the smallest normal number are compared absolutely
    to 2 units of the smallest subnormal.
    """
    finfo = np.finfo(np.dtype(dtype).type(0).real.dtype)
    factor = 16 if finfo.dtype == np.float16 else 256
    rtol = factor * float(finfo.eps)
    if name == "softmax":
        # The kernels flush subnormal results to zero: below the smallest normal number
        # the comparison is absolute.
        return rtol, float(finfo.tiny)
    xa = np.abs(np.asarray(x, dtype=complex if np.iscomplexobj(x) else float))
    finite = xa[np.isfinite(xa)]
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return rtol, factor * float(finfo.eps) * scale


def assert_same(ours, theirs, rtol, atol):
    """Same container type (tuple / ndarray / NumPy scalar), dtype and shape; NaN and
    infinities at the same places with the same signs; finite values with
    |ours - theirs| <= atol + rtol * |theirs|."""
    assert type(ours) is type(theirs), (type(ours), type(theirs))
    if isinstance(theirs, tuple):
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            assert_same(o, t, rtol, atol)
        return
    o, t = np.asarray(ours), np.asarray(theirs)
    assert o.dtype == t.dtype, (o.dtype, t.dtype)
    assert o.shape == t.shape, (o.shape, t.shape)
    # A complex number with a NaN part counts as NaN, as in numpy.testing (SciPy returns
    # nan+nanj where log(sum(exp(a))) is inf+nanj; we return the latter).
    nan = np.isnan(t)
    np.testing.assert_array_equal(np.isnan(o), nan, err_msg="NaN positions")
    o, t = o[~nan], t[~nan]
    for a, b in ((o.real, t.real), (o.imag, t.imag)) if np.iscomplexobj(t) else ((o, t),):
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg="+inf positions")
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg="-inf positions")
        fin = np.isfinite(b)
        np.testing.assert_allclose(a[fin], b[fin], rtol=rtol, atol=atol)


def builtin_base(exc_type):
    """The first built-in exception class ``exc_type`` derives from (NumPy's
    UFuncTypeError -> TypeError, AxisError -> ValueError)."""
    return next(c for c in exc_type.__mro__ if c.__module__ == "builtins")


def check(name, *args, dtype=None, **kwargs):
    """Our ``name`` against SciPy's on the same arguments: same result, or an exception of
    the same built-in type."""
    try:
        theirs = scipy_result(name, *args, **kwargs)
    except Exception as exc:  # SciPy rejects the input: so must we
        with pytest.raises(builtin_base(type(exc))):
            getattr(fss, name)(*args, **kwargs)
        return
    ours = getattr(fss, name)(*args, **kwargs)
    res_dtype = np.asarray(theirs[0] if isinstance(theirs, tuple) else theirs).dtype
    rtol, atol = tolerances(dtype or res_dtype, args[0], name)
    assert_same(ours, theirs, rtol, atol)


def axes_for(ndim):
    """None, every single axis (positive and negative), and every tuple of 2+ axes in
    every order."""
    out = [None] + list(range(-ndim, ndim))
    for k in range(2, ndim + 1):
        out += list(itertools.permutations(range(ndim), k))
    return out


def random_input(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.normal(size=shape) * 10 + 1j * rng.normal(size=shape) * 10).astype(dtype)
    if dtype.kind in "iu":
        # |x| <= 50: SciPy subtracts the maximum in the integer type, which must not wrap.
        return rng.integers(-50, 50, size=shape).astype(dtype)
    return (rng.normal(size=shape) * 10).astype(dtype)


# ---------------------------------------------------------------------------------------
# Real input: the kernels


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "longdouble"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_scipy(name, shape, dtype, rng):
    x = random_input(rng, shape, dtype)
    for axis in axes_for(len(shape)):
        check(name, x, axis=axis)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int64", "int8", "bool", "longdouble"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_matches_scipy(shape, dtype, keepdims, rng):
    x = random_input(rng, shape, dtype) if dtype != "bool" else rng.integers(0, 2, size=shape).astype(bool)
    for axis in axes_for(len(shape)):
        check("logsumexp", x, axis=axis, keepdims=keepdims)
        check("logsumexp", x, axis=axis, keepdims=keepdims, return_sign=True)


@pytest.mark.parametrize("layout", ["fortran", "strided", "transposed"])
def test_layouts(layout, rng):
    x = rng.normal(size=(5, 6, 7)) * 5
    x = {"fortran": np.asfortranarray(x), "strided": x[:, ::2, 1:], "transposed": x.transpose(2, 0, 1)}[layout]
    for name in FUNCS:
        for axis in (None, 0, 1, -1, (0, 2), (2, 0), (1, 2)):
            check(name, x, axis=axis)


EDGE_VALUES = [0.0, 1.0, -40.0, 1000.0, -1000.0, 1e308, -1e308, 5e-324, INF, -INF, NAN]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_special_values(dtype):
    """Every pair and triple of special values as rows: NaN and infinities must be where
    SciPy has them (fastsoftmax gives +inf rows the limit; the drop-in gives SciPy's NaN)."""
    rows = list(itertools.product(EDGE_VALUES, repeat=2))
    with np.errstate(over="ignore"):  # +-1e308 becomes +-inf in float32
        x = np.array(rows).astype(dtype)
    for name in FUNCS:
        check(name, x, axis=-1)
        check(name, x.T, axis=0)
        for row in x:
            check(name, row.copy())
    triples = np.array(list(itertools.product([0.0, INF, -INF, NAN, 1.0], repeat=3)), dtype=dtype)
    for name in FUNCS:
        check(name, triples, axis=1)
    check("logsumexp", triples, axis=1, return_sign=True)


def test_known_special_results():
    """The values SciPy documents or its tests pin down, written out."""
    assert np.isnan(fss.softmax([INF, 1.0, INF])).all()
    np.testing.assert_array_equal(fss.log_softmax([INF, 1.0, INF]), [NAN, -INF, NAN])
    assert np.isnan(fss.softmax([-INF, -INF])).all()
    assert np.isnan(fss.log_softmax([-INF, -INF])).all()
    # Tolerance: 1 ULP. (Exactly [0, 1] in SciPy; the kernels give 1 - 2**-53 for a group
    # with a single finite entry.)
    np.testing.assert_array_max_ulp(fss.softmax([-INF, 1.0]), [0.0, 1.0], maxulp=1)
    assert fss.logsumexp([INF, 1.0]) == INF
    assert fss.logsumexp([-INF, INF]) == INF
    assert fss.logsumexp([-INF, -INF]) == -INF
    assert np.isnan(fss.logsumexp([NAN, INF]))
    # log1p around the maximum: log(1 + e^-40) is not lost (SciPy's gh-18295).
    # Tolerance: 4 ULP of np.logaddexp's float64 result.
    np.testing.assert_array_max_ulp(fss.logsumexp(np.array([0.0, -40.0])), np.logaddexp(0.0, -40.0), maxulp=4)


def test_uses_the_kernels(monkeypatch):
    """Real NumPy input, with or without weights (signed weights: one logsumexp of the
    positive and one of the negative terms), goes through fastsoftmax's kernels; complex
    input does not."""
    calls = []
    for fn in ("softmax", "log_softmax", "logsumexp"):
        original = getattr(_api, fn)

        def spy(*args, _original=original, _fn=fn, **kwargs):
            calls.append(_fn)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_api, fn, spy)
    x = np.arange(12.0).reshape(3, 4)
    for axis in (None, 0, 1, (0, 1)):
        calls.clear()
        fss.softmax(x, axis=axis)
        fss.log_softmax(x.astype(np.float32), axis=axis)
        fss.logsumexp(x, axis=axis)
        fss.logsumexp(x.astype(np.int32), axis=axis, return_sign=True)
        fss.logsumexp(x, axis=axis, b=np.full(x.shape, 0.5))
        assert calls == ["softmax", "log_softmax", "logsumexp", "logsumexp", "logsumexp"]
    calls.clear()
    fss.logsumexp(x, b=np.where(x > 5, 1.0, -1.0), axis=1, return_sign=True)
    assert calls == ["logsumexp", "logsumexp"]
    calls.clear()
    fss.softmax(x + 1j)
    fss.log_softmax(x + 1j)
    fss.logsumexp(x + 1j, b=-np.ones(x.shape))
    assert calls == []


# ---------------------------------------------------------------------------------------
# NumPy paths: complex, weights, signs


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_complex(dtype, rng):
    for shape in [(5,), (3, 4), (2, 3, 4)]:
        x = random_input(rng, shape, dtype)
        for axis in axes_for(len(shape)):
            for name in FUNCS:
                check(name, x, axis=axis)
            check("logsumexp", x, axis=axis, return_sign=True)
            check("logsumexp", x, axis=axis, keepdims=True, b=rng.uniform(-1, 1, size=shape))
    # The imaginary part is brought into (-pi, pi].
    res = fss.logsumexp(np.array([1 + 10j, 2 + 10j], dtype=dtype))
    assert -np.pi < res.imag <= np.pi
    check("logsumexp", np.array([1 + 10j, 2 + 10j], dtype=dtype))


COMPLEX_INFINITIES = [
    -INF, INF, complex(-INF, 0.0), complex(-INF, -0.0), complex(-INF, INF), complex(-INF, -INF),
    complex(INF, 0.0), complex(INF, -0.0), complex(INF, INF), complex(INF, -INF),
    complex(-INF, 0.7533), complex(-INF, 2.3562), complex(-INF, 3.9270), complex(-INF, 5.4978),
    complex(INF, 0.7533), complex(INF, 2.3562), complex(INF, 3.9270), complex(INF, 5.4978),
]


def test_complex_infinities():
    """Infinite complex elements follow the C99 rules of exp and log, as SciPy (whose
    test_gh22601 this extends): exactly log(sum(exp(a)))."""
    for pair in itertools.product(COMPLEX_INFINITIES, repeat=2):
        a = np.array(pair)
        check("logsumexp", a)
        check("logsumexp", a, return_sign=True)
        with np.errstate(all="ignore"):
            ref = np.log(np.sum(np.exp(a)))
        ours = fss.logsumexp(a)
        # Exact, part by part (NaN parts where the reference has them).
        np.testing.assert_array_equal([ours.real, ours.imag], [ref.real, ref.imag])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weights_and_sign(dtype, rng):
    for shape in [(6,), (3, 4), (2, 3, 4)]:
        a = random_input(rng, shape, dtype)
        weights = {
            "positive": rng.uniform(0.1, 2, size=shape),
            "signed": rng.uniform(-1, 2, size=shape),
            "zeros": np.where(rng.uniform(size=shape) < 0.3, 0.0, 1.0),
            "scalar": 2.5,
            "negative scalar": -1.0,
        }
        for label, b in weights.items():
            b = np.asarray(b, dtype=dtype)
            for axis in axes_for(len(shape)):
                for keepdims in (False, True):
                    check("logsumexp", a, axis=axis, b=b, keepdims=keepdims)
                    check("logsumexp", a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    # Broadcasting a and b to a larger shape (SciPy's test_logsumexp_b_shape).
    check("logsumexp", np.zeros((4, 1, 2, 1)), b=np.ones((3, 1, 5)))
    check("logsumexp", np.zeros((4, 1, 2, 1)), b=np.ones((3, 1, 5)), axis=(0, 2), return_sign=True)


def test_sign_results():
    # Exact values (no tolerance): signs are +-1 or 0 exactly.
    r, s = fss.logsumexp([1, 1, 1], b=[1, -1, -1], return_sign=True)
    assert s == -1.0 and abs(r - 1.0) < 1e-15
    r, s = fss.logsumexp([1, 1], b=[1, -1], return_sign=True)
    assert r == -INF and s == 0.0
    assert np.isnan(fss.logsumexp([1, 2], b=[1, -1]))
    r, s = fss.logsumexp([INF], b=[-1.0], return_sign=True)
    assert r == INF and s == -1.0


@pytest.mark.parametrize(
    "a_dtype,b_dtype",
    list(itertools.product(["float16", "float32", "float64", "int8", "int32", "int64", "complex64", "complex128"], repeat=2)),
)
def test_weight_promotion(a_dtype, b_dtype):
    a = np.array([2, 1], dtype=a_dtype)
    b = np.array([1, -1], dtype=b_dtype)
    check("logsumexp", a, b=b)
    check("logsumexp", a, b=b, return_sign=True)


@pytest.mark.parametrize("b", [2, 2.0, 1j, True, [1, 2], np.float64(2.0), np.array(2.0)])
def test_weight_promotion_scalars(b):
    check("logsumexp", np.array([1.0, 2.0], dtype=np.float32), b=b)


# ---------------------------------------------------------------------------------------
# Shapes, scalars, array_likes, errors


@pytest.mark.parametrize(
    "x",
    [3.0, 1, -2, np.float32(3.0), np.float16(2.0), np.array(5.0), [1, 2], [[1.0, 2.0], [3.0, 4.0]], 1j, [1 + 1j, 2], [1000, 0, 0, 0]],
    ids=repr,
)
@pytest.mark.parametrize("axis", [None, 0, -1, 1, ()])
def test_scalars_and_array_likes(x, axis):
    for name in FUNCS:
        check(name, x, axis=axis)
    check("logsumexp", x, axis=axis, keepdims=True)
    check("logsumexp", x, axis=axis, return_sign=True)


def test_scalar_results_are_numpy_scalars():
    assert type(fss.softmax(1000)) is np.float64 and fss.softmax(1000) == 1.0
    assert type(fss.log_softmax(np.float32(1.0))) is np.float32
    assert type(fss.logsumexp([1000, 1000])) is np.float64
    assert fss.logsumexp(np.array(3.0), keepdims=True).shape == (1,)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 3)])
def test_empty(shape):
    x = np.empty(shape)
    for axis in axes_for(len(shape)):
        for name in ("softmax", "log_softmax"):
            check(name, x, axis=axis)  # ValueError where a group is empty, as SciPy
        if len(shape) > 1 and (axis is None or isinstance(axis, tuple)):
            # SciPy raises IndexError here (a bug in its empty-array branch); ours is -inf,
            # checked below.
            continue
        check("logsumexp", x, axis=axis)
        check("logsumexp", x, axis=axis, keepdims=True, return_sign=True)
    # logsumexp of nothing is -inf along any set of axes; SciPy's sign of it is -1.
    for axis in (None, tuple(range(len(shape)))):
        out, sgn = fss.logsumexp(x, axis=axis, return_sign=True)
        assert out == -INF and sgn == -1.0
        assert fss.logsumexp(x, axis=axis, keepdims=True).shape == (1,) * len(shape)
    check("logsumexp", [])
    check("logsumexp", np.array([], dtype=complex), return_sign=True)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_masked_and_matrix():
    # Like SciPy, the mask is ignored (the data are used) and a matrix gives an ndarray.
    check("softmax", np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0]))
    check("logsumexp", np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0]))
    check("softmax", np.matrix([[1.0, 2.0]]))


@pytest.mark.parametrize(
    "call",
    [
        ("softmax", np.ones((2, 3)), dict(axis=2)),
        ("logsumexp", np.ones((2, 3)), dict(axis=-3)),
        ("log_softmax", np.ones((2, 3)), dict(axis=(0, 0))),
        ("logsumexp", np.ones((2, 3)), dict(axis=(1, -1))),
        ("softmax", np.ones((2, 3)), dict(axis=1.0)),
        ("logsumexp", np.ones((2, 3)), dict(axis=[0, 1])),
        ("softmax", np.array([True, False]), {}),
        ("log_softmax", np.array([True, False]), {}),
        ("softmax", ["a", "b"], {}),
        ("softmax", np.empty((3, 0)), dict(axis=1)),
        ("log_softmax", [], {}),
        ("logsumexp", 3.0, dict(axis=1)),
    ],
    ids=lambda c: f"{c[0]}-{np.asarray(c[1]).dtype}{np.shape(c[1])}-{c[2]}",
)
def test_errors_match_scipy(call):
    name, x, kwargs = call
    with pytest.raises(Exception) as theirs:
        scipy_result(name, x, **kwargs)
    with pytest.raises(builtin_base(theirs.type)):
        getattr(fss, name)(x, **kwargs)
    if theirs.type is AxisError:
        with pytest.raises(AxisError):
            getattr(fss, name)(x, **kwargs)


def test_no_writeback():
    a = np.array([5.0, 4.0])
    b = np.array([3.0, 2.0])
    for name in FUNCS:
        getattr(fss, name)(a)
    fss.logsumexp(a, b=b)
    fss.logsumexp(a, b=-b, return_sign=True)
    np.testing.assert_array_equal(a, [5.0, 4.0])
    np.testing.assert_array_equal(b, [3.0, 2.0])


# ---------------------------------------------------------------------------------------
# Deliberate differences: where SciPy's result is an artefact, ours is the correct value


def test_unsigned_and_small_integers_do_not_wrap():
    """SciPy subtracts the maximum in the input's integer type: uint8 [1, 2] wraps to
    [255, 0] and gives NaN; int8 [-100, 100] wraps too. We keep SciPy's result dtype
    (numpy.exp's: float16 for 8-bit, float32 for 16-bit) and return the correct values."""
    for x in (np.array([1, 2], dtype=np.uint8), np.array([-100, 100], dtype=np.int8), np.array([0, 60000], dtype=np.uint16)):
        for name in ("softmax", "log_softmax"):
            ours = getattr(fss, name)(x)
            assert ours.dtype == scipy_result(name, x).dtype
            ref = getattr(scipy_special, name)(x.astype(np.float64)).astype(ours.dtype)
            # Tolerance: 1 ULP of the result dtype (we compute in float32 and round once).
            np.testing.assert_array_max_ulp(ours, ref, maxulp=1)


def test_large_int64_exact():
    """64-bit integers beyond 2**53 differ by less than float64 resolves; the maximum is
    subtracted exactly first, as SciPy does in integer arithmetic."""
    x = np.array([2**62, 2**62 + 1], dtype=np.int64)
    for name in ("softmax", "log_softmax"):
        ours = getattr(fss, name)(x)
        # Tolerance: 4 ULP of SciPy's float64 result.
        np.testing.assert_array_max_ulp(ours, scipy_result(name, x), maxulp=4)
    u = np.array([2**64 - 1, 2**64 - 2], dtype=np.uint64)
    # Tolerance: 4 ULP of the exact softmax of [1, 0] in float64.
    np.testing.assert_array_max_ulp(fss.softmax(u), scipy_result("softmax", np.array([1.0, 0.0])), maxulp=4)


def test_zero_weight_hides_its_element():
    """b == 0 drops the element even where it is infinite or NaN (SciPy documents this,
    but its fallback for infinite results brings 0 * inf = NaN back)."""
    assert fss.logsumexp([INF, INF], b=[0, 1]) == INF
    assert fss.logsumexp([NAN, 2.0], b=[0, 1]) == 2.0
    assert fss.logsumexp([1000.0, -1.0], b=[0, 0]) == -INF


# ---------------------------------------------------------------------------------------
# Other array libraries


def test_array_api_strict():
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    x_np = rng.normal(size=(3, 4)) * 5
    x = xp.asarray(x_np)
    for name in FUNCS:
        for axis in (None, 0, 1, (0, 1)):
            ours = getattr(fss, name)(x, axis=axis)
            assert type(ours) is type(x)
            # Tolerance: as against SciPy (256 eps relative, 256 eps * max|x| absolute).
            np.testing.assert_allclose(np.asarray(ours), scipy_result(name, x_np, axis=axis), rtol=256 * 2.2e-16, atol=256 * 2.2e-16 * 20)
    out, sgn = fss.logsumexp(x, b=xp.asarray(-np.ones((3, 4))), axis=1, return_sign=True)
    ref_out, ref_sgn = scipy_result("logsumexp", x_np, b=-np.ones((3, 4)), axis=1, return_sign=True)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=256 * 2.2e-16)
    np.testing.assert_array_equal(np.asarray(sgn), ref_sgn)


# ---------------------------------------------------------------------------------------
# SciPy's own tests with our functions


SCIPY_TEST_FILE = Path(scipy_special.__file__).parent / "tests" / "test_logsumexp.py"
TESTS_DIR = Path(__file__).resolve().parent


def _array_api_backends():
    """numpy plus the optional libraries SciPy's conftest would pick up and that run in
    seconds (array-api-strict, PyTorch); JAX is left out: its jit compilations take minutes."""
    return ["numpy"] + [name for name in ("array_api_strict", "torch") if importlib.util.find_spec(name)]


@pytest.mark.parametrize("mode", ["numpy", "array-api"])
def test_scipy_own_tests(mode, tmp_path):
    """SciPy's test_logsumexp.py, run with scipy.special.softmax, log_softmax and logsumexp
    replaced by fastsoftmax.scipy's: every test must pass (or be skipped / xfailed exactly as
    SciPy marks it), and each of the three functions must actually have been called.

    mode "numpy" is SciPy's default; "array-api" sets SCIPY_ARRAY_API so that SciPy's tests
    also run on the array libraries installed (array-api-strict, PyTorch)."""
    if not SCIPY_TEST_FILE.exists():
        pytest.skip(f"the installed SciPy ships no {SCIPY_TEST_FILE.name}")
    report = tmp_path / "report.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("SCIPY_ARRAY_API", None)
    if mode == "array-api":
        env["SCIPY_ARRAY_API"] = json.dumps(_array_api_backends())
    cmd = [
        sys.executable, "-m", "pytest",
        "-p", "scipy_dropin_plugin",
        "-p", "no:cacheprovider",
        # SciPy's conftest.py (the xp fixture, its markers) sits at the top of the scipy
        # package: make that the rootdir so pytest reads it.
        "--rootdir", str(SCIPY_TEST_FILE.parents[2]),
        "--dropin-report", str(report),
        "--dropin-require-calls",
        "-q", "-rfE",
        str(SCIPY_TEST_FILE),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    output = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, output
    data = json.loads(report.read_text())
    outcomes = data["outcomes"]
    assert outcomes.get("failed", 0) == 0 and outcomes.get("error", 0) == 0, output
    assert outcomes.get("passed", 0) >= 300, output
    assert min(data["calls"].values()) > 0, data["calls"]
    assert data["modules_checked"], "no test module was checked for the swapped functions"


def _exact_weighted_logsumexp(a, b):
    """log|sum(b * exp(a))| and its sign with mpmath at 200 bits, from the values as given."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(200):
        total = mpmath.fsum(mpmath.mpf(float(w)) * mpmath.exp(mpmath.mpf(float(v))) for v, w in zip(a, b))
        return float(mpmath.log(abs(total))), float(mpmath.sign(total))


@pytest.mark.parametrize(
    "a, b",
    [
        ([500.0, 500.0], [1.0, -0.999999]),
        ([500.0, 500.0 + 1e-13], [-1.0, 1.0]),
        ([-300.0, -300.0, 20.0, 20.5], [1.0, 1.0, 3.0, -1.8]),
        ([1e3, 1e3 - 1e-3, 999.0], [1.0, -1.0, 1e-4]),
        ([7.0, 7.5, 8.0], [1.0, -0.5, -0.5 * np.exp(-0.5)]),
    ],
)
def test_weighted_logsumexp_that_cancels_is_within_4_ulp_of_exact(a, b):
    ref, sign = _exact_weighted_logsumexp(a, b)
    res, sgn = fss.logsumexp(np.array(a), b=np.array(b), return_sign=True)
    assert sgn == sign
    # Tolerance: 4 ULP of the exact result (the inputs as given, a and b unrounded; the sums
    # cancel by up to a factor 1e6 here, which the long double sum absorbs).
    np.testing.assert_array_max_ulp(res, np.float64(ref), maxulp=4)
    if sign > 0:  # without return_sign, the same value
        np.testing.assert_array_max_ulp(fss.logsumexp(np.array(a), b=np.array(b)), np.float64(ref), maxulp=4)


def test_weighted_logsumexp_that_cancels_in_some_groups_only(rng):
    a = rng.normal(0, 50, size=(6, 5))
    b = rng.uniform(0.5, 2, size=(6, 5))
    a[1:4, 1] = a[1:4, 0]  # rows 1-3: two equal terms of nearly opposite weights at the maximum
    a[1:4, [0, 1]] += 400
    b[1:4, 0], b[1:4, 1] = 1.0, -(1 - 10.0 ** -np.arange(5, 8))
    res, sgn = fss.logsumexp(a, axis=1, b=b, return_sign=True)
    for i in range(6):
        ref, sign = _exact_weighted_logsumexp(a[i], b[i])
        assert sgn[i] == sign
        # Tolerance: 4 ULP of the exact result, row by row.
        np.testing.assert_array_max_ulp(res[i], np.float64(ref), maxulp=4)
