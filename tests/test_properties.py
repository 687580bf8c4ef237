"""Property tests (issue #8): every public function, on every backend, against the pure-NumPy
backend ("numpy"), which has the same semantics.

Inputs are drawn by hypothesis: shapes with 0 to 4 dimensions (sides of 0 and 1 included, and
long rows made by tiling a small drawn array so that SIMD tails, several online blocks and two
OpenMP threads are reached), every axis, memory layouts (C, Fortran, transposed, negative
strides, steps > 1, stride-0 broadcast views, misaligned buffers), dtypes float16/float32/float64, integers and
booleans, values including NaN, +/-inf, subnormals, +/-3.4e38 and +/-1.7e308, where= masks
(broadcast, all-false rows), out= arrays of every layout and in place, beta, dtype= and threads.

The expected value is the "numpy" backend applied to a C-contiguous copy of the same input,
without out=. Each backend (the numpy one included, on the unusual layout / out= / in-place
variant) must give, element by element:

* NaN exactly where the reference has NaN, and the same infinities (position and sign);
* elsewhere |actual - expected| <= ulps * spacing(expected) + rtol * |expected| + atol, with
  ulps/rtol from ``value_tolerance`` (float16 1 ULP, float32 4 ULP, float64 rtol 1e-12), an
  absolute floor for results at the underflow threshold (float32 1e-37, float64 1e-300), and
  for log-domain results and backward passes an absolute term from the conditioning of the
  formula (see ``forward_tolerance``, ``logsumexp`` check, ``backward_tolerance``,
  ``cross_entropy_tolerance``);
* if the reference raises, the same exception type, with out= untouched; inputs that are not
  out= are never modified.

Two documented kernel behaviours are allowed for, explicitly:

* the compiled kernels run with subnormals flushed to zero (FTZ and DAZ, csrc/fpenv.h): an
  element also passes if it matches the reference computed on inputs -- arrays and beta --
  whose subnormal values (in the working dtype) are replaced by 0, and the atol floors cover
  flushed outputs and intermediates;
* reductions whose *finite* intermediate values overflow the working dtype (backward passes and
  cross-entropy rows where |z - logsumexp z|, sum(grad * y), ... exceed the dtype's maximum, or
  where e^y underflows it against an infinite sum) are not compared: the kernels work in the
  dtype and the NumPy path in a wider one there. The certain bugs found among these are fixed
  and pinned by the regression tests at the end of this file;
* cross-entropy gradient rows with +inf logits or non-finite probability targets are not
  compared (the kernels give a NaN row, the NumPy path NaN/inf only at those entries); their
  losses are.

Runs are reproducible: ``derandomize=True`` and no example database. The number of examples
per test (default 60) can be raised with FASTSOFTMAX_HYPOTHESIS_EXAMPLES; setting
FASTSOFTMAX_HYPOTHESIS_RANDOM=1 makes each run a fresh random search (bug hunting, not CI).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax import _api

AxisError = np.exceptions.AxisError
ALLOWED_ERRORS = (TypeError, ValueError, AxisError)

BACKENDS = tuple(_api.available_backends())
KERNEL_BACKENDS = tuple(b for b in BACKENDS if b != "numpy")
EXAMPLES = int(os.environ.get("FASTSOFTMAX_HYPOTHESIS_EXAMPLES", "60"))
# FASTSOFTMAX_TEST_MISALIGNED=0 leaves misaligned arrays out (for a sanitizer run while the
# kernels still dereference them: UBSan stops the process at the first one)
MISALIGNED = os.environ.get("FASTSOFTMAX_TEST_MISALIGNED", "1") != "0"
# FASTSOFTMAX_HYPOTHESIS_RANDOM=1: a fresh random search each run (for bug hunting, not CI)
RANDOM = os.environ.get("FASTSOFTMAX_HYPOTHESIS_RANDOM", "") == "1"

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
INTEGERS = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.bool_))
ALL_DTYPES = FLOATS + INTEGERS


# ---------------------------------------------------------------------------------------
# Values


def _specials(dtype: np.dtype) -> list:
    """Edge values of a floating dtype, each exactly representable in it."""
    fi = np.finfo(dtype)
    raw = [
        0.0, -0.0, 1.0, -1.0, 0.5, 2.0,
        float(fi.max), -float(fi.max), float(fi.max) / 2,
        float(fi.smallest_subnormal), -float(fi.smallest_subnormal),
        float(fi.smallest_normal), -float(fi.smallest_normal), float(fi.smallest_normal) / 3,
        math.nan, math.inf, -math.inf,
        3.4e38, -3.4e38, 1.7e308, -1.7e308,  # overflow to inf in the narrower dtypes
        88.72, -87.33, -103.97, 709.78, -745.13, 11.09, -17.33,  # exp over/underflow edges
        1024.0, -1024.0, 1400.0, -1400.0, 1e4, -1e4,
    ]
    with np.errstate(over="ignore"):
        vals = np.array(raw, dtype=np.float64).astype(dtype)
    unique = {v.tobytes(): float(v) for v in vals if not np.isnan(v)}  # by bits: keeps -0.0
    return sorted(unique.values()) + [math.nan]


def float_elements(dtype: np.dtype):
    width = dtype.itemsize * 8
    big = 6e4 if width == 16 else 1e6
    return st.one_of(
        st.floats(-30, 30, width=width),
        st.floats(-30, 30, width=width),
        st.floats(-big, big, width=width),
        st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True),
        st.sampled_from(_specials(dtype)),
    )


def elements(dtype: np.dtype):
    if dtype.kind == "f":
        return float_elements(dtype)
    if dtype.kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    return st.one_of(st.integers(-20 if info.min < 0 else 0, 20), st.integers(int(info.min), int(info.max)))


# ---------------------------------------------------------------------------------------
# Shapes and memory layouts


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


@dataclass
class Recipe:
    """A drawn array: ``make()`` rebuilds it (fresh memory, same layout and values) so that each
    backend gets its own copy, which matters for in-place calls."""

    base: np.ndarray
    view: Callable[[np.ndarray], np.ndarray]
    layout: str

    def make(self) -> np.ndarray:
        return self.view(self.base.copy())

    def __repr__(self) -> str:  # shown by hypothesis on failure
        x = self.make()
        return f"Recipe(layout={self.layout!r}, shape={x.shape}, strides={x.strides}, dtype={x.dtype}, values={x!r})"


small_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
row_shapes = st.tuples(st.integers(0, 3), st.integers(0, 70))  # SIMD widths 4..16 and their tails
mid_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=24).filter(lambda s: _prod(s) <= 3000)
shapes = st.one_of(small_shapes, small_shapes, row_shapes, mid_shapes)

# Long rows and big slices, as tiles of a small drawn array: more than one online block
# (8192 float32 / 4096 float64 entries) and at least two threads' worth (32768 entries).
big_shapes = st.sampled_from([(1, 40000), (2, 20000), (3, 8193), (40000,), (5, 9000, 1), (2, 4097, 5), (9000, 4)])


def misaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting one byte into its buffer: not aligned for any
    dtype wider than a byte (NumPy allows such arrays: np.frombuffer with an offset, say)."""
    a = np.asarray(a)
    buf = np.empty(a.nbytes + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@st.composite
def arrays(draw, dtype: np.dtype, shape: tuple, layouts=None) -> Recipe:
    """An array of ``shape`` and ``dtype`` in a drawn memory layout."""
    ndim = len(shape)
    choices = ["C", "F", "flip", "step", "broadcast", "transpose"] if ndim else ["C"]
    if MISALIGNED:
        choices.append("misaligned")
    if layouts is not None:
        choices = [c for c in choices if c in layouts] or ["C"]
    layout = draw(st.sampled_from(choices))
    el = elements(dtype)
    if layout == "C":
        return Recipe(draw(hnp.arrays(dtype, shape, elements=el)), lambda b: b, "C")
    if layout == "misaligned":
        return Recipe(draw(hnp.arrays(dtype, shape, elements=el)), misaligned, "misaligned")
    if layout == "F":
        base = draw(hnp.arrays(dtype, shape, elements=el))
        return Recipe(np.asfortranarray(base), lambda b: np.asfortranarray(b), "F")
    k = draw(st.integers(0, ndim - 1))
    if layout == "flip":
        return Recipe(draw(hnp.arrays(dtype, shape, elements=el)), lambda b: np.flip(b, axis=k), f"flip axis {k}")
    if layout == "step":
        step = draw(st.sampled_from([2, 3, -2]))
        big = list(shape)
        big[k] = shape[k] * abs(step)
        base = draw(hnp.arrays(dtype, tuple(big), elements=el))
        index = tuple(slice(None, None, step) if d == k else slice(None) for d in range(ndim))
        return Recipe(base, lambda b: b[index], f"step {step} on axis {k}")
    if layout == "broadcast":
        # stride 0 along every axis drawn as broadcast (read-only view)
        mask = draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
        small = tuple(1 if m else s for m, s in zip(mask, shape))
        base = draw(hnp.arrays(dtype, small, elements=el))
        return Recipe(base, lambda b: np.broadcast_to(b, shape), f"broadcast from {small}")
    perm = draw(st.permutations(range(ndim)))
    inv = tuple(np.argsort(perm))
    base = draw(hnp.arrays(dtype, tuple(shape[p] for p in perm), elements=el))
    return Recipe(base, lambda b: b.transpose(inv), f"transpose {inv}")


@st.composite
def tiled(draw, dtype: np.dtype, shape: tuple) -> Recipe:
    """A big array filled by repeating a small drawn one (C order)."""
    seed = draw(hnp.arrays(dtype, st.integers(1, 97), elements=elements(dtype)))
    layout = draw(st.sampled_from(["C", "F"]))
    if layout == "C":
        return Recipe(seed, lambda b: np.resize(b, shape), f"tiled C {len(seed)}")
    return Recipe(seed, lambda b: np.asfortranarray(np.resize(b, shape)), f"tiled F {len(seed)}")


@st.composite
def inputs(draw, dtypes=ALL_DTYPES, min_dims=0, big=True):
    dtype = draw(st.sampled_from(dtypes))
    if big and draw(st.integers(0, 7)) == 0:
        shape = draw(big_shapes)
        rec = draw(tiled(dtype, shape))
    else:
        shape = draw(shapes.filter(lambda s: len(s) >= min_dims))
        rec = draw(arrays(dtype, shape))
    return rec


def axes_for(ndim: int):
    n = max(ndim, 1)
    return st.integers(-n, n - 1)


@st.composite
def where_masks(draw, shape: tuple):
    """None, or a boolean array broadcastable to ``shape`` (often a stride-0 view)."""
    kind = draw(st.sampled_from(["none", "none", "full", "row", "column", "scalar", "flip"]))
    if kind == "none":
        return None
    bits = np.array(draw(st.lists(st.booleans(), min_size=1, max_size=67)), dtype=bool)
    if kind == "scalar" or not shape:
        return np.bool_(bits[0])
    if kind == "row":  # the same selection for every row: shape (n,)
        return np.resize(bits, shape[-1:])
    if kind == "column":  # one flag per leading index: trailing axis broadcast
        return np.resize(bits, shape[:-1] + (1,))
    w = np.resize(bits, shape)
    return np.flip(w) if kind == "flip" else w


OUT_KINDS = ("none", "none", "C", "F", "strided", "flip", "inplace", "misaligned")


def make_out(kind: str, shape: tuple, dtype: np.dtype, inplace_candidates=()) -> Optional[np.ndarray]:
    """A writeable out= array of the given layout, pre-filled with a sentinel."""
    if kind == "none":
        return None
    if kind == "inplace":
        for a in inplace_candidates:
            if a.shape == shape and a.dtype == dtype and a.flags.writeable:
                return a
        kind = "C"
    if kind == "misaligned" and MISALIGNED:
        return misaligned(np.full(shape, -7, dtype))
    if kind == "F" and shape:  # (np.asfortranarray would make a 0-d array 1-d)
        return np.asfortranarray(np.full(shape, -7, dtype))
    if kind == "strided" and shape:
        buf = np.full(shape[:-1] + (2 * shape[-1],), -7, dtype)
        return buf[..., ::2]
    if kind == "flip" and shape:
        return np.flip(np.full(shape, -7, dtype))
    return np.full(shape, -7, dtype)




# ---------------------------------------------------------------------------------------
# Comparison


def _wide(a) -> np.ndarray:
    return np.asarray(a).astype(np.longdouble)


class Mismatch(AssertionError):
    """A failed comparison; ``index`` is the first offending position of the result."""

    def __init__(self, message: str, index: tuple):
        super().__init__(message)
        self.index = index


def explain(exc: Mismatch, axis: Optional[int], **arrays) -> str:
    """The failure message plus the inputs of the reduction holding the first mismatch."""
    lines = [str(exc)]
    for name, a in arrays.items():
        if a is None:
            continue
        a = np.asarray(a)
        idx = exc.index
        if a.ndim != len(idx) or not a.ndim:
            part, label = a, "(whole)"
        else:
            if axis is not None:
                idx = idx[:axis] + (slice(None),) + idx[axis + 1:]
            part, label = a[idx], str(idx)
        lines.append(f"  {name}{label} = {np.array2string(np.asarray(part), threshold=40, max_line_width=150)}")
    return "\n".join(lines)


def _close(actual, expected, tol_args) -> np.ndarray:
    """Element-wise: same NaN, same infinity, or finite and within the tolerance."""
    ulps, rtol, atol = tol_args
    a_nan, e_nan = np.isnan(actual), np.isnan(expected)
    a_inf, e_inf = np.isinf(actual), np.isinf(expected)
    ok = (a_nan & e_nan) | ((a_inf | e_inf) & (actual == expected))
    finite = ~(a_nan | e_nan | a_inf | e_inf)
    if finite.any():
        e_raw = expected[finite]
        e = _wide(e_raw)
        with np.errstate(over="ignore"):  # spacing(max) is inf
            spacing = _wide(np.spacing(np.abs(e_raw)))
        tol = ulps * spacing + rtol * np.abs(e) + np.broadcast_to(atol, expected.shape)[finite]
        ok[finite] = np.abs(_wide(actual[finite]) - e) <= tol
    return ok


def assert_matches(actual, expecteds: Sequence, *, ulps: float, rtol: float = 0.0, atol: Any = 0.0,
                   skip: Optional[np.ndarray] = None, what: str = "") -> None:
    """Every element of ``actual`` matches the same element of one of ``expecteds`` (see the
    module docstring); elements where ``skip`` is True are not compared."""
    actual = np.asarray(actual)
    expecteds = [np.asarray(e) for e in expecteds]
    if actual.ndim == 0 and all(e.ndim == 0 for e in expecteds):  # compare as shape (1,)
        assert_matches(actual.reshape(1), [e.reshape(1) for e in expecteds], ulps=ulps, rtol=rtol,
                       atol=np.reshape(atol, 1), skip=None if skip is None else np.reshape(skip, 1), what=what)
        return
    first = expecteds[0]
    assert actual.shape == first.shape, f"{what}: shape {actual.shape} != {first.shape}"
    assert actual.dtype == first.dtype, f"{what}: dtype {actual.dtype} != {first.dtype}"
    atol = np.broadcast_to(np.asarray(atol, dtype=np.longdouble), first.shape)
    ok = np.zeros(first.shape, bool) if skip is None else np.broadcast_to(skip, first.shape).copy()
    for e in expecteds:
        ok |= _close(actual, e, (ulps, rtol, atol))
    if ok.all():
        return
    bad = ~ok
    first_bad = tuple(int(i) for i in np.argwhere(bad)[0])
    a, e = actual[bad][:5], first[bad][:5]
    if not np.array_equal(np.isnan(a), np.isnan(e)):
        reason = "NaN positions differ"
    elif (np.isinf(a) | np.isinf(e)).any():
        reason = "infinities differ"
    else:
        err = np.abs(_wide(actual[bad]) - _wide(first[bad]))
        with np.errstate(over="ignore"):
            tol = ulps * _wide(np.spacing(np.abs(first[bad]))) + rtol * np.abs(_wide(first[bad])) + atol[bad]
        reason = f"values outside tolerance (worst err/tol {float(np.max(err / np.maximum(tol, 1e-300))):.3g})"
    raise Mismatch(
        f"{what}: {reason} at {np.argwhere(bad)[:5].tolist()} ({int(bad.sum())} in all): actual {a!r}, "
        f"expected {e!r}" + (f" (or, inputs flushed, {expecteds[1][bad][:5]!r})" if len(expecteds) > 1 else ""),
        first_bad,
    )


def eps_of(dtype: np.dtype) -> float:
    """Unit roundoff of the dtype the work is done in (float16 is computed in float32)."""
    return float(np.finfo(work_dtype(dtype)).eps)


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the kernels compute in for a result dtype: float32 for float16 and float32."""
    return np.dtype(np.float64) if np.dtype(dtype).itemsize >= 8 else np.dtype(np.float32)


def value_tolerance(dtype: np.dtype) -> dict:
    """The per-dtype part of every tolerance: float16 1 ULP (computed in float32 and rounded once
    more), float32 4 ULP, float64 rtol 1e-12 (and 4 ULP); plus an absolute floor for results at
    the underflow threshold (flushed to zero by the kernels, or a few subnormal steps apart):
    2**-23 (float16), 1e-37 (float32, ~8.5 x its smallest normal), 1e-300 (float64)."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return dict(ulps=1, rtol=0.0, atol=2.0**-23)
    if dtype == np.float32:
        return dict(ulps=4, rtol=0.0, atol=1e-37)
    return dict(ulps=4, rtol=1e-12, atol=1e-300)


def row_scale(z: np.ndarray, axis: int, keepdims: bool = True) -> np.ndarray:
    """max |z| over the finite entries of each reduction along ``axis`` (0 if none), plus
    log(n) + 1: the size of logsumexp(z), which sets the absolute error of z - logsumexp(z)."""
    z = np.asarray(z, dtype=np.longdouble)
    if z.ndim == 0:
        z, axis = z.reshape(1), 0
    n = z.shape[axis]
    m = np.where(np.isfinite(z), np.abs(z), 0).max(axis=axis, keepdims=keepdims, initial=0)
    return m + math.log(max(n, 1)) + 1


def scaled_input(x: np.ndarray, beta: float, work: np.dtype, where) -> np.ndarray:
    """beta * x as both paths compute it (rounded in the work dtype), -inf outside where."""
    with np.errstate(over="ignore", invalid="ignore"):
        xw = np.asarray(x).astype(work)
        z = xw * work.type(beta) if beta != 1.0 else xw
    if where is not None:
        z = np.where(np.broadcast_to(where, z.shape), z, -np.inf)
    return z


def flush_subnormals(a, work: np.dtype):
    """``a`` with the values that are subnormal once cast to ``work`` replaced by 0 (what the
    kernels' DAZ mode reads), or ``a`` itself when there are none."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return a
    with np.errstate(over="ignore", under="ignore"):
        w = np.abs(a.astype(work))
    sub = (w > 0) & (w < np.finfo(work).smallest_normal)
    if not sub.any():
        return a
    return np.where(sub, np.zeros((), a.dtype), a).astype(a.dtype)


def flush_scalar(v: float, work: np.dtype) -> float:
    """A scalar parameter (beta) as the kernels read it in DAZ mode: 0 if subnormal in ``work``."""
    with np.errstate(over="ignore", under="ignore"):
        w = abs(float(work.type(v)))
    return 0.0 if 0 < w < np.finfo(work).smallest_normal else v


# ---------------------------------------------------------------------------------------
# Running one call on every backend


def _snapshot(a):
    return None if a is None else np.array(a, copy=True)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def run_everywhere(call, reference, check, *, recipes, work, out_spec=None, out_kind="none"):
    """Compute the reference with the numpy backend (and, when some input holds values that
    are subnormal in ``work``, the reference on flushed inputs); then for each backend run
    ``call`` on fresh copies of the inputs with an out= of ``out_kind`` and check the result,
    the inputs and the out= semantics."""
    ref_inputs = [np.array(r.make(), order="C", copy=True) for r in recipes]  # (keeps 0-d)
    expecteds = []
    ref_exc = None
    with _api.use_backend("numpy"):
        try:
            expecteds.append(reference(*ref_inputs, daz=False))
            flushed = [flush_subnormals(a, work) for a in ref_inputs]
            if any(f is not a for f, a in zip(flushed, ref_inputs)) or reference.__dict__.get("flushes_more"):
                expecteds.append(reference(*flushed, daz=True))
        except ALLOWED_ERRORS as exc:
            ref_exc = exc
    note(f"reference: {'raised ' + repr(ref_exc) if ref_exc else expecteds[0]!r}")

    for name in BACKENDS:
        arrays_ = [r.make() for r in recipes]
        originals = [_snapshot(a) for a in arrays_]
        out = None
        if out_spec is not None and ref_exc is None:
            shape, dtype = out_spec(expecteds[0])
            out = make_out(out_kind, shape, dtype, arrays_)
        out_before = _snapshot(out)
        with _api.use_backend(name):
            if ref_exc is not None:
                with pytest.raises(type(ref_exc)):
                    call(*arrays_, out=out)
                continue
            result = call(*arrays_, out=out)
        what = f"backend {name}, out={out_kind}"
        if out is not None:
            assert result is out, f"{what}: out= not returned"
        check(result, expecteds if name != "numpy" else expecteds[:1], what)
        for a, orig in zip(arrays_, originals):
            if a is not out:
                assert _same_bits(a, orig), f"{what}: an input other than out= was modified"
        del out_before


# ---------------------------------------------------------------------------------------
# softmax, log_softmax, softmin

BETAS = st.one_of(
    st.just(1.0),
    st.sampled_from([0.0, -1.0, 0.5, 2.0, 1e-3, 1e30, -1e30, math.inf, -math.inf]),
    st.floats(-4, 4),
)
THREADS = st.sampled_from([None, 1, 2])
OUT_DTYPES = st.sampled_from([None, None, np.float16, np.float32, np.float64])


def _result_dtype(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def forward_tolerance(x, axis, beta, where, dtype, log):
    """softmax / softmin: value_tolerance(dtype). log_softmax: the same plus
    8 * eps * (max finite |beta*x| of the row + log n + 1), the error that a correctly rounded
    logsumexp leaves in z - logsumexp(z)."""
    tol = value_tolerance(dtype)
    if log:
        z = scaled_input(x, beta, work_dtype(dtype), where)
        tol["atol"] = tol["atol"] + 8 * eps_of(dtype) * row_scale(z, axis)
    return tol


@PROPERTY
@given(data=st.data())
@pytest.mark.parametrize("func", ["softmax", "log_softmax", "softmin"])
def test_forward_matches_numpy_backend(func, data):
    rec = data.draw(inputs(), label="x")
    x0 = rec.make()
    axis = data.draw(axes_for(x0.ndim), label="axis")
    beta = -1.0 if func == "softmin" else data.draw(BETAS, label="beta")
    where = data.draw(where_masks(x0.shape), label="where")
    dtype = data.draw(OUT_DTYPES, label="dtype")
    threads = data.draw(THREADS, label="threads")
    out_kind = data.draw(st.sampled_from(OUT_KINDS), label="out")
    fn = getattr(fs, func)
    kw = dict(where=where, dtype=dtype, threads=threads)
    if func != "softmin":
        kw["beta"] = beta
    result_dtype = np.dtype(dtype) if dtype is not None else _result_dtype(x0.dtype)

    def call(x, out=None):
        return fn(x, axis, out=out, **kw)

    work = work_dtype(result_dtype)

    def reference(x, daz):
        ref_kw = {**kw, "threads": None}
        if daz and "beta" in ref_kw:
            ref_kw["beta"] = flush_scalar(beta, work)
        return fn(x, axis, **ref_kw)

    reference.flushes_more = flush_scalar(beta, work) != beta

    def check(res, exps, what):
        xx = x0.reshape(x0.shape or (1,))
        ax = axis % xx.ndim
        w = None if where is None else np.broadcast_to(where, x0.shape).reshape(xx.shape)
        tol = forward_tolerance(xx, ax, beta, w, result_dtype, func == "log_softmax")
        tol["atol"] = np.broadcast_to(tol["atol"], xx.shape).reshape(x0.shape)
        try:
            assert_matches(res, exps, what=f"{func} {what}", **tol)
        except Mismatch as exc:
            raise AssertionError(explain(exc, ax if x0.ndim else None, x=x0, where=w)) from None

    run_everywhere(call, reference, check, recipes=[rec], work=work,
                   out_spec=lambda e: (e.shape, e.dtype), out_kind=out_kind)


# ---------------------------------------------------------------------------------------
# logsumexp


@PROPERTY
@given(data=st.data())
def test_logsumexp_matches_numpy_backend(data):
    rec = data.draw(inputs(), label="x")
    x0 = rec.make()
    axis = data.draw(axes_for(x0.ndim), label="axis")
    beta = data.draw(BETAS, label="beta")
    keepdims = data.draw(st.booleans(), label="keepdims")
    where = data.draw(where_masks(x0.shape), label="where")
    threads = data.draw(THREADS, label="threads")
    out_kind = data.draw(st.sampled_from(("none", "C", "F", "strided", "flip", "misaligned")), label="out")
    result_dtype = _result_dtype(x0.dtype)

    def call(x, out=None):
        return fs.logsumexp(x, axis, keepdims=keepdims, where=where, beta=beta, out=out, threads=threads)

    work = work_dtype(result_dtype)

    def reference(x, daz):
        b = flush_scalar(beta, work) if daz else beta
        return fs.logsumexp(x, axis, keepdims=keepdims, where=where, beta=b)

    reference.flushes_more = flush_scalar(beta, work) != beta

    def check(res, exps, what):
        # value_tolerance plus 8 * eps * (max finite |beta*x| + log n + 1), absolute: the
        # condition number of logsumexp times its size.
        xx = x0.reshape(x0.shape or (1,))
        ax = axis % xx.ndim
        w = None if where is None else np.broadcast_to(where, x0.shape).reshape(xx.shape)
        tol = value_tolerance(result_dtype)
        scale = row_scale(scaled_input(xx, beta, work_dtype(result_dtype), w), ax, keepdims=keepdims)
        tol["atol"] = tol["atol"] + 8 * eps_of(result_dtype) * scale.reshape(np.shape(exps[0]))
        try:
            assert_matches(res, exps, what=f"logsumexp {what}", **tol)
        except Mismatch as exc:
            if x0.ndim and not keepdims:  # the result lacks the axis: show the whole reduction
                exc.index = exc.index[:ax] + (0,) + exc.index[ax:]
            raise AssertionError(explain(exc, ax if x0.ndim else None, x=x0, where=w)) from None

    run_everywhere(call, reference, check, recipes=[rec], work=work_dtype(result_dtype),
                   out_spec=lambda e: (e.shape, e.dtype), out_kind=out_kind)


# ---------------------------------------------------------------------------------------
# softmax_backward, log_softmax_backward


@st.composite
def backward_pair(draw, log: bool):
    """(grad, y) recipes of one shape. y is either a valid output of the forward function
    (softmax: in [0, 1]; log_softmax: <= 0, -inf included), or drawn freely in [-1000, 1000]."""
    g = draw(inputs(dtypes=FLOATS + (np.dtype(np.int32),)))
    shape = g.make().shape
    y_dtype = draw(st.sampled_from([_result_dtype(g.base.dtype)] + list(FLOATS)))
    valid = draw(st.booleans())
    width = y_dtype.itemsize * 8
    tiny = float(np.finfo(y_dtype).smallest_subnormal)
    if valid and log:
        el = st.one_of(st.floats(-50, 0, width=width), st.sampled_from([0.0, -math.inf, -1e4, -103.97, -745.13]))
    elif valid:
        el = st.one_of(st.floats(0, 1, width=width), st.sampled_from([0.0, 1.0, 0.5, tiny]))
    else:
        finite = [v for v in _specials(y_dtype) if math.isfinite(v) and abs(v) < 1e3]
        el = st.one_of(st.floats(-30, 30, width=width), st.floats(-1e3, 1e3, width=width), st.sampled_from(finite))
    if _prod(shape) > 3000:
        seed = draw(hnp.arrays(y_dtype, st.integers(1, 97), elements=el))
        y = Recipe(seed, lambda b: np.resize(b, shape), "tiled")
    else:
        y = Recipe(draw(hnp.arrays(y_dtype, shape, elements=el)), lambda b: b, "C")
    return g, y, valid


def backward_tolerance(grad, y, axis, beta, where, dtype, log):
    """The forward-error bound of the two formulas, evaluated in long double from the inputs:
        softmax:     (n + 8) * eps * |beta| * |y| * (|g| + sum |g * y|)
        log_softmax: (n + 8) * eps * |beta| * (|g| + e^y * sum |g|)
    (n = length of the axis: an n-term sum, the subtraction and the products), plus
    value_tolerance(dtype), plus (n + 2) * tiny * |beta| * (1 + sum |g|) for intermediates that
    underflow the working dtype (tiny = its smallest normal number: e^y for y < -87 in float32,
    say, is flushed to 0 by the kernels but not by the wider NumPy path). Also returns the
    reductions not compared: those whose finite intermediates (sum g*y, g - sum, e^y,
    e^y * sum g, products) exceed the working dtype, and (log_softmax) those where e^y
    underflows it while sum g is infinite."""
    tol = value_tolerance(dtype)
    g = _wide(grad)
    s = _wide(y)
    if where is not None:
        g = np.where(where, g, 0)
    n = g.shape[axis]
    big = np.finfo(work_dtype(dtype)).max / 4
    ag = np.abs(g)
    with np.errstate(over="ignore", invalid="ignore"):
        if log:
            bound = ag + np.exp(s) * ag.sum(axis=axis, keepdims=True)
        else:
            bound = np.abs(s) * (ag + (ag * np.abs(s)).sum(axis=axis, keepdims=True))
        bound = (n + 8) * eps_of(dtype) * abs(beta) * bound
        # overflow of the finite part (non-finite inputs zeroed: their semantics must agree)
        gf = np.where(np.isfinite(g), g, 0)
        sf = np.where(np.isfinite(s), s, 0)
        if log:
            total = np.abs(gf).sum(axis=axis, keepdims=True)
            inter = np.maximum(np.maximum(np.abs(gf) + np.exp(sf) * total, total), np.exp(sf))
        else:
            dot = np.abs(gf * sf).sum(axis=axis, keepdims=True)
            inter = np.maximum((np.abs(gf) + dot) * np.maximum(np.abs(sf), 1), dot)
        over = ~(inter <= big)
        if log:
            # e^y below the working dtype's smallest normal reads 0 in the kernels: against an
            # infinite sum of g that is 0 * inf = NaN, where the wider NumPy path has +-inf
            tiny_work = np.finfo(work_dtype(dtype)).smallest_normal
            e = np.exp(s)
            over = over | ((e > 0) & (e < tiny_work) & np.isinf(g.sum(axis=axis, keepdims=True)))
        skip = np.broadcast_to(over.any(axis=axis, keepdims=True), g.shape)
        # the kernels compute in the working dtype with FTZ: intermediates (e^y, products in
        # the sum) below its smallest normal number read 0
        tiny = float(np.finfo(work_dtype(dtype)).smallest_normal)
        flushed = (n + 2) * tiny * abs(beta) * (1 + np.abs(gf).sum(axis=axis, keepdims=True))
    tol["atol"] = tol["atol"] + np.where(np.isnan(bound), np.inf, bound) + flushed
    return tol, skip


@PROPERTY
@given(data=st.data())
@pytest.mark.parametrize("func", ["softmax_backward", "log_softmax_backward"])
def test_backward_matches_numpy_backend(func, data):
    log = func == "log_softmax_backward"
    g_rec, y_rec, valid = data.draw(backward_pair(log), label="grad, y")
    g0, y0 = g_rec.make(), y_rec.make()
    axis = data.draw(axes_for(g0.ndim), label="axis")
    beta = data.draw(st.sampled_from([1.0, 1.0, -1.0, 0.5, 0.0, 3.0]), label="beta")
    where = data.draw(where_masks(g0.shape), label="where")
    threads = data.draw(THREADS, label="threads")
    out_kind = data.draw(st.sampled_from(OUT_KINDS + ("inplace",)), label="out")
    fn = getattr(fs, func)
    result_dtype = _result_dtype(np.result_type(g0.dtype, y0.dtype))

    def call(g, y, out=None):
        return fn(g, y, axis, beta=beta, where=where, out=out, threads=threads)

    def reference(g, y, daz):
        return fn(g, y, axis, beta=beta, where=where)

    def check(res, exps, what):
        shape = g0.shape or (1,)
        ax = axis % len(shape)
        w = None if where is None else np.broadcast_to(where, g0.shape).reshape(shape)
        tol, skip = backward_tolerance(g0.reshape(shape), y0.reshape(shape), ax, beta, w, result_dtype, log)
        tol["atol"] = np.asarray(tol["atol"]).reshape(g0.shape)
        try:
            assert_matches(res, exps, what=f"{func} (valid y: {valid}) {what}", skip=skip.reshape(g0.shape), **tol)
        except Mismatch as exc:
            raise AssertionError(explain(exc, ax if g0.ndim else None, grad=g0, y=y0, where=w)) from None

    run_everywhere(call, reference, check, recipes=[g_rec, y_rec], work=work_dtype(result_dtype),
                   out_spec=lambda e: (e.shape, e.dtype), out_kind=out_kind)


# ---------------------------------------------------------------------------------------
# cross_entropy


@st.composite
def cross_entropy_case(draw):
    logits = draw(inputs(dtypes=FLOATS + (np.dtype(np.int32),), min_dims=1))
    x0 = logits.make()
    axis = draw(axes_for(x0.ndim))
    ax = axis % x0.ndim
    classes = x0.shape[ax]
    sample_shape = x0.shape[:ax] + x0.shape[ax + 1:]
    kind = draw(st.sampled_from(["class", "class", "probabilities"]))
    ignore_index = draw(st.sampled_from([-100, -100, 0, -1, 3]))
    if kind == "class":
        t_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int16]))
        info = np.iinfo(t_dtype)
        choices = list(range(min(max(classes, 1), 200))) + [max(classes - 1, 0), ignore_index]
        choices = [c for c in choices if info.min <= c <= info.max] or [0]
        k = min(_prod(sample_shape), 97)
        flat = draw(st.lists(st.sampled_from(choices), min_size=k, max_size=k))
        target = np.resize(np.array(flat or [0], dtype=t_dtype), sample_shape)
    else:
        t_dtype = draw(st.sampled_from(FLOATS))
        width = np.dtype(t_dtype).itemsize * 8
        el = st.one_of(st.floats(0, 1, width=width), st.sampled_from([0.0, 1.0]), float_elements(np.dtype(t_dtype)))
        flat = draw(st.lists(el, min_size=1, max_size=97))
        target = np.resize(np.array(flat, dtype=t_dtype), x0.shape)
    weight = None
    if draw(st.booleans()) and classes > 0:
        k = min(classes, 53)
        wl = draw(st.lists(st.one_of(st.floats(0, 4), st.sampled_from([0.0, 1.0, 2.5]), st.floats(-2, 2)),
                           min_size=k, max_size=k))
        weight = np.resize(np.array(wl, dtype=draw(st.sampled_from([np.float32, np.float64]))), (classes,))
    return dict(
        logits=logits, axis=axis, target=target, weight=weight, ignore_index=ignore_index,
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0])),
        return_grad=draw(st.booleans()), threads=draw(THREADS),
    )


def cross_entropy_tolerance(x, case, dtype):
    """Tolerances of (loss, grad) and the rows not compared.

    loss: value_tolerance plus (rows + 16) * eps * |scale| * sum over rows of
          max|w| * (2 * max|z| + log C + 1) * (1 + sum |target|)
          (each log-probability carries eps times the row's logsumexp size, and the per-row
          losses are summed); scale is 1 (sum, none) or 1 / the mean's denominator.
    grad: value_tolerance plus |scale| * max|w| * (1 + sum |target|) *
          (16 * eps + 2 * u * (max|z| + log C + 1)), where the second term is the NumPy path's
          own error: it rounds logsumexp to its working type (u = 2**-52 for float16/float32
          logits, whose logsumexp it rounds to float64 -- reported separately; the long double
          epsilon for float64 logits) before forming z - logsumexp.
    skipped rows: finite logits whose spread max z - min z exceeds the working dtype (the
          kernels' z - logsumexp overflows there, the NumPy path's does not), or whose
          sum |w * target| or max|w| * max|z| does; rows with non-finite probability targets;
          for the gradient also rows with +inf logits.
    """
    ax = case["axis"] % x.ndim
    classes = x.shape[ax]
    work = work_dtype(dtype)
    big = np.finfo(work).max / 4
    xr = np.moveaxis(_wide(x), ax, -1).reshape(-1, classes)
    rows = xr.shape[0]
    w = np.ones(classes, np.longdouble) if case["weight"] is None else _wide(case["weight"])
    wmax = float(np.max(np.abs(w))) if classes else 1.0
    t = case["target"]
    eps_s = case["label_smoothing"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xf = np.where(np.isfinite(xr), xr, np.nan)
        spread = np.nanmax(xf, axis=1, initial=-np.inf) - np.nanmin(xf, axis=1, initial=np.inf) if classes else np.zeros(rows)
        if t.dtype.kind == "f":
            tr = np.moveaxis(_wide(t), ax, -1).reshape(-1, classes)
            tsum = np.abs(tr).sum(axis=1)
            wt = np.abs(np.where(np.isfinite(tr), tr, 0) * w).sum(axis=1)
            total = float(rows)
        else:
            tr = t.reshape(-1).astype(np.int64)
            valid = tr[tr != case["ignore_index"]]
            tsum = np.ones(rows)
            wt = np.zeros(rows)
            total = float(np.asarray(w, np.float64)[valid].sum())
        zmax = np.where(np.isfinite(xr), np.abs(xr), 0).max(axis=1, initial=0)
        skip_rows = (spread > big) | ~(wt <= big) | ~(wmax * zmax <= big)
        # non-finite probability targets: the kernels make the gradient row NaN and the loss NaN
        # or +-inf depending on rounding; the NumPy path differs (reported)
        if t.dtype.kind == "f":
            skip_rows = skip_rows | ~np.isfinite(tr).all(axis=1)
        grad_skip_rows = skip_rows
        # +inf logits: the kernels make the gradient row NaN, the NumPy path only the +inf
        # entries (reported); the loss (NaN) is still compared
        grad_skip_rows = grad_skip_rows | (xr == np.inf).any(axis=1)
        tsum = np.where(np.isfinite(tsum), tsum, np.inf) + eps_s
        scale = abs(1.0 / total) if case["reduction"] == "mean" and total != 0 else 1.0
        size = 2 * row_scale(xr, 1, keepdims=False) + 1
        eps = eps_of(dtype)
        per_row = wmax * size * (1 + tsum)
        loss_tol = value_tolerance(dtype)
        loss_atol = (rows + 16) * eps * scale * per_row
        sample_shape = x.shape[:ax] + x.shape[ax + 1:]
        if case["reduction"] == "none":
            loss_tol["atol"] = loss_tol["atol"] + loss_atol.reshape(sample_shape)
            loss_skip = skip_rows.reshape(sample_shape)
        else:
            loss_tol["atol"] = loss_tol["atol"] + float(np.where(skip_rows, 0, loss_atol).sum())
            loss_skip = np.asarray(bool(skip_rows.any()))
        grad_tol = value_tolerance(dtype)
        ref_unit = 2.0**-52 if work == np.float32 else float(np.finfo(np.longdouble).eps)
        ref_err = 2 * ref_unit * row_scale(xr, 1, keepdims=False)
        g = (16 * eps + ref_err) * scale * wmax * (1 + tsum)
        moved = sample_shape + (1,)
        grad_tol["atol"] = grad_tol["atol"] + np.moveaxis(np.asarray(g).reshape(moved), -1, ax)
        grad_skip = np.moveaxis(np.broadcast_to(grad_skip_rows[:, None], (rows, classes)).reshape(sample_shape + (classes,)), -1, ax)
    return loss_tol, loss_skip, grad_tol, grad_skip


@PROPERTY
@given(case=cross_entropy_case())
def test_cross_entropy_matches_numpy_backend(case):
    rec = case["logits"]
    x0 = rec.make()
    kw = {k: case[k] for k in ("ignore_index", "label_smoothing", "return_grad", "reduction")}
    result_dtype = _result_dtype(x0.dtype)
    work = work_dtype(result_dtype)

    def call(x, out=None):
        return fs.cross_entropy(x, case["target"], case["axis"], weight=case["weight"], threads=case["threads"], **kw)

    def reference(x, daz):
        t, w = case["target"], case["weight"]
        if daz:  # the kernels read targets and weights in the working dtype, flushed
            t, w = flush_subnormals(t, work), (None if w is None else flush_subnormals(w, work))
        return fs.cross_entropy(x, t, case["axis"], weight=w, **kw)

    reference.flushes_more = True  # targets and weights may hold subnormals too

    def check(res, exps, what):
        loss_tol, loss_skip, grad_tol, grad_skip = cross_entropy_tolerance(x0, case, result_dtype)
        ax = case["axis"] % x0.ndim
        try:
            if case["return_grad"]:
                assert isinstance(res, tuple) and len(res) == 2
                assert_matches(res[1], [e[1] for e in exps], what=f"cross_entropy grad {what}", skip=grad_skip, **grad_tol)
                assert_matches(res[0], [e[0] for e in exps], what=f"cross_entropy loss {what}", skip=loss_skip, **loss_tol)
            else:
                assert_matches(res, exps, what=f"cross_entropy loss {what}", skip=loss_skip, **loss_tol)
        except Mismatch as exc:
            if len(exc.index) == x0.ndim:  # gradient: show the row of logits
                raise AssertionError(explain(exc, ax, logits=x0, target=case["target"])) from None
            if len(exc.index) == x0.ndim - 1:  # per-sample loss
                exc.index = exc.index[:ax] + (0,) + exc.index[ax:]
                raise AssertionError(explain(exc, ax, logits=x0)) from None
            raise
        if case["reduction"] != "none":
            loss = res[0] if case["return_grad"] else res
            assert np.ndim(loss) == 0 and np.asarray(loss).dtype == result_dtype

    run_everywhere(call, reference, check, recipes=[rec], work=work)


# ---------------------------------------------------------------------------------------
# Errors: out= untouched, only the documented exception types


@PROPERTY
@given(data=st.data())
def test_invalid_arguments_raise_documented_errors_and_leave_out_untouched(data):
    """Random bad axis / beta / where / threads / dtype / keepdims values and out= of the right
    or a wrong shape: each call either succeeds or raises TypeError, ValueError or AxisError
    (anything else propagates and fails the test), and a failing call leaves out= bit for bit
    as it was, on every backend."""
    rec = data.draw(inputs(dtypes=(np.dtype(np.float32), np.dtype(np.float64)), big=False), label="x")
    x = rec.make()
    func = data.draw(st.sampled_from(["softmax", "log_softmax", "softmin", "logsumexp", "softmax_backward",
                                      "log_softmax_backward"]), label="func")
    bad = st.one_of(st.none(), st.integers(-6, 6), st.floats(allow_nan=True), st.text(max_size=3),
                    st.just(np.bool_(True)), st.just([1]), st.just(object()))
    kw = {}
    names = ["axis", "beta", "where", "threads"]
    names += ["keepdims"] if func == "logsumexp" else [] if "backward" in func else ["dtype"]
    if func == "softmin":
        names.remove("beta")
    for name in data.draw(st.sets(st.sampled_from(names), max_size=3), label="bad arguments"):
        if name == "where":
            kw["where"] = data.draw(st.one_of(bad, st.just(np.ones(x.shape + (2,), bool)), st.just(np.ones(x.shape, np.int8))))
        elif name == "dtype":
            kw["dtype"] = data.draw(st.one_of(bad, st.sampled_from([np.int32, "complex64", "bogus", np.float32])))
        else:
            kw[name] = data.draw(bad)
    note(f"kwargs: {kw!r}")
    axis = kw.pop("axis", -1)
    args = (x, x) if "backward" in func else (x,)
    dt = _result_dtype(x.dtype)
    if func == "logsumexp":
        good_shape = x.shape[:-1] if x.ndim else ()
    else:
        good_shape = x.shape
    shape = good_shape if data.draw(st.booleans(), label="right out shape") else good_shape + (1,)
    for name in BACKENDS:
        out = np.full(shape, -7, dt)
        before = out.copy()
        with _api.use_backend(name):
            try:
                getattr(fs, func)(*args, axis, out=out, **kw)
            except ALLOWED_ERRORS:
                assert _same_bits(out, before), f"{name}: out= modified by a failing call"


# ---------------------------------------------------------------------------------------
# Misaligned arrays (np.frombuffer with an offset, say): same bits as aligned copies. Under
# .ci/sanitizers this also checks that no misaligned element is dereferenced (UBSan).


@pytest.mark.skipif(not MISALIGNED, reason="FASTSOFTMAX_TEST_MISALIGNED=0")
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_misaligned_inputs_and_out_give_the_results_of_aligned_copies(backend_name, dtype):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 37)) * 5).astype(dtype)
    g = rng.standard_normal((5, 37)).astype(dtype)
    t = np.array([0, 36, 5, -100, 2])
    w = (rng.random(37) + 0.5).astype(dtype)
    cases = {
        "softmax": lambda a, b, o: fs.softmax(a, out=o),
        "log_softmax axis 0": lambda a, b, o: fs.log_softmax(a, axis=0, out=o),
        "softmin where": lambda a, b, o: fs.softmin(a, where=np.tril(np.ones((5, 37), bool), 3), out=o),
        "logsumexp": lambda a, b, o: fs.logsumexp(a, out=None if o is None else o[:, 0].copy()),
        "softmax_backward": lambda a, b, o: fs.softmax_backward(b, fs.softmax(a), out=o),
        "log_softmax_backward": lambda a, b, o: fs.log_softmax_backward(b, a, out=o),
        "cross_entropy": lambda a, b, o: fs.cross_entropy(a, t, weight=misaligned(w), return_grad=True),
        "cross_entropy probabilities": lambda a, b, o: fs.cross_entropy(a, fs.softmax(b), reduction="none"),
    }
    with _api.use_backend(backend_name):
        for name, call in cases.items():
            expected = call(x.copy(), g.copy(), None)
            xa, ga = misaligned(x), misaligned(g)
            assert not xa.flags.aligned
            got = call(xa, ga, None)
            out = misaligned(np.zeros((5, 37), dtype))
            got_out = call(misaligned(x), misaligned(g), out)
            for e, a in ((expected, got), (expected, got_out)):
                for ei, ai in zip(e if isinstance(e, tuple) else (e,), a if isinstance(a, tuple) else (a,)):
                    assert _same_bits(np.asarray(ai), np.asarray(ei)), f"{name}: misaligned arrays changed the result"
            assert _same_bits(np.ascontiguousarray(xa), x), f"{name}: input modified"


# ---------------------------------------------------------------------------------------
# Discrepancies between the kernels and the NumPy backend found by the tests above (certain
# bugs), fixed: regression tests.


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax_backward_with_overflowing_grad_sum_stays_finite(backend_name, axis):
    # sum(grad) = -6.8e38 is beyond float32; the exact gradient grad - e^y sum(grad) is not.
    grad = np.float32([-3.4e38, -3.4e38])
    y = np.float32([0.0, -np.inf])  # = log_softmax([0, -inf]) exactly
    if axis == 0:  # the same along a non-last axis (the column kernel)
        grad, y = np.stack([grad, grad / 2], axis=1), np.stack([y, y], axis=1)
    with _api.use_backend("numpy"):
        expected = fs.log_softmax_backward(grad, y, axis=axis)
    np.testing.assert_array_equal(expected.take(0, axis=1 - axis) if axis == 0 else expected,
                                  np.float32([3.4e38, -3.4e38]))
    with _api.use_backend(backend_name):
        actual = fs.log_softmax_backward(grad, y, axis=axis)
    np.testing.assert_array_equal(actual, expected)  # exact: one rounding of g - e^y * sum


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("lanes", [1, 8, 16])  # float32 lanes: scalar, AVX2, AVX-512
def test_log_softmax_backward_sum_of_two_huge_entries_one_vector_apart(backend_name, lanes):
    # The row sum adds entries i and i + W (W lanes) in float32 before the wide accumulator:
    # -3.4e38 twice overflows there although the exact gradient is finite (see above).
    grad = np.zeros(40, np.float32)
    grad[0] = grad[lanes] = np.float32(-3.4e38)
    y = np.full(40, -np.inf, np.float32)
    y[0] = 0.0  # log_softmax of [0, -inf, ...]
    with _api.use_backend("numpy"):
        expected = fs.log_softmax_backward(grad, y)
    assert expected[0] == np.float32(3.4e38) and expected[lanes] == np.float32(-3.4e38)
    with _api.use_backend(backend_name):
        actual = fs.log_softmax_backward(grad, y)
    np.testing.assert_array_equal(actual, expected)  # exact: one rounding of g - e^y * sum


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("apart", [1, 4, 8, 16])  # float64 lanes: scalar, AVX2, AVX-512; pairs
def test_float64_log_softmax_backward_sum_beyond_the_largest_double(backend_name, apart):
    # Two entries near the largest double, in one lane of the sum's accumulator wherever they
    # fall: their sum -3.2e308 overflows double, the exact gradient (e^y = 1, 0, ...) does not.
    big = np.finfo(np.float64).max * 0.9
    grad = np.zeros(40)
    grad[0] = grad[apart] = -big
    y = np.full(40, -np.inf)
    y[0] = 0.0
    expected = np.zeros(40)
    expected[0], expected[apart] = big, -big  # -big - 1 * (-2 big), -big - 0
    with _api.use_backend(backend_name):
        actual = fs.log_softmax_backward(grad, y)
    np.testing.assert_array_equal(actual, expected)  # exact: one rounding of g - e^y * sum


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("layout", ["rows", "short rows", "columns", "columns of 3"])
@pytest.mark.parametrize("apart", [1, 4, 8, 16])
def test_float64_backward_sum_beyond_the_largest_double_in_every_layout(backend_name, name, layout, apart):
    # As above, through each kernel layout: rows of 40 (the row path), 16 rows of 20 (the
    # short-row groups: the sum taken lane-wise), and the same rows along axis 0 (the column
    # kernels: 16 columns, a whole number of vectors, and 3 columns, the flat run). Row k has
    # -big at k % 3 and k % 3 + apart; y is 1 there for softmax (not a softmax output: the
    # products' sum is -2 big), 0 and -inf for log_softmax (e^y = 1, 0, ...). The exact
    # gradient is big, -big (log_softmax) or big, big (softmax), 0 elsewhere: all finite.
    big = np.finfo(np.float64).max * 0.9
    rows, n = {"rows": (5, 40), "short rows": (16, 20), "columns": (16, 20), "columns of 3": (3, 20)}[layout]
    grad = np.zeros((rows, n))
    y = np.zeros((rows, n)) if name == "softmax_backward" else np.full((rows, n), -np.inf)
    expected = np.zeros((rows, n))
    for k in range(rows):
        first, second = k % 3, k % 3 + apart
        grad[k, first] = grad[k, second] = -big
        if name == "softmax_backward":
            y[k, first] = y[k, second] = 1.0
            expected[k, first] = expected[k, second] = big  # 1 * (-big - (-2 big))
        else:
            y[k, first] = 0.0
            expected[k, first], expected[k, second] = big, -big  # -big - e^y (-2 big)
    axis = 0 if layout.startswith("columns") else -1
    if axis == 0:
        grad, y, expected = grad.T.copy(), y.T.copy(), expected.T.copy()
    with _api.use_backend(backend_name):
        actual = getattr(fs, name)(grad, y, axis=axis)
    np.testing.assert_array_equal(actual, expected)  # exact: the one rounding of each entry is exact


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("n", [5, 16, 17])  # short-row groups: 16 rows fill whole groups on every ISA
@pytest.mark.parametrize("special", [np.nan, np.inf])
def test_backward_row_with_nan_or_inf_leaves_its_group_neighbours_alone(backend_name, dtype, name, n, special, rng):
    # Row 0's sum is NaN or inf; rows 1 to 15 share its group (or not, by ISA) and must come out
    # bitwise as they do when row 0 is finite.
    grad = rng.normal(0, 1, size=(16, n)).astype(dtype)
    y = fs.softmax(rng.normal(0, 3, size=(16, n)).astype(dtype))
    if name == "log_softmax_backward":
        y = np.log(y)
    fn = getattr(fs, name)
    with _api.use_backend(backend_name):
        clean = fn(grad, y)
        grad[0, 1] = special
        spoiled = fn(grad, y)
    np.testing.assert_array_equal(spoiled[1:], clean[1:])  # exact: the same arithmetic per row
    assert not np.isfinite(spoiled[0]).all()


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_backward_with_overflowing_product_sum_stays_finite(backend_name, axis):
    # sum(grad * y) = 4.5e38 (y need not be a softmax output): beyond float32, the gradient
    # (-1.5e38, -7.5e37) is not.
    grad = np.float32([3e38, 3e38])
    y = np.float32([1.0, 0.5])
    if axis == 0:
        grad, y = np.stack([grad, grad], axis=1), np.stack([y, y], axis=1)
    with _api.use_backend("numpy"):
        expected = fs.softmax_backward(grad, y, axis=axis)
    assert np.isfinite(expected).all()
    with _api.use_backend(backend_name):
        actual = fs.softmax_backward(grad, y, axis=axis)
    # sum rounded to float32 (2^-24 of 4.5e38), the difference then 3x smaller: rtol 1e-6
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
def test_softmax_backward_with_overflowing_difference_stays_finite(backend_name):
    grad = np.float32([3e38, -3e38])
    y = np.float32([1e-10, 1.0])  # a softmax output, to float32 rounding
    with _api.use_backend("numpy"):
        expected = fs.softmax_backward(grad, y)
    assert np.isfinite(expected).all()
    with _api.use_backend(backend_name):
        actual = fs.softmax_backward(grad, y)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-6)


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
def test_cross_entropy_smoothing_with_large_weighted_logits_stays_finite(backend_name):
    logits = np.float32([[-1.8e38]])  # one class: p = 1, log p = 0, loss 0 exactly
    kw = dict(weight=np.float32([2.0]), label_smoothing=0.1)
    with _api.use_backend("numpy"):
        expected = fs.cross_entropy(logits, [0], **kw)
    assert expected == 0
    with _api.use_backend(backend_name):
        actual = fs.cross_entropy(logits, [0], **kw)
    assert actual == expected


# ---------------------------------------------------------------------------------------
# The fuzz target, run briefly when atheris is installed


def test_fuzz_target_runs_clean_for_20_seconds(tmp_path):
    pytest.importorskip("atheris")
    target = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_api.py"
    if not target.exists():
        pytest.skip("fuzz/fuzz_api.py not present")
    proc = subprocess.run(
        [sys.executable, str(target), "-max_total_time=20", "-timeout=30", "-rss_limit_mb=4096",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"fuzzer exited with {proc.returncode}:\n{tail}"
    assert "Done" in tail, tail
