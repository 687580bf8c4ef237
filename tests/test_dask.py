"""fastsoftmax.dask: softmax, log_softmax and logsumexp of dask arrays (#7).

The dask results are compared with the in-memory functions (fs.softmax, ...) on the same
data: within 2 ULP (float32 or float64 spacing), outputs below float32's smallest normal
compared with an absolute tolerance of that size; NaN and +-inf must sit in the same places.
The data are normal deviates along axes of hundreds of entries, so that no softmax,
log_softmax or logsumexp result lies near 0 (where x - logsumexp cancels and a ULP of the
result is far below the precision of the normaliser).

The cluster tests run on a dask.distributed LocalCluster with two worker processes of one
thread each and a 1.5 GB memory limit per worker, shared by the module. The large test
reduces a (4, 40M) float32 array (640 MB, made inside the workers in 80 MB chunks) and
checks a sample of the output against values computed here in float64 from the same slice.
"""

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import numpy.testing as npt
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastsoftmax as fs  # noqa: E402
import fastsoftmax.dask as fsd  # noqa: E402

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

TINY = np.finfo(np.float32).tiny

FUNCS = {
    "softmax": (fsd.softmax, fs.softmax),
    "log_softmax": (fsd.log_softmax, fs.log_softmax),
    "logsumexp": (fsd.logsumexp, fs.logsumexp),
}


def assert_matches(actual, expected, maxulp=2):
    """Same dtype, shape and special values; finite values within ``maxulp`` ULP, those
    below float32's smallest normal (in magnitude) within an absolute TINY."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    assert np.isfinite(actual[finite]).all()
    big = finite & (np.abs(expected) >= TINY)
    np.testing.assert_array_max_ulp(actual[big], expected[big], maxulp=maxulp)
    small = finite & ~big
    np.testing.assert_allclose(actual[small], expected[small], rtol=0, atol=TINY)


def normal(shape, dtype, seed, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def key_names(arr):
    return {k[0] if isinstance(k, tuple) else str(k) for k in arr.__dask_graph__().keys()}


def no_rechunk(arr):
    return not any("rechunk" in name for name in key_names(arr))


# ---------------------------------------------------------------------------------------
# Importing


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_fastsoftmax_does_not_import_dask():
    r = _run(
        """
        import sys, fastsoftmax
        assert not [m for m in sys.modules if m == "dask" or m.startswith("dask.")], "dask imported"
        print("ok")
        """
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_import_without_dask_says_how_to_install():
    r = _run(
        """
        import sys
        sys.modules["dask"] = None  # as if dask were not installed
        sys.modules["dask.array"] = None
        try:
            import fastsoftmax.dask
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    assert r.returncode == 0, r.stderr
    assert 'pip install "fastsoftmax[dask]"' in r.stdout, r.stdout


def test_docstring_examples_print_what_they_show():
    import doctest

    with np.printoptions(legacy=False):
        result = doctest.testmod(fsd, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted >= 5
    assert result.failed == 0


# ---------------------------------------------------------------------------------------
# Threaded scheduler: the axis split across chunks


@pytest.mark.parametrize("func", sorted(FUNCS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, chunks, axis",
    [
        ((7, 1000), (3, 128), -1),  # 8 chunks along the axis, ragged last one
        ((7, 1000), (3, 128), 1),
        ((300, 11), (64, 4), 0),  # inner axis: the reductions run across rows
        ((3, 500, 5), (2, 64, 3), 1),  # a middle axis
        ((7, 1000), (3, 1000), -1),  # the axis in one chunk (both passes in one task)
    ],
)
@pytest.mark.parametrize("split_every", [None, 2])
def test_matches_in_memory(func, dtype, shape, chunks, axis, split_every):
    xn = normal(shape, dtype, seed=len(shape) * 10 + axis % len(shape))
    x = da.from_array(xn, chunks=chunks)
    dfn, mfn = FUNCS[func]
    y = dfn(x, axis=axis, split_every=split_every)
    assert isinstance(y, da.Array)
    assert no_rechunk(y)
    if func != "logsumexp":
        assert y.chunks == x.chunks
    assert_matches(y.compute(scheduler="threads"), mfn(xn, axis=axis))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_logsumexp_keepdims(dtype, axis):
    xn = normal((200, 300), dtype, seed=axis + 5)
    x = da.from_array(xn, chunks=(64, 70))
    y = fsd.logsumexp(x, axis=axis, keepdims=True)
    expected = fs.logsumexp(xn, axis=axis, keepdims=True)
    assert y.shape == expected.shape
    assert_matches(y.compute(scheduler="threads"), expected)


def test_tree_reduction_is_used():
    x = da.from_array(normal((4, 1600), np.float32, 1), chunks=(4, 100))  # 16 chunks
    names = key_names(fsd.softmax(x, split_every=2))
    assert sum("partial" in n for n in names) >= 2, names  # combine steps of the tree
    assert_matches(fsd.softmax(x, split_every=2).compute(), fs.softmax(x.compute()))
    assert_matches(fsd.softmax(x, split_every={1: 3}).compute(), fs.softmax(x.compute()))


def test_special_values_across_chunks():
    inf, nan = np.inf, np.nan
    rows = np.full((9, 12), -1.0, np.float32)
    rows[:, ::3] = 2.0
    rows[0, 1] = inf  # +inf in one chunk: it takes the mass
    rows[1, [1, 10]] = inf  # +inf in two chunks: they share it
    rows[2, 5] = nan  # NaN in one chunk: NaN throughout
    rows[3] = -inf  # all -inf: softmax NaN, logsumexp -inf
    rows[4, :8] = -inf  # some chunks all -inf
    rows[5, 0], rows[5, 11] = 3e38, -3e38  # large values do not overflow
    rows[6] = np.arange(12) * 10.0  # the maximum in the last chunk only
    rows[7, 4] = inf
    rows[7, 9] = nan  # +inf and NaN: NaN
    rows[8, :] = 0.0
    rows[8, 11] = -inf
    x = da.from_array(rows, chunks=(4, 4))
    for name, (dfn, mfn) in FUNCS.items():
        assert_matches(dfn(x, axis=1).compute(), mfn(rows, axis=1))
        assert_matches(dfn(x.T, axis=0).compute(), mfn(rows.T, axis=0))
    assert fsd.logsumexp(x, axis=1)[3].compute() == -np.inf


@pytest.mark.parametrize(
    "dtype, result",
    [(np.int32, np.float64), (np.uint8, np.float64), (np.bool_, np.float64), (np.float16, np.float16)],
)
def test_dtype_rules(dtype, result):
    xn = (np.random.default_rng(3).integers(0, 5, (6, 40))).astype(dtype)
    x = da.from_array(xn, chunks=(3, 7))
    for name, (dfn, mfn) in FUNCS.items():
        y = dfn(x, axis=-1)
        assert y.dtype == result, name
        # float16 is computed in float32 and rounded once, as in memory: the float32 values
        # may straddle a float16 rounding boundary, hence 1 ULP.
        assert_matches(y.compute(), mfn(xn, axis=-1), maxulp=1 if dtype == np.float16 else 2)


@pytest.mark.parametrize("beta", [-0.5, 0.0, 3.0])
def test_beta(beta):
    xn = normal((5, 400), np.float64, seed=9, scale=1.0)
    x = da.from_array(xn, chunks=(2, 90))
    for name, (dfn, mfn) in FUNCS.items():
        assert_matches(dfn(x, beta=beta).compute(), mfn(xn, beta=beta))


def test_numpy_input_scalar_and_empty():
    xn = normal((3, 50), np.float64, seed=2)
    assert_matches(fsd.softmax(xn).compute(), fs.softmax(xn))  # wrapped with da.asarray
    s = da.from_array(np.float32(2.5))
    assert fsd.softmax(s).shape == () and fsd.softmax(s).compute() == np.float32(1)
    assert fsd.log_softmax(s).compute() == 0
    assert fsd.logsumexp(s, keepdims=True).compute() == np.float32(2.5)
    e = da.zeros((3, 0), chunks=(2, 1), dtype=np.float32)
    assert fsd.softmax(e).compute().shape == (3, 0)
    np.testing.assert_array_equal(fsd.logsumexp(e).compute(), np.full(3, -np.inf, np.float32))
    z = da.zeros((0, 4), chunks=(1, 2), dtype=np.float64)
    assert fsd.logsumexp(z).compute().shape == (0,)
    assert fsd.softmax(z, axis=0).compute().shape == (0, 4)


def test_unpickled_dtype():
    """A dtype that crossed a pickle (as between dask workers) is an equal but distinct
    object, which the kernels reject on their own; the chunk functions pass NumPy's."""
    import pickle

    xn = normal((4, 90), np.float32, seed=6)
    moved = pickle.loads(pickle.dumps(xn))
    assert moved.dtype == np.float32 and moved.dtype is not np.dtype(np.float32)
    x = da.from_array(moved, chunks=(2, 20))
    for name, (dfn, mfn) in FUNCS.items():
        assert_matches(dfn(x).compute(), mfn(xn))
        assert_matches(dfn(da.from_array(moved, chunks=(2, 90))).compute(), mfn(xn))  # one chunk


def test_errors():
    x = da.ones((4, 6), chunks=2)
    with pytest.raises(AxisError):
        fsd.softmax(x, axis=2)
    with pytest.raises(TypeError):
        fsd.softmax(x, axis=1.0)
    with pytest.raises(TypeError):
        fsd.logsumexp(x, axis=(0, 1))
    with pytest.raises(TypeError):
        fsd.softmax(x.astype(np.complex128))
    with pytest.raises(TypeError):
        fsd.softmax("abc")
    if np.dtype(np.longdouble).itemsize > 8:
        with pytest.raises(TypeError):
            fsd.log_softmax(x.astype(np.longdouble))
    with pytest.raises(ValueError):
        fsd.softmax(x, beta=np.inf)
    with pytest.raises(ValueError):
        fsd.logsumexp(x, beta=np.nan)
    with pytest.raises(ValueError):
        fsd.softmax(x, threads=0)
    with pytest.raises(TypeError):
        fsd.logsumexp(x, keepdims=None)


def test_signatures():
    for name, (dfn, mfn) in FUNCS.items():
        params = inspect.signature(dfn).parameters
        assert list(params)[:2] == ["x", "axis"] and params["axis"].default == -1, name
    assert inspect.signature(fsd.logsumexp).parameters["keepdims"].default is False


def test_lazy_until_computed():
    calls = []

    def make(block):
        calls.append(1)
        return block

    x = da.from_array(normal((4, 60), np.float32, 4), chunks=(4, 20)).map_blocks(make)
    calls.clear()  # map_blocks itself calls make on an empty array
    y = fsd.softmax(x)
    assert calls == []
    y.compute(scheduler="sync")
    assert len(calls) == 3  # each chunk once: both passes read the same one


# ---------------------------------------------------------------------------------------
# dask.distributed: worker processes


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="1.5GB",
        dashboard_address=None,
    )
    c = distributed.Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0])
def test_distributed_matches_in_memory(client, dtype, axis):
    xn = normal((40, 600), dtype, seed=7)
    x = da.from_array(xn, chunks=(16, 130))  # split along both axes
    graphs = [fsd.softmax(x, axis=axis), fsd.log_softmax(x, axis=axis), fsd.logsumexp(x, axis=axis),
              fsd.logsumexp(x, axis=axis, keepdims=True)]
    sm, lsm, lse, lse_k = client.compute(graphs, sync=True)
    assert_matches(sm, fs.softmax(xn, axis=axis))
    assert_matches(lsm, fs.log_softmax(xn, axis=axis))
    assert_matches(lse, fs.logsumexp(xn, axis=axis))
    assert_matches(lse_k, fs.logsumexp(xn, axis=axis, keepdims=True))


def test_distributed_special_values_and_dtypes(client):
    xn = normal((6, 90), np.float32, seed=8)
    xn[0, 50] = np.inf
    xn[1, 3] = np.nan
    xn[2] = -np.inf
    x = da.from_array(xn, chunks=(3, 20))
    xi = (xn[3:] * 10).astype(np.int16)
    hn = xn.astype(np.float16)
    sm, lse, ints, half = client.compute(
        [fsd.softmax(x), fsd.logsumexp(x), fsd.softmax(da.from_array(xi, chunks=(2, 25))),
         fsd.log_softmax(da.from_array(hn, chunks=(3, 20)), axis=0)],
        sync=True,
    )
    assert_matches(sm, fs.softmax(xn))
    assert_matches(lse, fs.logsumexp(xn))
    assert_matches(ints, fs.softmax(xi))
    assert_matches(half, fs.log_softmax(hn, axis=0), maxulp=1)


def _ref_partial(block):
    """Independent reference, per chunk: (max, sum exp(x - max)) of each row in float64,
    in column slices so that the float64 temporaries stay small."""
    m = block.max(axis=1).astype(np.float64)
    s = np.zeros(block.shape[0])
    for j in range(0, block.shape[1], 1 << 20):
        s += np.exp(block[:, j : j + (1 << 20)].astype(np.float64) - m[:, None]).sum(axis=1)
    return np.stack([m, s], axis=1)


def _peak_rss():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux: KiB)


def test_distributed_large_array_split_axis(client):
    """(4, 40M) float32 in (4, 5M) chunks, made inside the workers; never whole in the client."""
    n, step = 40_000_000, 5_000_000
    x = da.random.default_rng(0).standard_normal((4, n), chunks=(4, step), dtype=np.float32)
    # Asked of the workers themselves (the client's scheduler_info is a copy refreshed now and
    # then, which once listed one worker of two here and none after the computation).
    workers = client.run(os.getpid)
    assert len(workers) == 2, workers

    lse = fsd.logsumexp(x, axis=-1)
    y = fsd.softmax(x, axis=-1)
    ly = fsd.log_softmax(x, axis=-1)
    cols = [slice(0, 300), slice(3 * step - 500, 3 * step + 500), slice(n - 300, n)]  # chunk edges
    partials = x.map_blocks(_ref_partial, chunks=((4,), (2,) * (n // step)), dtype=np.float64)
    lse32, total, parts, *samples = client.compute(
        [lse, y.sum(axis=-1, dtype=np.float64), partials] + [a[:, c] for a in (y, ly, x) for c in cols], sync=True
    )
    y_s, ly_s, x_s = (np.concatenate(samples[i : i + len(cols)], axis=1) for i in range(0, 3 * len(cols), len(cols)))

    # Nothing was lost: the same workers, none restarted for memory, each peaking well below
    # its limit (below the 60% at which dask starts spilling; the array is 640 MB, a chunk
    # 80 MB, a fresh worker ~0.1 GB).
    assert client.run(os.getpid) == workers
    peaks = client.run(_peak_rss)
    print("peak RSS of the workers (GB):", sorted(round(p / 1e9, 2) for p in peaks.values()))
    assert max(peaks.values()) < 0.9e9, peaks

    # Reference logsumexp per row in long double from the float64 per-chunk partials.
    m = parts[:, 0::2].astype(np.longdouble)
    big = m.max(axis=1, keepdims=True)
    ref_lse = big[:, 0] + np.log((parts[:, 1::2] * np.exp(m - big)).sum(axis=1))
    assert_matches(lse32, ref_lse.astype(np.float32))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)

    xs = x_s.astype(np.longdouble)
    assert_matches(y_s, np.exp(xs - ref_lse[:, None]).astype(np.float32))
    assert_matches(ly_s, (xs - ref_lse[:, None]).astype(np.float32))


@pytest.mark.parametrize("chunks", [1, 2])  # the axis split (merged records) or whole (fused)
def test_results_rounding_to_inf_in_float16_raise_no_cast_warning(chunks):
    import warnings

    x = da.from_array(np.float16([6e4, -6e4]), chunks=chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fsd.log_softmax(x).compute(scheduler="sync")
        lse = fsd.logsumexp(da.from_array(np.float16([6e4, 6e4]), chunks=chunks)).compute(scheduler="sync")
    # Exact: log_softmax = (0, -1.2e5) rounds to (0, -inf) in float16; logsumexp
    # 6e4 + log 2 rounds to 6e4.
    np.testing.assert_array_equal(y, np.float16([0.0, -np.inf]))
    assert lse == np.float16(6e4)


@pytest.mark.parametrize("dtype, beta", [(np.float32, 1e39), (np.float32, -2e-39), (np.float64, 2e-309)])
@pytest.mark.parametrize("chunks", [(2, 37), (2, 10)])
def test_beta_beyond_the_compute_dtype_matches_in_memory_on_the_product(dtype, beta, chunks):
    rng = np.random.default_rng(7)
    top = 1.0 if abs(beta) >= 1 else min(float(np.finfo(dtype).max) / 2, 2.0 / abs(beta))
    x = (rng.uniform(-1, 1, size=(4, 37)) * top).astype(dtype)
    x[0, :5] = 0
    wide = np.longdouble if dtype == np.float64 else np.float64
    with np.errstate(over="ignore"):
        z = (x.astype(wide) * wide(beta)).astype(dtype)  # the product rounded once
    d = da.from_array(x, chunks=chunks)
    for name in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(fsd, name)(d, beta=beta).compute()
        want = getattr(fs, name)(z)
        assert not np.isnan(got).any()
        # Tolerance: 2 ULP of the in-memory result on the product (the module's bound).
        npt.assert_array_max_ulp(got, want, maxulp=2)
