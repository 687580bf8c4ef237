"""Coverage-guided fuzz target for the public API of fastsoftmax (issue #8).

Each input is decoded into a call: the function, the backend, dtype, shape, memory layout
and raw element bits of the array(s), and every option (axis, beta, where, dtype, out,
threads, keepdims, and the cross_entropy ones), valid or not. The contract checked:

* a call either returns or raises TypeError, ValueError or numpy.exceptions.AxisError;
  any other exception is a bug (atheris reports it and saves the input), and so is a crash
  (a signal, caught by libFuzzer);
* a failing call leaves out= bit for bit as it was, and never modifies an input;
* a successful call returns out= itself when one was given, with the documented shape and
  dtype; softmax/softmin values lie in [0, 1] (or are NaN), log_softmax values are <= 0 (or NaN).

Run for a bounded time (libFuzzer flags are passed through):

    python fuzz/fuzz_api.py -max_total_time=60
    python fuzz/fuzz_api.py crash-<hash>          # replay one saved input

Against a sanitizer build of _core (see .ci/sanitizers), with the ASan runtime preloaded:

    LD_PRELOAD="$(c++ -print-file-name=libasan.so) $(c++ -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0 python fuzz/fuzz_api.py -max_total_time=60

Without atheris the script says so and falls back to random inputs (no coverage guidance)
for the same time budget, so that it still runs anywhere.
"""

from __future__ import annotations

import os
import random
import sys
import time
import warnings

import numpy as np

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["fastsoftmax"]):
        import fastsoftmax as fs
        from fastsoftmax import _api
else:
    import fastsoftmax as fs
    from fastsoftmax import _api

AxisError = np.exceptions.AxisError
ALLOWED = (TypeError, ValueError, AxisError)
BACKENDS = tuple(_api.available_backends())
FUNCS = ("softmax", "log_softmax", "softmin", "logsumexp", "softmax_backward", "log_softmax_backward", "cross_entropy")
DTYPES = (np.float32, np.float64, np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_)
ODD_INPUTS = ("complex", "object", "str", "list", "scalar", "none", "bytes")
MAX_ELEMENTS = 1 << 17
# FASTSOFTMAX_TEST_MISALIGNED=0: no misaligned arrays (for a run against a sanitizer build while
# the kernels still dereference them)
MISALIGNED = os.environ.get("FASTSOFTMAX_TEST_MISALIGNED", "1") != "0"

warnings.simplefilter("ignore")  # NumPy's overflow warnings are not what is checked here


class Provider:
    """A small wrapper over atheris.FuzzedDataProvider (or a random.Random stand-in)."""

    def __init__(self, data: bytes):
        self.fdp = atheris.FuzzedDataProvider(data) if atheris is not None else None
        self.rnd = random.Random(data)
        self.valid = True  # set per input: options drawn from the valid ones only

    def int(self, lo: int, hi: int) -> int:
        if self.fdp is not None:
            return self.fdp.ConsumeIntInRange(lo, hi)
        return self.rnd.randint(lo, hi)

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def bytes(self, n: int) -> bytes:
        if self.fdp is not None:
            b = self.fdp.ConsumeBytes(n)
        else:
            b = self.rnd.randbytes(n)
        return b + bytes(n - len(b))

    def float(self) -> float:
        if self.fdp is not None:
            return self.fdp.ConsumeFloat()
        return self.rnd.choice([0.0, 1.0, -1.0, float("inf"), float("nan"), self.rnd.uniform(-1e3, 1e3)])


SPECIAL_VALUES = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 5e-324, 1.2e-38, 2.3e-308, 3.4e38, -3.4e38, 1.7e308, -1.7e308,
                  65504.0, float("inf"), float("-inf"), float("nan"), 88.7, -87.3, -104.0, 709.8, -745.2, 1024.0, 1400.0)


def values(p: Provider, dtype, size: int) -> np.ndarray:
    """``size`` elements: raw bits (NaN payloads, subnormals, anything), specials, or small."""
    dtype = np.dtype(dtype)
    mode = p.int(0, 3)
    if size == 0:
        return np.empty(0, dtype)
    if mode == 0 or dtype.kind != "f":
        n = min(size, 64)
        raw = np.frombuffer(p.bytes(n * dtype.itemsize), dtype=dtype).copy()
        if dtype.kind == "b":
            raw = raw.view(np.uint8) % 2 == 1
        return np.resize(raw, size)
    with np.errstate(over="ignore"):
        if mode == 1:
            n = min(size, 32)
            idx = np.frombuffer(p.bytes(n), np.uint8) % len(SPECIAL_VALUES)
            return np.resize(np.array(SPECIAL_VALUES)[idx].astype(dtype), size)
        if mode == 2:
            return np.resize(np.array([p.float() for _ in range(min(size, 16))]).astype(dtype), size)
        n = min(size, 64)
        return np.resize((np.frombuffer(p.bytes(n), np.int8).astype(np.float64) / 4).astype(dtype), size)


def shape_of(p: Provider, min_dims: int = 0) -> tuple:
    ndim = p.int(min_dims, 4)
    if p.int(0, 7) == 0 and ndim >= 1:  # occasionally a long axis: blocks, threads
        shape = [p.int(0, 3) for _ in range(ndim)]
        shape[p.int(0, ndim - 1)] = p.int(0, 70000)
    else:
        shape = [p.pick((0, 1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33)) for _ in range(ndim)]
    if np.prod(shape, dtype=np.int64) > MAX_ELEMENTS:
        shape = [min(s, 4) for s in shape]
    return tuple(shape)


def array(p: Provider, shape: tuple, dtype) -> np.ndarray:
    """An array of ``shape`` in a decoded layout: C, F, reversed, stepped, broadcast, transposed,
    misaligned."""
    ndim = len(shape)
    layout = p.int(0, 6 if MISALIGNED else 5) if ndim else 0
    size = int(np.prod(shape, dtype=np.int64))
    if layout == 0:
        return values(p, dtype, size).reshape(shape)
    if layout == 1:
        return np.asfortranarray(values(p, dtype, size).reshape(shape))
    k = p.int(0, ndim - 1)
    if layout == 2:
        return np.flip(values(p, dtype, size).reshape(shape), axis=k)
    if layout == 3:
        step = p.pick((2, 3, -2))
        big = list(shape)
        big[k] *= abs(step)
        base = values(p, dtype, int(np.prod(big, dtype=np.int64))).reshape(big)
        return base[tuple(slice(None, None, step) if d == k else slice(None) for d in range(ndim))]
    if layout == 4:
        small = tuple(1 if p.bool() else s for s in shape)
        return np.broadcast_to(values(p, dtype, int(np.prod(small, dtype=np.int64))).reshape(small), shape)
    if layout == 5:
        keys = [p.int(0, 255) for _ in range(ndim)]
        perm = sorted(range(ndim), key=lambda d: keys[d])
        inv = tuple(np.argsort(perm))
        return values(p, dtype, size).reshape(tuple(shape[i] for i in perm)).transpose(inv)
    # C-contiguous but one byte into its buffer (np.frombuffer with an offset): misaligned
    a = values(p, dtype, size)
    buf = np.empty(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(shape)
    out.reshape(-1)[...] = a
    return out


def odd_input(p: Provider, shape: tuple):
    kind = p.pick(ODD_INPUTS)
    if kind == "complex":
        return np.ones(shape, np.complex64)
    if kind == "object":
        return np.full(shape, 1.0, dtype=object)
    if kind == "str":
        return np.full(shape, "1")
    if kind == "list":
        return np.zeros(shape).tolist()
    if kind == "scalar":
        return p.float()
    if kind == "bytes":
        return b"\x00\x01"
    return None


def axis_of(p: Provider, ndim: int):
    if p.valid:
        return p.int(-ndim, ndim - 1) if ndim else p.pick((0, -1))
    r = p.int(0, 15)
    if r < 12:
        return p.int(-ndim - 1, ndim) if ndim else p.int(-2, 1)
    return p.pick((1.0, "0", None, np.int64(0), np.bool_(False), [0], 2**63, -(2**63)))


def beta_of(p: Provider, finite: bool = False):
    if p.valid:
        b = p.pick((1.0, 1.0, 0.0, -1.0, 0.5, 2.0, 1e-300, 1e300, 1e30, float("inf"), float("-inf"), p.float()))
        return 1.0 if b != b or (finite and abs(b) == float("inf")) else b
    r = p.int(0, 9)
    if r < 4:
        return 1.0
    if r < 8:
        return p.pick((0.0, -1.0, 0.5, 2.0, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"), 1e30))
    if r == 8:
        return p.float()
    return p.pick(("1", None, [1.0], 1j, np.float32(2)))


def where_of(p: Provider, shape: tuple):
    r = p.int(0, 9)
    if r < 5:
        return None
    if r < 8 or p.valid:
        sub = tuple(1 if p.bool() else s for s in shape)
        w = values(p, np.bool_, int(np.prod(sub, dtype=np.int64))).reshape(sub)
        return np.flip(w) if p.bool() and w.ndim else w
    if r == 8:
        return p.pick((np.ones(shape + (2,), bool), np.ones(shape, np.int8), True, [True], "x"))
    return np.bool_(p.bool())


def threads_of(p: Provider):
    r = p.int(0, 9)
    if r < 4:
        return None
    if r < 8 or p.valid:
        return p.pick((1, 2))
    return p.pick((0, -1, 1.5, "2", True, np.int32(2), 2**40))


def out_of(p: Provider, shape: tuple, dtype, inputs: tuple):
    """None, a good out= in some layout, in place, or a bad one (shape, dtype, read-only,
    overlapping, not an array)."""
    r = p.int(0, 7 if p.valid else 11)
    if r < 4:
        return None
    dtype = np.dtype(dtype)
    if r == 4:
        return np.full(shape, -7, dtype)
    if r == 5 and shape:
        return np.asfortranarray(np.full(shape, -7, dtype))
    if r == 6 and shape:
        return np.full(shape[:-1] + (2 * shape[-1],), -7, dtype)[..., ::2]
    if r == 7:
        for a in inputs:
            if isinstance(a, np.ndarray) and a.shape == shape and a.dtype == dtype:
                return a  # in place (maybe read-only: then a ValueError is expected)
        return np.full(shape, -7, dtype)
    if r == 8:
        return np.full(shape + (1,), -7, dtype)
    if r == 9:
        return np.full(shape, -7, np.float16 if dtype != np.float16 else np.float32)
    if r == 10:
        o = np.full(shape, -7, dtype)
        o.flags.writeable = False
        return o
    if shape and shape[-1] > 1:  # the same memory as an input in another view: must be refused
        for a in inputs:
            if isinstance(a, np.ndarray) and a.shape == shape and a.flags.writeable and a.dtype == dtype:
                return np.flip(a, -1)
    return [0.0]


def snapshot(a):
    return np.array(a, copy=True) if isinstance(a, np.ndarray) else None


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check_result(func: str, res, out, expected_shape, expected_dtype):
    if out is not None and isinstance(out, np.ndarray):
        got = res[0] if isinstance(res, tuple) and func == "cross_entropy" else res
        if got is not out:
            raise AssertionError(f"{func}: out= given but not returned")
    if func == "cross_entropy":
        return
    r = np.asarray(res)
    if expected_shape is not None and r.shape != expected_shape:
        raise AssertionError(f"{func}: result shape {r.shape}, expected {expected_shape}")
    if expected_dtype is not None and r.dtype != expected_dtype:
        raise AssertionError(f"{func}: result dtype {r.dtype}, expected {expected_dtype}")
    if r.dtype.kind != "f":
        return
    v = np.atleast_1d(r.astype(np.float64))
    ok = np.isnan(v)
    slack = 8 * float(np.finfo(r.dtype).eps)
    if func in ("softmax", "softmin"):
        ok |= (v >= 0) & (v <= 1 + slack)
    elif func == "log_softmax":
        ok |= v <= slack
    else:
        ok[...] = True
    if not ok.all():
        raise AssertionError(f"{func}: values out of range: {v[~ok][:5]}")


def one_call(data: bytes) -> None:
    p = Provider(data)
    p.valid = p.int(0, 3) != 0
    func = p.pick(FUNCS)
    backend = p.pick(BACKENDS)
    dtype = p.pick(DTYPES)
    shape = shape_of(p, min_dims=1 if func == "cross_entropy" else 0)
    x = array(p, shape, dtype) if p.valid or p.int(0, 15) else odd_input(p, shape)
    xdt = x.dtype if isinstance(x, np.ndarray) and x.dtype.kind in "fiub" else None
    result_dtype = None if xdt is None else (xdt if xdt.kind == "f" else np.dtype(np.float64))
    axis = axis_of(p, len(shape))
    kw: dict = {}
    args: tuple
    expected_shape = shape
    if func in ("softmax", "log_softmax", "softmin"):
        args = (x, axis)
        kw["where"] = where_of(p, shape)
        if p.int(0, 3) == 0:
            kw["dtype"] = p.pick((np.float16, np.float32, np.float64, "float32", None) if p.valid else
                                 (np.float16, np.float32, np.float64, np.int32, "float32", "bogus", None))
            try:
                if kw["dtype"] is not None and np.dtype(kw["dtype"]).kind == "f":
                    result_dtype = np.dtype(kw["dtype"])
            except TypeError:
                pass
        if func != "softmin":
            kw["beta"] = beta_of(p)
        kw["threads"] = threads_of(p)
        kw["out"] = out_of(p, shape, result_dtype or np.float64, (x,))
    elif func == "logsumexp":
        args = (x, axis)
        kw["keepdims"] = p.bool()
        kw["where"] = where_of(p, shape)
        kw["beta"] = beta_of(p, finite=True)
        kw["threads"] = threads_of(p)
        expected_shape = None
        if isinstance(axis, int) and shape and -len(shape) <= axis < len(shape):
            ax = axis % len(shape)
            expected_shape = shape[:ax] + ((1,) if kw["keepdims"] else ()) + shape[ax + 1:]
        elif not shape and axis in (0, -1):
            expected_shape = ()
        kw["out"] = out_of(p, expected_shape if expected_shape is not None else shape, result_dtype or np.float64, (x,))
    elif func in ("softmax_backward", "log_softmax_backward"):
        y_shape = shape if p.valid or p.int(0, 7) else shape_of(p)
        y = array(p, y_shape, p.pick(DTYPES))
        args = (x, y, axis)
        if isinstance(x, np.ndarray) and xdt is not None and y.dtype.kind in "fiub":
            rt = np.result_type(x.dtype, y.dtype)
            result_dtype = rt if rt.kind == "f" else np.dtype(np.float64)
        kw["beta"] = beta_of(p)
        kw["where"] = where_of(p, shape)
        kw["threads"] = threads_of(p)
        kw["out"] = out_of(p, shape, result_dtype or np.float64, (x, y))
    else:
        ax = axis % len(shape) if isinstance(axis, int) and shape and -len(shape) <= axis < len(shape) else len(shape) - 1
        classes = shape[ax] if shape else 1
        sample = shape[:ax] + shape[ax + 1:]
        r = p.int(0, 8 if p.valid else 9)
        if r < 6:
            t_dtype = p.pick((np.int64, np.int32, np.int8))
            if p.valid:  # in range, or ignore_index (-100)
                t_vals = np.array([p.pick((p.int(0, max(classes - 1, 0)), -100)) for _ in range(8)], dtype=np.int64)
            else:
                t_vals = np.array([p.int(-101, max(classes, 1)) for _ in range(8)], dtype=np.int64)
            t = np.resize(t_vals.astype(t_dtype), sample)  # (wraps around for int8, as intended)
        elif r < 9:
            t = array(p, shape if p.valid or p.int(0, 7) else shape_of(p), p.pick((np.float32, np.float64, np.float16)))
        else:
            t = p.pick((np.ones(sample, bool), np.ones(sample, np.complex64), "x", None))
        args = (x, t, axis)
        if p.valid:
            kw["reduction"] = p.pick(("mean", "sum", "none"))
            kw["ignore_index"] = -100
            kw["label_smoothing"] = p.pick((0.0, 0.0, 0.1, 1.0))
        else:
            kw["reduction"] = p.pick(("mean", "sum", "none", "avg", None))
            kw["ignore_index"] = p.pick((-100, 0, -1, 2, 1.5, None, np.int8(3)))
            kw["label_smoothing"] = p.pick((0.0, 0.1, 1.0, -0.5, 2.0, float("nan"), "0.1", True))
        if p.bool():
            kw["weight"] = (np.resize(values(p, np.float32, 8), (classes,)) if p.valid else
                            p.pick((np.resize(values(p, np.float32, 8), (classes,)), np.ones(classes + 1), np.ones((classes, 1)), "w")))
        kw["return_grad"] = p.bool()
        kw["threads"] = threads_of(p)
        expected_shape = None

    if xdt is None:  # an odd input: only the exception contract is checked
        expected_shape = result_dtype = None
    arrays_in = [a for a in args if isinstance(a, np.ndarray)]
    before = [snapshot(a) for a in arrays_in]
    out = kw.get("out")
    out_before = snapshot(out)
    fn = getattr(fs, func)
    with _api.use_backend(backend):
        try:
            res = fn(*args, **kw)
        except ALLOWED:
            if isinstance(out, np.ndarray) and not same_bits(out, out_before):
                raise AssertionError(f"{func} on {backend}: a failing call modified out=")
            for a, b in zip(arrays_in, before):
                if not same_bits(a, b):
                    raise AssertionError(f"{func} on {backend}: a failing call modified an input")
            return
    for a, b in zip(arrays_in, before):
        if a is not out and not same_bits(a, b):
            if isinstance(out, np.ndarray) and np.shares_memory(a, out):
                continue
            raise AssertionError(f"{func} on {backend}: an input (not out=) was modified")
    check_result(func, res, out, expected_shape, result_dtype)


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name atheris expects
    one_call(data)


if atheris is not None:
    # Coverage of the decoder too, so that libFuzzer learns which bytes pick which options
    # (the package's Python modules are instrumented at import, above; the C++ kernels are
    # not, as they are not built with -fsanitize=fuzzer).
    for _name in ("values", "shape_of", "array", "odd_input", "axis_of", "beta_of", "where_of", "threads_of",
                  "out_of", "check_result", "one_call"):
        globals()[_name] = atheris.instrument_func(globals()[_name])


def _fallback(argv) -> int:
    """Random inputs without coverage guidance, honouring -max_total_time and -runs."""
    limit, runs = 60.0, None
    for a in argv[1:]:
        if a.startswith("-max_total_time="):
            limit = float(a.split("=", 1)[1])
        elif a.startswith("-runs="):
            runs = int(a.split("=", 1)[1])
    print(f"fuzz_api: atheris is not installed; running random inputs for {limit:g} s (no coverage guidance)")
    start, n = time.monotonic(), 0
    while time.monotonic() - start < limit and (runs is None or n < runs):
        one_call(os.urandom(random.randint(0, 512)))
        n += 1
    print(f"Done {n} runs in {time.monotonic() - start:.0f} second(s)")
    return 0


def main() -> int:
    if atheris is None:
        return _fallback(sys.argv)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
