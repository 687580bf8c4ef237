"""Shared fixtures, independent NumPy references and tolerance helpers.

Nothing here uses the package to compute an expected value: every reference is
plain NumPy (float64, or np.longdouble, which has a 64-bit mantissa on x86).
"""

import zlib

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs

# Backends this machine can run, as reported by the package itself.
AVAILABLE_BACKENDS = tuple(fs._api.available_backends())

# Preference order used to decide which backend is "the best available".
PREFERENCE_ORDER = ("avx512", "avx2", "scalar", "numpy")

KNOWN_BACKENDS = frozenset(PREFERENCE_ORDER)

# Worked example from the specification.
WORKED_EXAMPLE_X = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0]
WORKED_EXAMPLE_Y = [
    0.02364054,
    0.06426166,
    0.1746813,
    0.474833,
    0.02364054,
    0.06426166,
    0.1746813,
]

# Output values at or below these thresholds are compared with an absolute
# tolerance instead of in ULPs (they may be subnormal or flushed to zero).
TINY_F32 = 1e-30
ATOL_TINY_F32 = 1e-37  # ~8.5x the smallest normal float32 (1.18e-38)
TINY_F64 = 1e-300
ATOL_TINY_F64 = 2e-307  # ~9x the smallest normal float64 (2.2e-308)


def best_backend(available=AVAILABLE_BACKENDS):
    """The backend the package should pick when nothing is forced."""
    for name in PREFERENCE_ORDER:
        if name in available:
            return name
    raise AssertionError(f"no known backend in {available!r}")


class OneStepDeclining:
    """The compiled module with the one-step entries (``forward_plain`` and its siblings)
    declining every call, so that a plain call goes through the Python layer."""

    def __init__(self, core):
        self._core = core

    def __getattr__(self, name):
        if name.endswith("_plain"):
            return lambda *args, **kwargs: None
        return getattr(self._core, name)


@pytest.fixture(params=AVAILABLE_BACKENDS)
def backend(request):
    """Force every available backend in turn for the duration of one test."""
    name = request.param
    with fs._api.use_backend(name):
        # Sanity check of the forcing mechanism itself: the active path must
        # be exactly the one requested.
        assert fs.backend() == name
        yield name


@pytest.fixture
def rng(request):
    """A deterministic generator, seeded from the test's node id so that tests
    are independent of each other and of execution order."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ----------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------


def ref_softmax(x, axis=-1, dtype=np.float64):
    """Plain NumPy softmax computed entirely in ``dtype``."""
    xr = np.asarray(x).astype(dtype)
    e = np.exp(xr - xr.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ref_softmax_ld(x, axis=-1):
    """Softmax computed in np.longdouble (64-bit mantissa on x86)."""
    return ref_softmax(x, axis=axis, dtype=np.longdouble)


def ref_softmax_backward_ld(grad, y, axis=-1):
    """dx = y * (grad - sum(grad * y, axis)), computed in np.longdouble."""
    g = np.asarray(grad).astype(np.longdouble)
    yl = np.asarray(y).astype(np.longdouble)
    return yl * (g - (g * yl).sum(axis=axis, keepdims=True))


# ----------------------------------------------------------------------------
# Assertion helpers (tolerances are stated next to each comparison)
# ----------------------------------------------------------------------------


def assert_softmax_matches_reference(actual, x, axis=-1):
    """Check ``actual`` (the package's softmax of ``x`` along ``axis``) against
    an independent reference, with the dtype-specific tolerance."""
    x = np.asarray(x)
    actual = np.asarray(actual)
    assert actual.shape == x.shape, (actual.shape, x.shape)

    if x.dtype == np.float32:
        assert actual.dtype == np.float32
        ref = ref_softmax(x, axis, np.float64)
        ref32 = ref.astype(np.float32)
        big = ref > TINY_F32
        # Tolerance: at most 4 ULP (float32) vs the float64 reference rounded
        # to float32, wherever the reference is > 1e-30.
        npt.assert_array_max_ulp(actual[big], ref32[big], maxulp=4)
        # Tiny / subnormal outputs: absolute tolerance 1e-37.
        npt.assert_allclose(actual[~big], ref32[~big], rtol=0, atol=ATOL_TINY_F32)
    elif x.dtype == np.float16:
        assert actual.dtype == np.float16
        ref16 = ref_softmax(x, axis, np.float64).astype(np.float16)
        # Tolerance: at most 1 ULP (float16) vs float16(float64 reference).
        npt.assert_array_max_ulp(actual, ref16, maxulp=1)
    else:
        # float64 and everything that promotes to float64 (ints, bool).
        assert actual.dtype == np.float64
        ref = ref_softmax_ld(x, axis)
        ref64 = ref.astype(np.float64)
        big = ref > TINY_F64
        # Tolerance: at most 4 ULP (float64) vs the longdouble reference
        # rounded to float64, wherever the reference is > 1e-300.
        npt.assert_array_max_ulp(actual[big], ref64[big], maxulp=4)
        # Tiny / subnormal outputs: absolute tolerance 2e-307.
        npt.assert_allclose(actual[~big], ref64[~big], rtol=0, atol=ATOL_TINY_F64)


def assert_backward_matches_reference(actual, grad, y, axis=-1):
    """Check the package's softmax_backward against the longdouble reference.

    Tolerance (a forward-error bound for y * (g - sum(g*y))):
        |actual - ref| <= (n + 4) * eps(dtype) * y * (|g| + sum(|g| * y))
                          + tiny absolute slack
    where n is the length of the reduced axis.  The (n + 4) factor covers a
    sequential n-term dot product plus the subtraction and the product.
    """
    grad = np.asarray(grad)
    y = np.asarray(y)
    actual = np.asarray(actual)
    assert actual.shape == grad.shape, (actual.shape, grad.shape)
    assert actual.dtype == grad.dtype, (actual.dtype, grad.dtype)
    eps = np.finfo(grad.dtype).eps
    tiny = np.finfo(grad.dtype).smallest_normal
    n = grad.shape[axis]
    ref = ref_softmax_backward_ld(grad, y, axis)
    gl = np.abs(grad.astype(np.longdouble))
    yl = y.astype(np.longdouble)
    scale = yl * (gl + (gl * yl).sum(axis=axis, keepdims=True))
    bound = (n + 4) * eps * scale + 16 * tiny
    err = np.abs(actual.astype(np.longdouble) - ref)
    bad = ~(err <= bound)
    assert not bad.any(), (
        f"{int(bad.sum())} element(s) exceed the error bound; "
        f"max err/bound = {float(np.max(err / bound))}"
    )


def rows_with_s_near_1(rng, rows, n, s_minus_1):
    """float32 rows of n entries whose softmax normaliser S (relative to the largest entry,
    entry 0) is 1 + s_minus_1 (one value a row), the largest entry's log_softmax -log1p(S - 1)
    then that small; returns the rows and that output in long double."""
    m = rng.uniform(-30, 30, rows)
    x = np.empty((rows, n))
    x[:, 0] = m
    x[:, 1:] = (m + np.log(s_minus_1 / (n - 1)))[:, None] + rng.normal(0, 1e-3, (rows, n - 1))
    x = x.astype(np.float32)
    z = x.astype(np.longdouble)
    return x, -np.log1p(np.exp(z[:, 1:] - z[:, :1]).sum(axis=1))
