"""Concurrency and determinism (issue #8).

* 8 Python threads x 1000 mixed calls (softmax, log_softmax, softmin, logsumexp, both
  backward passes, cross_entropy; small and medium inputs; threads=1 and 2) on shared,
  read-only inputs give bit-for-bit the results of the same calls made serially, on every
  backend (the backend is chosen in the main thread before the workers start: use_backend is
  not thread-safe).
* Results do not depend on the number of threads: threads=1 and threads=2 give identical bits
  on (1, 2**22 + 17), (4096, 1024), (64, 1000, 49) along axis 1 and (65536, 10), for
  softmax, log_softmax, logsumexp, softmax_backward, log_softmax_backward and cross_entropy,
  float32 and float64, on every compiled backend.
"""

from __future__ import annotations

import concurrent.futures
import random

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _api

BACKENDS = tuple(_api.available_backends())
KERNEL_BACKENDS = tuple(b for b in BACKENDS if b != "numpy")

N_WORKERS = 8
CALLS_PER_WORKER = 1000


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _bits(result):
    """The bytes of a result (or of each part of a tuple), with shape and dtype."""
    if isinstance(result, tuple):
        return tuple(_bits(r) for r in result)
    r = np.asarray(result)
    return (r.shape, r.dtype.str, r.tobytes())


def _tasks():
    """Mixed calls on shared read-only inputs: small (a few dozen elements) and medium (tens of
    thousands, enough for two threads and several SIMD blocks), threads=1 and 2."""
    rng = np.random.default_rng(2024)
    small32 = _frozen(rng.standard_normal((5, 13)).astype(np.float32) * 4)
    small64 = _frozen(rng.standard_normal((3, 4, 7)) * 10)
    med32 = _frozen(rng.standard_normal((48, 1500)).astype(np.float32) * 8)
    med64 = _frozen(rng.standard_normal((70000,)) * 30)
    med_f = _frozen(np.asfortranarray(rng.standard_normal((300, 130))))
    half = _frozen(rng.standard_normal((6, 300)).astype(np.float16))
    special = _frozen(np.array([[0.0, -np.inf, 3.0, np.inf], [np.nan, 1.0, 2.0, 3.0], [-np.inf] * 4], np.float32))
    mask = _frozen(np.tril(np.ones((48, 1500), bool), 700))
    y_small = _frozen(fs.softmax(small32))
    y_med = _frozen(fs.softmax(med32))
    ly_med64 = _frozen(fs.log_softmax(med64))
    g_med = _frozen(rng.standard_normal((48, 1500)).astype(np.float32))
    t_small = _frozen(np.array([0, 12, -100, 3, 7]))
    t_med = _frozen(rng.integers(0, 1500, 48))
    w_med = _frozen(rng.random(1500).astype(np.float32) + 0.5)
    p_med = y_med
    tasks = []
    for threads in (1, 2):
        tasks += [
            ("softmax small", lambda th=threads: fs.softmax(small32, threads=th)),
            ("softmax medium where", lambda th=threads: fs.softmax(med32, where=mask, threads=th)),
            ("softmax specials", lambda th=threads: fs.softmax(special, threads=th)),
            ("log_softmax axis 1", lambda th=threads: fs.log_softmax(small64, axis=1, beta=0.7, threads=th)),
            ("log_softmax medium", lambda th=threads: fs.log_softmax(med64, threads=th)),
            ("log_softmax fortran", lambda th=threads: fs.log_softmax(med_f, axis=0, threads=th)),
            ("softmin half", lambda th=threads: fs.softmin(half, threads=th)),
            ("logsumexp medium", lambda th=threads: fs.logsumexp(med32, axis=0, threads=th)),
            ("logsumexp where", lambda th=threads: fs.logsumexp(med32, where=mask, keepdims=True, threads=th)),
            ("logsumexp 1-D", lambda th=threads: fs.logsumexp(med64, beta=-2.0, threads=th)),
            ("softmax_backward small", lambda th=threads: fs.softmax_backward(small32, y_small, threads=th)),
            ("softmax_backward medium", lambda th=threads: fs.softmax_backward(g_med, y_med, where=mask, threads=th)),
            ("log_softmax_backward", lambda th=threads: fs.log_softmax_backward(med64, ly_med64, threads=th)),
            ("cross_entropy small", lambda th=threads: fs.cross_entropy(small32, t_small, return_grad=True, threads=th)),
            ("cross_entropy weighted", lambda th=threads: fs.cross_entropy(
                med32, t_med, weight=w_med, label_smoothing=0.1, return_grad=True, threads=th)),
            ("cross_entropy probabilities", lambda th=threads: fs.cross_entropy(
                med32, p_med, reduction="none", return_grad=True, threads=th)),
        ]
    return tasks


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_eight_threads_of_mixed_calls_match_serial_results_bitwise(backend_name):
    tasks = _tasks()
    with _api.use_backend(backend_name):
        serial = [_bits(call()) for _, call in tasks]
        calls = CALLS_PER_WORKER if backend_name != "numpy" else CALLS_PER_WORKER // 4  # NumPy path: slower

        def worker(seed: int):
            order = random.Random(seed)
            mismatches = []
            for _ in range(calls):
                i = order.randrange(len(tasks))
                got = _bits(tasks[i][1]())
                if got != serial[i]:
                    mismatches.append(tasks[i][0])
            return mismatches

        with concurrent.futures.ThreadPoolExecutor(max_workers=N_WORKERS) as pool:
            results = list(pool.map(worker, range(N_WORKERS)))
        # the serial results are still what a fresh serial call gives (no state was corrupted)
        assert [_bits(call()) for _, call in tasks] == serial
    bad = [name for r in results for name in r]
    assert not bad, f"{len(bad)} concurrent call(s) differed from the serial result: {sorted(set(bad))}"


# ---------------------------------------------------------------------------------------
# threads=1 and threads=2 give the same bits

SHAPES = [
    ((1, 2**22 + 17), -1),
    ((4096, 1024), -1),
    ((64, 1000, 49), 1),
    ((65536, 10), -1),
]


def _inputs(shape, axis, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 6).astype(dtype)
    flat = x.reshape(-1)
    flat[::9973] = -np.inf  # some masked-out entries
    g = rng.standard_normal(shape).astype(dtype)
    y = fs.softmax(x, axis, threads=1)
    ly = fs.log_softmax(x, axis, threads=1)
    ax = axis % len(shape)
    classes = shape[ax]
    sample = shape[:ax] + shape[ax + 1:]
    t = rng.integers(0, classes, sample)
    t.reshape(-1)[::7] = -100
    w = (rng.random(classes) + 0.5).astype(dtype)
    return x, g, y, ly, t, w


FUNCS = {
    "softmax": lambda d, axis, th: fs.softmax(d[0], axis, threads=th),
    "log_softmax": lambda d, axis, th: fs.log_softmax(d[0], axis, beta=0.5, threads=th),
    "logsumexp": lambda d, axis, th: fs.logsumexp(d[0], axis, threads=th),
    "softmax_backward": lambda d, axis, th: fs.softmax_backward(d[1], d[2], axis, threads=th),
    "log_softmax_backward": lambda d, axis, th: fs.log_softmax_backward(d[1], d[3], axis, threads=th),
    "cross_entropy": lambda d, axis, th: fs.cross_entropy(
        np.where(np.isinf(d[0]), 0, d[0]), d[4], axis, weight=d[5], label_smoothing=0.05, return_grad=True, threads=th),
}


@pytest.fixture(scope="module")
def thread_inputs():
    cache = {}

    def get(shape, axis, dtype):
        key = (shape, axis, np.dtype(dtype).str)
        if key not in cache:
            cache.clear()  # one set at a time keeps memory low
            cache[key] = _inputs(shape, axis, dtype, seed=len(shape) * 1000 + shape[-1])
        return cache[key]

    return get


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, axis", SHAPES, ids=[f"{s}-axis{a}" for s, a in SHAPES])
@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
def test_results_do_not_depend_on_the_thread_count(thread_inputs, backend_name, shape, axis, dtype):
    data = thread_inputs(shape, axis, dtype)
    with _api.use_backend(backend_name):
        for name, fn in FUNCS.items():
            one = _bits(fn(data, axis, 1))
            two = _bits(fn(data, axis, 2))
            assert one == two, f"{name}: threads=1 and threads=2 differ on {shape} axis {axis} ({np.dtype(dtype)})"
