"""Rows of more than 64 entries and up to 16 KB go through the kernels in batches of 8
(softmax, log_softmax, logsumexp, cross_entropy): the first passes of every row of a batch,
then what closes each (the normaliser, the logarithm, the output pass). The backward passes
take rows of more than one vector likewise (their sums first; batches of 8 rows up to 1 KB, of
one row beyond). Each row must come out exactly as it does alone (a single row is never
batched), whatever its place in a batch, the rows around it, the thread count and the
remainder of rows past the last whole batch.
"""

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs

FUNCTIONS = {
    "softmax": lambda x, **kw: fs.softmax(x, axis=-1, **kw),
    "log_softmax": lambda x, **kw: fs.log_softmax(x, axis=-1, **kw),
    "logsumexp": lambda x, **kw: fs.logsumexp(x, axis=-1, **kw),
}
# Both sides of each limit: the short rows (up to 64 entries, taken a group at a time, not
# compared here), the stored softmax's batch limit (1 KB) and the batch limit (16 KB).
ROW_LENGTHS = [65, 100, 128, 129, 256, 257, 1000, 2048, 2049, 4096, 4097]
# 8 rows per batch: 5 rows (one partial batch), 8, 21 (two whole batches and 5).
ROW_COUNTS = [5, 8, 21]


def _specials(x, rng):
    """A NaN row, a row with +inf, a row of only -inf and a row with huge values among
    normal ones (where the rows exist)."""
    x = x.copy()
    rows = x.shape[0]
    if rows > 1:
        x[1, rng.integers(x.shape[1])] = np.nan
    if rows > 2:
        x[2, rng.integers(x.shape[1])] = np.inf
    if rows > 3:
        x[3, :] = -np.inf
    if rows > 4:
        x[4, : x.shape[1] // 2] = np.finfo(x.dtype).max / 2
    return x


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", ROW_LENGTHS)
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_each_row_of_a_batch_is_bitwise_the_row_taken_alone(backend, name, dtype, n, rows, rng):
    fn = FUNCTIONS[name]
    x = _specials(rng.normal(0, 3, size=(rows, n)).astype(dtype), rng)
    with np.errstate(invalid="ignore", over="ignore"):
        together = fn(x)
        alone = np.stack([fn(x[i]) for i in range(rows)])
    # Exact: the same kernels on the same row, NaN where the row has NaN.
    npt.assert_array_equal(together, alone)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_batched_rows_are_bitwise_identical_on_one_and_two_threads(backend, name, rng):
    fn = FUNCTIONS[name]
    x = rng.normal(0, 3, size=(4099, 200)).astype(np.float32)
    # Exact: batches are fixed by row index.
    npt.assert_array_equal(fn(x, threads=1), fn(x, threads=2))


def _sixteen_bit_formats():
    """float16, and bfloat16 where ml_dtypes is installed."""
    try:
        import ml_dtypes
    except ImportError:
        return [np.float16]
    return [np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("n", [65, 256, 257, 4097])
def test_16_bit_rows_into_float32_are_bitwise_the_row_taken_alone(backend, name, n, rng):
    fn = FUNCTIONS[name]
    for fmt in _sixteen_bit_formats():
        x = rng.normal(0, 3, size=(21, n)).astype(fmt)
        together = fn(x, dtype=np.float32)
        alone = np.stack([fn(x[i], dtype=np.float32) for i in range(x.shape[0])])
        # Exact: the same kernels on the same row.
        npt.assert_array_equal(together, alone)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("n", [65, 256, 257, 1000, 4097])
def test_16_bit_rows_kept_in_16_bits_are_bitwise_the_row_taken_alone(backend, name, n, rng):
    """16-bit output: the batched rows go through the row statistics and the output pass,
    as a row alone does (the softmax's statistics without the ties counted apart, both ways)."""
    fn = FUNCTIONS[name]
    for fmt in _sixteen_bit_formats():
        x = rng.normal(0, 3, size=(45, n)).astype(fmt)
        together = fn(x)
        alone = np.stack([fn(x[i]) for i in range(x.shape[0])])
        assert together.dtype == alone.dtype == fmt
        # Exact: the same kernels on the same row.
        npt.assert_array_equal(together.astype(np.float32), alone.astype(np.float32))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_batched_rows_in_place(backend, name, rng):
    fn = FUNCTIONS[name]
    x = rng.normal(0, 3, size=(13, 300)).astype(np.float32)
    expected = fn(x)
    y = x.copy()
    fn(y, out=y)
    # Exact: the same computation, the output written over its input row by row.
    npt.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [65, 257, 4096, 4097])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"weight": True}, {"probabilities": True}])
def test_cross_entropy_of_each_row_of_a_batch_is_bitwise_the_row_taken_alone(backend, dtype, n, options, rng):
    rows = 21
    x = _specials(rng.normal(0, 3, size=(rows, n)).astype(dtype), rng)
    kw = {"reduction": "none", "return_grad": True}
    if options.get("probabilities"):
        t = rng.dirichlet(np.ones(n), size=rows).astype(dtype)
    else:
        t = rng.integers(0, n, size=rows)
        t[6] = -100  # an ignored row inside a batch
        kw["label_smoothing"] = options.get("label_smoothing", 0.0)
        if options.get("weight"):
            kw["weight"] = rng.uniform(0.5, 2, size=n).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        loss, grad = fs.cross_entropy(x, t, **kw)
        alone = [fs.cross_entropy(x[i : i + 1], t[i : i + 1], **kw) for i in range(rows)]
    # Exact: the same kernels on the same row (a batch of one row), NaN where the row has NaN.
    npt.assert_array_equal(loss, np.concatenate([a[0] for a in alone]))
    npt.assert_array_equal(grad, np.concatenate([a[1] for a in alone]))


BACKWARD = {
    "softmax_backward": lambda g, y, **kw: fs.softmax_backward(g, y, axis=-1, **kw),
    "log_softmax_backward": lambda g, y, **kw: fs.log_softmax_backward(g, y, axis=-1, **kw),
}


def _backward_rows(name, dtype, rows, n, rng):
    """Gradients and outputs of `rows` rows, with special rows where they exist: NaN and inf
    in the gradient, a sum beyond the dtype's range whose gradient is finite (kept scaled),
    two huge entries one float32 vector apart (a pair that overflows in the working type
    although the wide sum does not: the sum is taken again term by term)."""
    x = rng.normal(0, 3, size=(rows, n))
    y = x - x.max(axis=1, keepdims=True)
    y = y - np.log(np.exp(y).sum(axis=1, keepdims=True))
    if name == "softmax_backward":
        y = np.exp(y)
    g = rng.normal(0, 1, size=(rows, n)).astype(dtype)
    y = y.astype(dtype)
    big = np.finfo(dtype).max
    if rows > 1:
        g[1, rng.integers(n)] = np.nan
    if rows > 2:
        g[2, rng.integers(n)] = np.inf
    if rows > 3:  # sum(g * y) or sum(g) beyond the range, the gradient finite
        g[3, :] = big * 0.9
        if name == "softmax_backward":
            y[3, :] = 1.0 / n
            y[3, :2] = 0.5
    if rows > 4:
        g[4, :] = 0
        g[4, 0] = g[4, 16] = -big * 0.9
        if name == "log_softmax_backward":
            y[4, :] = -np.inf
            y[4, 0] = 0.0
    return g, y


@pytest.mark.parametrize("name", sorted(BACKWARD))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [33, 40, 64, 65, 256, 257, 1000, 4096, 4097])
@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_each_backward_row_of_a_batch_is_bitwise_the_row_taken_alone(backend, name, dtype, n, rows, rng):
    fn = BACKWARD[name]
    g, y = _backward_rows(name, dtype, rows, n, rng)
    with np.errstate(invalid="ignore", over="ignore"):
        together = fn(g, y)
        alone = np.stack([fn(g[i], y[i]) for i in range(rows)])
    # Exact: the same kernels on the same row, NaN where the row has NaN.
    npt.assert_array_equal(together, alone)
    # Rows whose exact gradient is finite though their sum is not: as the NumPy backend
    # gives them (softmax rows 3 and 4, log_softmax row 4).
    if rows > 4:
        special = [3, 4] if name == "softmax_backward" else [4]
        with fs._api.use_backend("numpy"):
            expected = fn(g[special], y[special])
        assert np.isfinite(expected).all()
        # the sum rounded to the dtype (2^-24 or 2^-53 of it), the difference up to 2x smaller
        npt.assert_allclose(together[special], expected, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("name", sorted(BACKWARD))
@pytest.mark.parametrize("n", [40, 200, 3000])
def test_batched_backward_rows_are_bitwise_identical_on_one_and_two_threads(backend, name, n, rng):
    g, y = _backward_rows(name, np.float32, 4099, n, rng)
    fn = BACKWARD[name]
    with np.errstate(invalid="ignore", over="ignore"):
        # Exact: batches are fixed by row index.
        npt.assert_array_equal(fn(g, y, threads=1), fn(g, y, threads=2))
