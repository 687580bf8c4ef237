"""Slices over a non-last axis taken in pieces of their columns: the slices of few outer indices
(softmax over the first axis: one) are shared by the threads, and wide slices go in pieces
that stay in cache. Each column is computed as in a whole slice, so results are the same
whatever the pieces and the threads.

Shapes (float32; float64 pieces have half the columns): (100, 5000) over axis 0 takes the
stored path in pieces of 1024 columns; (300, 5000) the two-pass path in pieces of 1024;
(300, 1500) pieces of 1024 + 476 on one thread, 752 + 748 on two; (2000, 640) one whole
slice on one thread, two pieces of 320 on two; (2, 300, 3000) over axis 1 pieces of two
slices; (6000, 200) one whole slice on one thread, pieces of 112 + 88 on two (the slice of a
single outer index, of lines of more than 128 columns, never goes as one run); (4000, 136)
one slice on one thread, 80 + 56 on two. Slices of a single outer index with lines of up to 128
columns that are not a whole number of vectors go as one run of vectors (FlatRun) in spans of
about 128K entries, which the threads share: (5000, 49) over axis 0 (float32: stored path, two
spans; float64: two-pass), (6000, 49) (two-pass, three spans) and (1, 3000, 51) over axis 1
(float32 stored, float64 two-pass; two spans). So do single slices of lines of whole vectors up
to 64 columns that make more than one span: (10000, 32) over axis 0 (two-pass, three spans) and
(1, 9000, 16) over axis 1 (float32 stored; two spans).

References: bitwise, the same function on a contiguous copy of a block of columns (taken as
one whole slice on the same path) and the same call on one thread; within tolerance, float64
NumPy for float32 inputs and np.longdouble for float64 inputs.
"""

import numpy as np
import numpy.testing as npt
import pytest
from conftest import assert_backward_matches_reference

import fastsoftmax as fs

FORWARD = ["softmax", "log_softmax", "logsumexp"]
BACKWARD = ["softmax_backward", "log_softmax_backward"]
SHAPES = [
    ((100, 5000), 0),
    ((300, 5000), 0),
    ((300, 1500), 0),
    ((2000, 640), 0),
    ((2, 300, 3000), 1),
    ((6000, 200), 0),
    ((4000, 136), 0),
    ((5000, 49), 0),
    ((6000, 49), 0),
    ((1, 3000, 51), 1),
    ((10000, 32), 0),
    ((1, 9000, 16), 1),
]


def _inputs(rng, shape, dtype):
    # Columns of different offsets and spreads: each column has its own maximum and sum.
    cols = shape[-1]
    x = rng.normal(0, 3, size=shape) * rng.uniform(0.2, 3, size=cols) + rng.normal(0, 20, size=cols)
    return x.astype(dtype)


def _call(name, x, axis, rng=None, **kw):
    if name in FORWARD:
        return getattr(fs, name)(x, axis=axis, **kw)
    y = (fs.softmax if name == "softmax_backward" else fs.log_softmax)(x, axis=axis)
    g = np.cos(x * 7).astype(x.dtype)  # a gradient that depends on the entry alone
    return getattr(fs, name)(g, y, axis=axis, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(100, 5000), (300, 5000)])
@pytest.mark.parametrize("name", FORWARD + BACKWARD)
def test_pieces_match_a_block_of_columns_taken_whole(backend, dtype, shape, name, rng):
    x = _inputs(rng, shape, dtype)
    got = _call(name, x, 0)
    # Columns 1000 to 2203: across pieces, not aligned with them; 1203 columns are not a whole
    # number of vectors nor a run of FlatRun, and the block takes the same path as the whole
    # (stored for 100 lines, two-pass for 300).
    block = np.ascontiguousarray(x[:, 1000:2203])
    want = _call(name, block, 0)
    # Exact: each column's computation does not depend on the columns beside it.
    npt.assert_array_equal(got[..., 1000:2203], want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", SHAPES)
@pytest.mark.parametrize("name", FORWARD + BACKWARD)
def test_pieces_bitwise_identical_on_one_and_two_threads(backend, dtype, shape, axis, name, rng):
    x = _inputs(rng, shape, dtype)
    # Exact: the pieces differ with the threads (two of the shapes), the results do not.
    npt.assert_array_equal(_call(name, x, axis, threads=1), _call(name, x, axis, threads=2))


def _ref_log_softmax(x, axis):
    z = x.astype(np.longdouble)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", SHAPES)
def test_pieces_within_the_accuracy_bounds(backend, dtype, shape, axis, rng):
    x = _inputs(rng, shape, dtype)
    z = x.astype(np.longdouble)
    ref = np.exp(_ref_log_softmax(x, axis))
    y = fs.softmax(x, axis=axis, threads=2)
    normal = ref > np.finfo(dtype).tiny
    ulp = np.abs(y.astype(np.longdouble) - ref) / np.spacing(np.abs(ref.astype(dtype))).astype(np.longdouble)
    # Tolerance: 2 ULP over outputs in the normal range; below it, the smallest normal number.
    assert ulp[normal].max() <= 2.0
    npt.assert_allclose(y[~normal], ref[~normal].astype(dtype), rtol=0, atol=np.finfo(dtype).tiny)
    lref = _ref_log_softmax(x, axis)
    ly = fs.log_softmax(x, axis=axis, threads=2).astype(np.longdouble)
    # Tolerance: max(2 ULP of the output, 1e-7 for float32 / 2e-16 for float64) absolutely.
    floor = 1e-7 if dtype == np.float32 else 2e-16
    bound = np.maximum(2 * np.spacing(np.abs(lref).astype(dtype)).astype(np.longdouble), floor)
    assert (np.abs(ly - lref) <= bound).all()
    m = z.max(axis=axis, keepdims=True)
    lse_ref = np.squeeze(m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True)), axis)
    lse = fs.logsumexp(x, axis=axis, threads=2).astype(np.longdouble)
    # Tolerance: 2 ULP of the result (all far from 0 here) or the same absolute floor.
    lb = np.maximum(2 * np.spacing(np.abs(lse_ref).astype(dtype)).astype(np.longdouble), floor)
    assert (np.abs(lse - lse_ref) <= lb).all()
    g = np.cos(x * 7).astype(dtype)
    # Tolerance: the forward-error bound of assert_backward_matches_reference.
    assert_backward_matches_reference(fs.softmax_backward(g, y, axis=axis, threads=2), g, y, axis=axis)


@pytest.mark.parametrize("shape", [(100, 5000), (300, 5000)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "softmax_backward"])
def test_pieces_with_where_and_beta_match_a_block_taken_whole(backend, shape, name, rng):
    x = _inputs(rng, shape, np.float32)
    where = rng.random(shape) < 0.7
    where[:, 1500] = False  # a column with nothing selected
    got = _call(name, x, 0, where=where, beta=0.6)
    want = _call(name, np.ascontiguousarray(x[:, 1000:2203]), 0, where=np.ascontiguousarray(where[:, 1000:2203]),
                 beta=0.6)
    # Exact, as above.
    npt.assert_array_equal(got[..., 1000:2203], want)


@pytest.mark.parametrize("shape", [(100, 5000), (300, 5000)])
def test_special_columns_in_pieces(backend, shape, rng):
    x = _inputs(rng, shape, np.float32)
    x[7, 1100] = np.inf  # two +inf entries share a column's mass
    x[9, 1100] = np.inf
    x[3, 2100] = np.nan
    x[:, 3000] = -np.inf
    y = fs.softmax(x, axis=0, threads=2)
    col = np.zeros(shape[0], np.float32)
    col[[7, 9]] = 0.5
    # Exact: 1/2 at each +inf, 0 elsewhere; NaN through the column holding one; all -inf: NaN.
    npt.assert_array_equal(y[:, 1100], col)
    assert np.isnan(y[:, 2100]).all() and np.isnan(y[:, 3000]).all()
    # The other columns of those pieces are as a block of them taken whole.
    keep = np.setdiff1d(np.arange(1000, 2203), [1100, 2100])
    want = fs.softmax(np.ascontiguousarray(x[:, keep]), axis=0)
    npt.assert_array_equal(y[:, keep], want)


@pytest.mark.parametrize("shape, axis", [((0, 33, 9, 9), 1), ((5, 0), 0), ((0, 5), 0), ((3, 0, 4000), 1)])
@pytest.mark.parametrize("name", FORWARD + BACKWARD)
def test_empty_slices_on_two_threads(backend, shape, axis, name):
    x = np.ones(shape, np.float32)
    got = _call(name, x, axis, threads=2)
    want_shape = shape[:axis] + shape[axis + 1 :] if name == "logsumexp" else shape
    assert got.shape == want_shape
    if name == "logsumexp":
        # Exact: the logsumexp of nothing is -inf.
        assert (got == -np.inf).all()


@pytest.mark.parametrize("shape", [(300, 1500), (2000, 640), (100, 1500)])
@pytest.mark.parametrize("name", FORWARD)
def test_a_column_holding_inf_changes_no_other_column_whatever_the_threads(backend, shape, name, rng):
    x = _inputs(rng, shape, np.float32)
    x[5, 300] = np.inf  # in the first piece on one thread and on two
    x[6, 400] = np.nan
    one, two = _call(name, x, 0, threads=1), _call(name, x, 0, threads=2)
    # Exact: the pieces differ with the threads, the results do not.
    npt.assert_array_equal(one, two)
    clean = x.copy()
    clean[:, [300, 400]] = 0
    others = np.setdiff1d(np.arange(shape[1]), [300, 400])
    # Exact: the other columns are as they are without those two.
    npt.assert_array_equal(one[..., others], _call(name, clean, 0, threads=1)[..., others])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(100, 1500), (300, 1500), (3, 50, 130)])  # stored, two-pass, slices of 130
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("masked", [False, True])
def test_in_place_with_a_column_holding_inf(backend, dtype, shape, name, masked, rng):
    x = _inputs(rng, shape, dtype)
    axis = len(shape) - 2
    x[..., 5, 7] = np.inf
    x[..., 9, 7] = np.inf
    x[..., 2, 11] = np.nan
    where = rng.random(shape) < 0.8 if masked else None
    if masked:
        where[..., [5, 9], 7] = True
    f = getattr(fs, name)
    want = f(x, axis=axis, where=where)
    y = x.copy()
    got = f(y, axis=axis, where=where, out=y)
    assert got is y
    # Exact: in place as into a new array (each column's input read before its output is written).
    npt.assert_array_equal(y, want)
    expect = np.where(np.isin(np.arange(shape[-2]), [5, 9]), 0.5, 0.0)
    if name == "log_softmax":
        with np.errstate(divide="ignore"):
            expect = np.log(expect)
    # Exact: the two +inf entries share the column's mass.
    npt.assert_array_equal(y[..., 7], np.broadcast_to(expect.astype(y.dtype), y[..., 7].shape))


@pytest.mark.parametrize("shape", [(300, 5000), (100, 5000), (300, 1500)])
@pytest.mark.parametrize("name", FORWARD)
def test_float16_pieces_match_blocks_and_threads(backend, shape, name, rng):
    # float16 input: pieces of twice the columns (runs counted in the input's bytes).
    x = _inputs(rng, shape, np.float16)
    one = _call(name, x, 0, threads=1)
    # Exact: the pieces differ with the threads, the results do not.
    npt.assert_array_equal(one, _call(name, x, 0, threads=2))
    # Exact: a block of columns taken whole, on the same path (as above; float16 input always
    # takes the two-pass path).
    end = min(2203, shape[1] - 97)
    npt.assert_array_equal(one[..., 1000:end], _call(name, np.ascontiguousarray(x[:, 1000:end]), 0))
