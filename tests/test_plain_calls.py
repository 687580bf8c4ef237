"""The one-step entries (``_core.forward_plain`` and its siblings) that take the common call
past the Python layer's checks: every call they accept must give exactly what the Python
layer gives, and every call they decline must reach the Python layer (which raises the
errors) with nothing written.

The reference here is the package's own Python layer with the one-step entries switched off,
compared bitwise: both end in the same kernel, so any difference is a dispatch bug. Accuracy
against independent references is tested elsewhere for both ways in.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _api

from conftest import OneStepDeclining

KERNEL_BACKENDS = [b for b in _api.available_backends() if b != "numpy"]


class _Counting:
    """The compiled module, counting the calls the one-step entries accept."""

    def __init__(self, core):
        self._core = core
        self.taken = 0

    def __getattr__(self, name):
        fn = getattr(self._core, name)
        if not name.endswith("_plain"):
            return fn

        def counted(*args, **kwargs):
            res = fn(*args, **kwargs)
            self.taken += res is not None
            return res

        return counted


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request):
    with _api.use_backend(request.param):
        yield request.param


def _python_layer(monkeypatch, fn, *args, **kwargs):
    """fn(*args, **kwargs) with the one-step entries declining: the Python layer's answer
    (the result, or the exception's type and message)."""
    with monkeypatch.context() as m:
        m.setattr(_api, "_core", OneStepDeclining(_api._core))
        return _outcome(fn, *args, **kwargs)


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # the comparison covers the type and the message
        return (type(exc), str(exc))


def _assert_same(got, want):
    """Bitwise equal results (dtype, shape and every bit, NaN included), or equal errors."""
    if isinstance(want, tuple):
        assert got == want
        return
    assert isinstance(got, np.ndarray), got
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()  # exact: the same kernel either way


def _counted(monkeypatch):
    counter = _Counting(_api._core)
    monkeypatch.setattr(_api, "_core", counter)
    return counter


def _sample(rng, shape, dtype):
    x = rng.normal(0.0, 3.0, shape).astype(dtype)
    flat = x.reshape(-1)
    if flat.size > 8:  # some special values
        flat[3], flat[5] = np.inf, -np.inf
    return x


SHAPES = [(7,), (3, 10), (5, 33), (2, 3, 17), (4, 1, 9), (0, 5), (3, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_forward_one_step_equals_python_layer(monkeypatch, kernel_backend, rng, name, shape, dtype):
    fn = getattr(fs, name)
    x = _sample(rng, shape, dtype)
    for axis in range(-len(shape), len(shape)):
        for beta in ({} if name == "softmin" else {"beta": 0.5}, {}):
            want = _python_layer(monkeypatch, fn, x, axis, **beta)
            counter = _counted(monkeypatch)
            got = _outcome(fn, x, axis, **beta)
            monkeypatch.undo()
            assert counter.taken == 1  # a plain call goes the one step
            _assert_same(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_backward_one_step_equals_python_layer(monkeypatch, kernel_backend, rng, name, shape, dtype):
    fn = getattr(fs, name)
    g = rng.normal(0.0, 1.0, shape).astype(dtype)
    y = fs.softmax(rng.normal(0.0, 3.0, shape).astype(dtype)) if g.size else g.copy()
    for axis in range(len(shape)):
        want = _python_layer(monkeypatch, fn, g, y, axis, beta=2.0)
        counter = _counted(monkeypatch)
        got = _outcome(fn, g, y, axis, beta=2.0)
        monkeypatch.undo()
        assert counter.taken == 1
        _assert_same(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_one_step_equals_python_layer(monkeypatch, kernel_backend, rng, shape, dtype, keepdims):
    x = _sample(rng, shape, dtype)
    for axis in range(-len(shape), len(shape)):
        want = _python_layer(monkeypatch, fs.logsumexp, x, axis, keepdims=keepdims)
        counter = _counted(monkeypatch)
        got = _outcome(fs.logsumexp, x, axis, keepdims=keepdims)
        monkeypatch.undo()
        assert counter.taken == 1
        _assert_same(got, want)


def test_out_is_written_and_returned(monkeypatch, kernel_backend, rng):
    x = rng.normal(0.0, 3.0, (6, 40)).astype(np.float32)
    want = _python_layer(monkeypatch, fs.softmax, x)
    out = np.full_like(x, np.nan)
    counter = _counted(monkeypatch)
    res = fs.softmax(x, out=out)
    assert res is out and counter.taken == 1
    _assert_same(out, want)
    # in place
    inplace = x.copy()
    assert fs.softmax(inplace, out=inplace) is inplace and counter.taken == 2
    _assert_same(inplace, want)
    # backward into grad itself, and logsumexp into a given array (keepdims shape)
    g = rng.normal(0.0, 1.0, x.shape).astype(np.float32)
    want_b = _python_layer(monkeypatch, fs.softmax_backward, g, want)
    assert fs.softmax_backward(g, want, out=g) is g
    _assert_same(g, want_b)
    lse = np.empty((6, 1), np.float32)
    assert fs.logsumexp(x, keepdims=True, out=lse) is lse
    _assert_same(lse, _python_layer(monkeypatch, fs.logsumexp, x, keepdims=True))


def _declined_cases(rng):
    """(label, function, args, kwargs): calls the one-step entries must leave to the Python
    layer, valid or not."""
    x = rng.normal(0.0, 3.0, (4, 24)).astype(np.float32)
    buf = rng.normal(0.0, 3.0, 4 * 24 + 8).astype(np.float32)
    g = rng.normal(0.0, 1.0, x.shape).astype(np.float32)
    y = fs.softmax(x)
    column = x[:, :1].copy()
    misaligned = np.frombuffer(bytearray(4 * 97), np.float32, count=96, offset=2).reshape(4, 24)

    class Sub(np.ndarray):
        pass

    return [
        ("float16", fs.softmax, (x.astype(np.float16),), {}),
        ("int64", fs.softmax, (np.arange(12).reshape(3, 4),), {}),
        ("Fortran order", fs.softmax, (np.asfortranarray(x),), {}),
        ("strided", fs.softmax, (x[:, ::2],), {}),
        ("misaligned", fs.softmax, (misaligned,), {}),
        ("list", fs.softmax, (x.tolist(),), {}),
        ("subclass", fs.softmax, (x.view(Sub),), {}),
        ("0-d", fs.softmax, (np.array(2.0, np.float32),), {}),
        ("numpy int axis", fs.softmax, (x, np.int64(0)), {}),
        ("bool axis", fs.softmax, (x, True), {}),
        ("float axis", fs.softmax, (x, 1.0), {}),
        ("axis out of range", fs.softmax, (x, 2), {}),
        ("axis huge", fs.softmax, (x, 2**70), {}),
        ("int beta", fs.softmax, (x,), {"beta": 2}),
        ("inf beta", fs.softmax, (x,), {"beta": np.inf}),
        ("nan beta", fs.softmax, (x,), {"beta": np.nan}),
        ("string beta", fs.softmax, (x,), {"beta": "2"}),
        ("where", fs.softmax, (x,), {"where": x > 0}),
        ("dtype", fs.softmax, (x,), {"dtype": np.float64}),
        ("out of another dtype", fs.softmax, (x,), {"out": np.empty(x.shape, np.float64)}),
        ("out of another shape", fs.softmax, (x,), {"out": np.empty((24, 4), np.float32)}),
        ("read-only out", fs.softmax, (x,), {"out": np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)}),
        ("out overlapping partly", fs.softmax, (buf[:96].reshape(4, 24),), {"out": buf[8:].reshape(4, 24)}),
        ("strided out", fs.softmax, (x,), {"out": np.empty((4, 48), np.float32)[:, ::2]}),
        ("list out", fs.softmax, (x,), {"out": [0.0] * 96}),
        ("grad and y of two dtypes", fs.softmax_backward, (g, y.astype(np.float64)), {}),
        ("grad and y of two shapes", fs.softmax_backward, (g, y[:2]), {}),
        ("backward out overlapping y partly", fs.softmax_backward, (g, buf[:96].reshape(4, 24)),
         {"out": buf[8:].reshape(4, 24)}),
        ("logsumexp out the input", fs.logsumexp, (column, -1), {"keepdims": True, "out": column}),
        ("logsumexp out overlapping", fs.logsumexp, (buf[:96].reshape(4, 24),), {"out": buf[92:96]}),
        ("logsumexp bool axis", fs.logsumexp, (x, False), {}),
        ("threads 0", fs.softmax, (x,), {"threads": 0}),
        ("threads float", fs.logsumexp, (x,), {"threads": 1.5}),
    ]


@pytest.mark.parametrize("case", range(33))
def test_declined_calls_reach_the_python_layer(monkeypatch, kernel_backend, rng, case):
    cases = _declined_cases(rng)
    assert len(cases) == 33
    label, fn, args, kwargs = cases[case]
    out = kwargs.get("out")
    before = None if not isinstance(out, np.ndarray) else out.copy()
    inputs = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    want = _python_layer(monkeypatch, fn, *args, **kwargs)
    for a, saved in zip(args, inputs):  # the reference run may have written out (or an input as out)
        if isinstance(a, np.ndarray) and a.flags.writeable:
            a[...] = saved
    if before is not None and out.flags.writeable:
        out[...] = before
    counter = _counted(monkeypatch)
    got = _outcome(fn, *args, **kwargs)
    monkeypatch.undo()
    assert counter.taken == 0, label
    _assert_same(got if not isinstance(got, np.ndarray) else np.asarray(got), want)
    if isinstance(want, tuple) and before is not None:  # an error: nothing written
        assert out.tobytes() == before.tobytes(), label
