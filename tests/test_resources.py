"""Resources (issue #8): memory, references, the floating-point environment, Ctrl-C, and
64-bit indexing.

* Memory stays flat over 100k small mixed calls on every backend (errors included): after a
  warm-up, Python-level allocations still alive (tracemalloc) grow by less than 256 KiB
  (~2.6 bytes per call) and the resident set (/proc/self/statm) by less than 6 MiB (~60 bytes
  per call); over 300 calls on 4 MiB arrays the resident set grows by less than 64 MiB
  (a leaked buffer per call would be 1.2 GiB).
* No call keeps a reference to its arguments: sys.getrefcount of every array argument is the
  same before and after (successful and failing calls), and an ndarray-subclass input is
  freed as soon as the caller drops it (weakref, no gc pass needed).
* The floating-point environment is as the caller left it: NumPy's subnormal arithmetic and
  np.geterr() are unchanged after calls on every backend, and (x86-64 glibc) the MXCSR
  control bits -- rounding mode, FTZ, DAZ, exception masks -- are bit for bit unchanged,
  both from the default state and from a caller's non-default one.
* Ctrl-C during a long multi-threaded call raises KeyboardInterrupt within a few seconds and
  leaves the interpreter usable.
* 64-bit indexing (slow, FASTSOFTMAX_SLOW_TESTS=1): arrays of more than 2**31 elements.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import weakref

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _api

AxisError = np.exceptions.AxisError
ERRORS = (TypeError, ValueError, AxisError)
BACKENDS = tuple(_api.available_backends())
KERNEL_BACKENDS = tuple(b for b in BACKENDS if b != "numpy")


# ---------------------------------------------------------------------------------------
# A fixed mix of small calls, successful and failing


def _small_calls():
    """(name, callable) pairs; each callable makes one small call (fresh arrays each time are
    not needed: the arguments are shared and never written, except the out= buffers)."""
    rng = np.random.default_rng(8)
    x32 = rng.standard_normal((4, 9)).astype(np.float32)
    x64 = rng.standard_normal((3, 5, 7))
    x16 = rng.standard_normal(17).astype(np.float16)
    y32 = fs.softmax(x32)
    ly64 = fs.log_softmax(x64, axis=1)
    mask = rng.random((4, 9)) < 0.7
    target = np.array([0, 3, -100, 8])
    weight = np.linspace(0.5, 2, 9).astype(np.float32)
    out32 = np.empty_like(x32)
    out_lse = np.empty(4, np.float32)
    bad_out = np.empty((4, 8), np.float32)
    fx = np.asfortranarray(x64[0])
    calls = [
        ("softmax", lambda: fs.softmax(x32)),
        ("softmax where out", lambda: fs.softmax(x32, where=mask, out=out32)),
        ("log_softmax axis", lambda: fs.log_softmax(x64, axis=1)),
        ("log_softmax fortran", lambda: fs.log_softmax(fx, axis=0, beta=0.5)),
        ("softmin half", lambda: fs.softmin(x16)),
        ("logsumexp", lambda: fs.logsumexp(x32, out=out_lse)),
        ("logsumexp keepdims", lambda: fs.logsumexp(x64, axis=0, keepdims=True, beta=2.0)),
        ("softmax_backward", lambda: fs.softmax_backward(x32, y32)),
        ("log_softmax_backward", lambda: fs.log_softmax_backward(x64, ly64, axis=1, where=np.bool_(True))),
        ("cross_entropy", lambda: fs.cross_entropy(x32, target, weight=weight, label_smoothing=0.1, return_grad=True)),
        ("cross_entropy probs", lambda: fs.cross_entropy(x32, y32, reduction="none")),
        ("softmax threads", lambda: fs.softmax(x32, threads=2)),
        # failing calls: the error paths must not leak either
        ("bad axis", lambda: fs.softmax(x32, axis=3)),
        ("bad out", lambda: fs.softmax(x32, out=bad_out)),
        ("bad where", lambda: fs.log_softmax(x32, where=np.ones((2, 9), bool))),
        ("bad beta", lambda: fs.logsumexp(x32, beta="x")),
        ("bad target", lambda: fs.cross_entropy(x32, np.array([0, 1, 2, 9]))),
        ("bad threads", lambda: fs.softmax(x32, threads=0)),
        ("bad backward", lambda: fs.softmax_backward(x32, x64)),
    ]
    return calls


def _run_mix(calls, n: int) -> None:
    """n calls, cycling through the backends in blocks of 500."""
    k = len(calls)
    done = 0
    while done < n:
        for name in BACKENDS:
            with _api.use_backend(name):
                for i in range(min(500, n - done)):
                    try:
                        calls[(done + i) % k][1]()
                    except ERRORS:
                        pass
                done += min(500, n - done)
            if done >= n:
                break


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)")

# Under AddressSanitizer (.ci/sanitizers) freed memory sits in a quarantine, so the resident set
# is no measure of leaks there; tracemalloc still is.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@needs_proc
def test_memory_is_flat_over_100k_small_calls():
    calls = _small_calls()
    _run_mix(calls, 5000)  # warm-up: caches, thread pools, allocator arenas
    gc.collect()
    tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        rss_before = _rss_bytes()
        _run_mix(calls, 100_000)
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
        rss_growth = _rss_bytes() - rss_before
        top = tracemalloc.take_snapshot().statistics("lineno")[:5] if traced_growth >= 256 * 1024 else []
    finally:
        tracemalloc.stop()
    assert traced_growth < 256 * 1024, f"Python allocations grew by {traced_growth} bytes over 100k calls: {top}"
    if not UNDER_ASAN:
        assert rss_growth < 6 * 1024 * 1024, f"resident set grew by {rss_growth / 2**20:.1f} MiB over 100k calls"


@needs_proc
@pytest.mark.skipif(UNDER_ASAN, reason="the resident set is no leak measure under AddressSanitizer")
def test_memory_is_flat_over_300_calls_on_4_mib_arrays():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 4096)).astype(np.float32)
    g = rng.standard_normal((256, 4096)).astype(np.float32)
    t = rng.integers(0, 4096, 256)
    out = np.empty_like(x)

    def mix(n):
        for i in range(n):
            name = KERNEL_BACKENDS[i % len(KERNEL_BACKENDS)] if KERNEL_BACKENDS else "numpy"
            with _api.use_backend(name):
                r = i % 6
                if r == 0:
                    fs.softmax(x, threads=2)
                elif r == 1:
                    fs.log_softmax(x, axis=0, out=out)
                elif r == 2:
                    fs.logsumexp(x)
                elif r == 3:
                    fs.softmax_backward(g, x)
                elif r == 4:
                    fs.cross_entropy(x, t, return_grad=True)
                else:
                    with pytest.raises(ValueError):
                        fs.softmax(x, out=out[:, :-1])

    mix(30)
    gc.collect()
    before = _rss_bytes()
    mix(300)
    gc.collect()
    growth = _rss_bytes() - before
    assert growth < 64 * 1024 * 1024, f"resident set grew by {growth / 2**20:.1f} MiB over 300 calls on 4 MiB arrays"


# ---------------------------------------------------------------------------------------
# References


def _reference_calls(x, y, w, out, lse_out, t, weight):
    return [
        lambda: fs.softmax(x, where=w, out=out),
        lambda: fs.log_softmax(x, axis=0, beta=2.0),
        lambda: fs.softmin(x, where=w),
        lambda: fs.logsumexp(x, where=w, out=lse_out),
        lambda: fs.softmax_backward(x, y, where=w, out=out),
        lambda: fs.log_softmax_backward(x, y),
        lambda: fs.cross_entropy(x, t, weight=weight, return_grad=True),
        lambda: fs.cross_entropy(x, y, reduction="none"),
        # failing ones
        lambda: fs.softmax(x, axis=7, out=out),
        lambda: fs.softmax(x, where=np.ones(5, bool), out=out),
        lambda: fs.logsumexp(x, out=out),
        lambda: fs.softmax_backward(x, y[:, :2], out=out),
        lambda: fs.cross_entropy(x, t + 10, weight=weight),
        lambda: fs.cross_entropy(x, t, weight=weight[:2]),
    ]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_calls_keep_no_reference_to_their_arguments(backend_name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    y = fs.softmax(rng.standard_normal((3, 4)))
    w = rng.random((3, 4)) < 0.8
    out = np.empty((3, 4))
    lse_out = np.empty(3)
    t = np.array([0, 3, 1])
    weight = np.array([1.0, 2.0, 0.5, 1.5])
    args = dict(x=x, y=y, w=w, out=out, lse_out=lse_out, t=t, weight=weight)
    calls = _reference_calls(**args)
    with _api.use_backend(backend_name):
        for i, call in enumerate(calls):
            before = {k: sys.getrefcount(v) for k, v in args.items()}
            for _ in range(3):
                try:
                    res = call()
                except ERRORS:
                    res = None
                del res
            after = {k: sys.getrefcount(v) for k, v in args.items()}
            assert after == before, f"call #{i}: reference counts changed {before} -> {after}"


class Tracked(np.ndarray):
    """An ndarray subclass (array subclasses must go through the API like plain arrays)."""


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_subclass_input_is_freed_when_the_caller_drops_it(backend_name):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3, 5))
    t = np.array([0, 4, 2])
    makers = [
        lambda a: fs.softmax(a),
        lambda a: fs.log_softmax(a, axis=0, where=np.tril(np.ones((3, 5), bool))),
        lambda a: fs.logsumexp(a, keepdims=True),
        lambda a: fs.softmax(a, out=a),  # in place: the result *is* the input
        lambda a: fs.softmax_backward(a, a),
        lambda a: fs.cross_entropy(a, t, return_grad=True),
        lambda a: fs.softmax(a, axis=4),  # raises: the traceback must not keep it alive
    ]
    gc.disable()  # no collector help: only reference counting may free it
    try:
        with _api.use_backend(backend_name):
            for i, make in enumerate(makers):
                a = base.copy().view(Tracked)
                ref = weakref.ref(a)
                try:
                    res = make(a)
                except ERRORS:
                    res = None
                del res, a
                assert ref() is None, f"call #{i}: input still alive ({gc.get_referrers(ref())!r:.300})"
    finally:
        gc.enable()


# ---------------------------------------------------------------------------------------
# The floating-point environment


def _fp_exercise(threads):
    """Calls that underflow, overflow, divide by zero and produce NaN inside the kernels."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 1100)).astype(np.float32) * 60
    x[:, ::7] = -np.inf
    x[3] = np.nan
    x64 = np.concatenate([rng.standard_normal((4, 40000)) * 400, np.full((4, 1), -np.inf)], axis=1)
    t = rng.integers(0, 1100, 64)
    out = []
    out.append(fs.softmax(x, threads=threads))
    out.append(fs.log_softmax(x64, threads=threads))
    out.append(fs.logsumexp(x, axis=0, threads=threads))
    out.append(fs.softmax_backward(x, fs.softmax(x), threads=threads))
    out.append(fs.log_softmax_backward(x64, fs.log_softmax(x64), threads=threads))
    out.append(fs.cross_entropy(x, t, return_grad=True, label_smoothing=0.2, threads=threads))
    out.append(fs.softmax(np.float32([1e-45, 1e-40, 0.0]), beta=1e30))
    out.append(fs.softmax(x[:4, :30].astype(np.float16), threads=threads))
    try:
        fs.softmax(x, axis=9)
    except AxisError:
        pass
    return out


def _assert_subnormals_work():
    with np.errstate(all="ignore"):
        q32 = np.float32(1e-38) / np.float32(10)
        q64 = np.finfo(np.float64).tiny / 2
        s64 = np.float64(5e-324) * 3
    assert q32 != 0 and abs(q32) < np.finfo(np.float32).smallest_normal, f"float32 subnormal flushed: {q32!r}"
    assert q64 != 0, "float64 tiny / 2 flushed to zero"
    assert s64 == 1.5e-323, f"subnormal input read as zero: 5e-324 * 3 = {s64!r}"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_numpy_subnormals_and_errstate_unchanged_after_calls(backend_name):
    before = np.geterr()
    with _api.use_backend(backend_name):
        for threads in (1, 2):
            _fp_exercise(threads)
            _assert_subnormals_work()
            assert np.geterr() == before
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        # a caller's stricter errstate: kernels must not trip it (nor change it)
        inside = np.geterr()
        with _api.use_backend(backend_name):
            fs.softmax(np.array([0.0, -np.inf, 1e300]))
            fs.logsumexp(np.array([-np.inf, -np.inf]))
        assert np.geterr() == inside
    assert np.geterr() == before


def _libm():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    name = ctypes.util.find_library("m")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    buf = ctypes.create_string_buffer(32)
    if lib.fegetenv(buf) != 0 or int.from_bytes(buf.raw[28:32], "little") & 0xFFC0 != 0x1F80:
        return None  # not the glibc x86-64 fenv_t layout (MXCSR at byte 28) in its default state
    return lib


MXCSR_CONTROL = 0xFFC0  # everything but the six sticky exception flags
FTZ, DAZ, ROUND_UP = 0x8000, 0x0040, 0x4000


class FpEnv:
    """Read and write MXCSR through glibc's fegetenv / fesetenv (x86-64)."""

    def __init__(self, lib):
        self.lib = lib

    def get(self) -> bytes:
        buf = ctypes.create_string_buffer(32)
        assert self.lib.fegetenv(buf) == 0
        return buf.raw

    def mxcsr(self) -> int:
        return int.from_bytes(self.get()[28:32], "little")

    def set_mxcsr(self, value: int) -> None:
        raw = bytearray(self.get())
        raw[28:32] = value.to_bytes(4, "little")
        buf = ctypes.create_string_buffer(bytes(raw), 32)
        assert self.lib.fesetenv(buf) == 0


@pytest.mark.skipif(_libm() is None, reason="MXCSR is read through glibc's x86-64 fenv_t")
@pytest.mark.parametrize("caller_state", ["default", "ftz-daz-round-up"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_mxcsr_control_bits_are_exactly_as_the_caller_left_them(backend_name, caller_state):
    env = FpEnv(_libm())
    saved = env.get()
    try:
        if caller_state != "default":
            env.set_mxcsr(env.mxcsr() | FTZ | DAZ | ROUND_UP)
        expected = env.mxcsr() & MXCSR_CONTROL
        x87_before = env.get()[0:2]  # the x87 control word
        with _api.use_backend(backend_name):
            for threads in (1, 2):
                for i, call in enumerate(_fp_calls(threads)):
                    try:
                        call()
                    except ERRORS:
                        pass
                    got = env.mxcsr() & MXCSR_CONTROL
                    assert got == expected, f"call #{i}, threads={threads}: MXCSR control {got:#06x} != {expected:#06x}"
                    assert env.get()[0:2] == x87_before, f"call #{i}: x87 control word changed"
    finally:
        buf = ctypes.create_string_buffer(saved, 32)
        env.lib.fesetenv(buf)


def _fp_calls(threads):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((8, 5000)) * 80).astype(np.float32)
    x[:, ::3] = -np.inf
    y = fs.softmax(x)
    log_y = fs.log_softmax(x)  # log of the zeros: -inf, without NumPy's divide-by-zero warning
    t = rng.integers(0, 5000, 8)
    return [
        lambda: fs.softmax(x, threads=threads),
        lambda: fs.log_softmax(x.astype(np.float64), axis=0, threads=threads),
        lambda: fs.logsumexp(x, threads=threads),
        lambda: fs.softmax_backward(x, y, threads=threads),
        lambda: fs.log_softmax_backward(x, log_y, threads=threads),
        lambda: fs.cross_entropy(x, t, return_grad=True, threads=threads),
        lambda: fs.softmax(x.astype(np.float16), threads=threads),
        lambda: fs.softmax(x, axis=5),
    ]


# ---------------------------------------------------------------------------------------
# Ctrl-C

_INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    import numpy as np
    import fastsoftmax as fs

    # Python leaves SIGINT ignored if it started so (under a non-interactive shell's `&`, say)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    x = np.zeros((1, 2**27), np.float32)
    x[0, ::3] = 1.0
    out = np.empty_like(x)
    fs.softmax(x[:, :1024], out=out[:, :1024])
    print("ready", flush=True)
    calls = 0
    try:
        while True:
            fs.softmax(x, out=out, threads=2)
            calls += 1
    except KeyboardInterrupt:
        print(f"interrupted after {calls} calls", flush=True)
    del x, out
    # the interpreter and the package are still usable
    y = fs.softmax(np.array([1.0, 2.0, 3.0]))
    expected = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    assert np.allclose(y, expected, rtol=1e-14), y
    z = fs.log_softmax(np.zeros((4, 70000), np.float32), threads=2)
    assert np.allclose(z, -np.log(70000), rtol=1e-6)
    print("usable", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_during_a_long_multithreaded_call_raises_keyboard_interrupt_and_recovers():
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(300, proc.kill)  # a child that never answers fails the test, not hangs it
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + proc.stderr.read()
        time.sleep(1.0)  # well into the loop of long calls
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline()
        latency = time.monotonic() - sent
        assert line.startswith("interrupted"), line + proc.stderr.read()
        assert latency < 5.0, f"KeyboardInterrupt took {latency:.1f} s"
        rest, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert rest.strip().endswith("usable"), rest + err


# ---------------------------------------------------------------------------------------
# 64-bit indexing: more than 2**31 elements (8.6 GB of float32, in place)

slow = pytest.mark.skipif(os.environ.get("FASTSOFTMAX_SLOW_TESTS") != "1", reason="set FASTSOFTMAX_SLOW_TESTS=1")

N_BIG = 2**31 + 16


def _ulps(a, b) -> int:
    a, b = np.float32(a), np.float32(b)
    return abs(int(np.array(a).view(np.int32)) - int(np.array(b).view(np.int32)))


@pytest.mark.slow
@slow
def test_softmax_of_more_than_2_31_elements_in_place():
    n = N_BIG
    x = np.zeros(n, np.float32)  # 8.6 GB
    try:
        # constant row: 1/n everywhere, exactly (the sum of n ones is exact in the wide sums)
        lse = fs.logsumexp(x, threads=2)
        assert _ulps(lse, np.log(np.float64(n))) <= 1, (float(lse), np.log(np.float64(n)))
        fs.softmax(x, out=x, threads=2)
        expected = np.float32(1.0 / n)
        for i in (0, 1, 2**31 - 1, 2**31, 2**31 + 1, n - 1, n // 2, n // 3 * 2):
            assert x[i] == expected, (i, float(x[i]), float(expected))
        # a spike past element 2**31, and one before it
        x[:] = 0
        spike_hi, spike_lo = 2**31 + 7, 12345
        x[spike_hi] = np.float32(np.log(n))  # worth about n entries
        x[spike_lo] = np.float32(3.0)
        e_hi = np.exp(np.float64(x[spike_hi]))
        e_lo = np.exp(np.float64(3.0))
        total = (n - 2) + e_hi + e_lo
        fs.softmax(x, out=x, threads=2)
        assert _ulps(x[spike_hi], e_hi / total) <= 1, (float(x[spike_hi]), e_hi / total)
        assert _ulps(x[spike_lo], e_lo / total) <= 1, (float(x[spike_lo]), e_lo / total)
        for i in (0, 2**31 - 1, 2**31, 2**31 + 8, n - 1):
            assert _ulps(x[i], 1.0 / total) <= 1, (i, float(x[i]), 1.0 / total)
    finally:
        del x


@pytest.mark.slow
@slow
def test_rows_past_2_31_elements_use_64_bit_offsets():
    rows, n = 2**27 + 1, 16  # 2**31 + 16 elements: the last row starts past element 2**31
    x = np.zeros((rows, n), np.float32)
    try:
        x[-1, 5] = 10.0
        x[2**26, 0] = -np.inf
        fs.log_softmax(x, out=x, threads=2)
        assert x[0, 0] == np.float32(-np.log(16.0))
        assert x[-2, 15] == np.float32(-np.log(16.0))
        e = np.exp(10.0)
        assert _ulps(x[-1, 5], 10.0 - np.log(e + 15)) <= 1, float(x[-1, 5])
        assert _ulps(x[-1, 0], -np.log(e + 15)) <= 1, float(x[-1, 0])
        assert x[2**26, 0] == -np.inf and _ulps(x[2**26, 1], -np.log(15.0)) <= 1
    finally:
        del x
