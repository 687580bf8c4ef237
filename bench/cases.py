"""What is measured: shapes, functions, the input buffers, the float64 reference and the check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

# The six shapes of shared/ANCHORS.md, then a vocabulary-sized row.
DEFAULT_SHAPES = "65536x10,8192x1000,256x1024,16x32000,1x16777216,64x1000x49:1,4x262144"
QUICK_SHAPES = "65536x10,8192x1000,256x1024,1x16777216,64x1000x49:1"


@dataclass(frozen=True)
class FunctionSpec:
    """A function and the memory traffic of its ideal algorithms.

    Traffic is counted in passes over arrays of the input's size: a read pass reads one such
    array, a copy pass reads one and writes one. ``two_pass`` is the ideal two-pass algorithm
    (a statistics pass, then an output pass), whose traffic the floor and GB/s are based on.
    ``one_pass`` is what remains when a row fits in cache, so that the second pass rereads
    it from cache: every input read once, the output written once.
    """

    name: str
    inputs: Tuple[str, ...]  # kinds of input arrays: "x", "grad", "y", "log_y", "labels"
    reduced_output: bool  # True: the axis is reduced away (logsumexp, cross_entropy)
    two_pass: Tuple[int, int]  # (read passes, copy passes)
    one_pass: Tuple[int, int]
    description: str

    @property
    def read_passes(self) -> int:
        return self.two_pass[0]

    @property
    def copy_passes(self) -> int:
        return self.two_pass[1]


FUNCTIONS: Dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec("softmax", ("x",), False, (1, 1), (0, 1),
                     "read x (max and sum), then read x and write y"),
        FunctionSpec("log_softmax", ("x",), False, (1, 1), (0, 1),
                     "read x (max and sum), then read x and write y"),
        FunctionSpec("logsumexp", ("x",), True, (1, 0), (1, 0),
                     "read x once (online max and sum)"),
        FunctionSpec("softmax_backward", ("grad", "y"), False, (3, 1), (1, 1),
                     "read grad and y (dot), then read both and write dx"),
        FunctionSpec("log_softmax_backward", ("grad", "log_y"), False, (2, 1), (1, 1),
                     "read grad (sum), then read grad and y and write dx"),
        FunctionSpec("cross_entropy", ("x", "labels"), True, (1, 0), (1, 0),
                     "read x once (online logsumexp) and the labels"),
    )
}
DEFAULT_FUNCTIONS = "softmax,log_softmax,logsumexp,softmax_backward,log_softmax_backward,cross_entropy"
QUICK_FUNCTIONS = "softmax,log_softmax,logsumexp,softmax_backward,cross_entropy"

# Relative tolerance of the check, before widening for long rows (see tolerance()).
BASE_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@dataclass(frozen=True)
class Shape:
    dims: Tuple[int, ...]
    axis: int  # normalised, non-negative

    @property
    def elements(self) -> int:
        return math.prod(self.dims)

    @property
    def row_length(self) -> int:
        return self.dims[self.axis]

    @property
    def rows(self) -> int:
        return self.elements // max(self.row_length, 1)

    @property
    def reduced_dims(self) -> Tuple[int, ...]:
        return self.dims[: self.axis] + self.dims[self.axis + 1 :]

    @property
    def last_axis(self) -> bool:
        return self.axis == len(self.dims) - 1

    def label(self) -> str:
        axis = -1 if self.last_axis else self.axis
        return f"({', '.join(map(str, self.dims))}) ax {axis}"

    def key(self) -> str:
        return "x".join(map(str, self.dims)) + ("" if self.last_axis else f":{self.axis}")


def parse_shapes(text: str) -> List[Shape]:
    """``"65536x10,64x1000x49:1"`` -> shapes; ``:k`` picks the axis (default: the last)."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        dims_text, _, axis_text = item.partition(":")
        try:
            dims = tuple(int(d) for d in dims_text.lower().split("x"))
            axis = int(axis_text) if axis_text else -1
        except ValueError:
            raise ValueError(f"bad shape {item!r}: expected e.g. 8192x1000 or 64x1000x49:1") from None
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"bad shape {item!r}: every dimension must be positive")
        if not -len(dims) <= axis < len(dims):
            raise ValueError(f"bad shape {item!r}: axis {axis} out of range")
        shapes.append(Shape(dims, axis % len(dims)))
    return shapes


@dataclass(frozen=True)
class Case:
    """One row of the results: a function on a shape in a dtype with a thread count."""

    function: FunctionSpec
    shape: Shape
    dtype: np.dtype
    threads: int

    @property
    def input_bytes(self) -> int:
        return self.shape.elements * self.dtype.itemsize

    @property
    def ideal_bytes(self) -> int:
        """Bytes read and written by the ideal two-pass algorithm (what GB/s is based on)."""
        spec = self.function
        data = (spec.read_passes + 2 * spec.copy_passes) * self.input_bytes
        if spec.reduced_output:
            data += self.shape.rows * self.dtype.itemsize  # the reduced result is written
        if "labels" in spec.inputs:
            data += self.shape.rows * 8  # int64 labels are read
        return data

    def label(self) -> str:
        return f"{self.function.name} {self.shape.label()} {self.dtype.name} t={self.threads}"


# ---------------------------------------------------------------------------------------
# Buffers


@dataclass
class BufferPool:
    """Inputs and outputs of one shape and dtype, in ``n_sets`` rotated copies.

    Inputs larger than the hot limit are rotated across several copies so that each call
    finds its data out of cache, as it would in a real pipeline; smaller ones stay in a
    single copy (cache-hot on purpose: that is how such sizes are used).
    """

    shape: Shape
    dtype: np.dtype
    n_sets: int
    seed: int
    _arrays: Dict[str, List[np.ndarray]] = field(default_factory=dict)

    def get(self, kind: str) -> List[np.ndarray]:
        if kind not in self._arrays:
            self._arrays[kind] = [self._make(kind, i) for i in range(self.n_sets)]
        return self._arrays[kind]

    def release(self) -> None:
        self._arrays.clear()

    def _rng(self, kind: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index, sum(map(ord, kind))])

    def _make(self, kind: str, index: int) -> np.ndarray:
        dims, dtype = self.shape.dims, self.dtype
        if kind == "x":  # logits: normal with sigma 3, as in ANCHORS.md
            x = self._rng(kind, index).standard_normal(dims, dtype=np.float64 if dtype == np.float64 else np.float32)
            x *= 3
            return x.astype(dtype, copy=False)
        if kind == "grad":
            return self._rng(kind, index).standard_normal(dims).astype(dtype)
        if kind in ("y", "log_y"):
            ref = reference_forward(self.get("x")[index], self.shape.axis, log=kind == "log_y")
            return ref.astype(dtype)
        if kind == "labels":
            high = self.shape.row_length
            return self._rng(kind, index).integers(0, high, self.shape.reduced_dims, dtype=np.int64)
        if kind == "out":
            return _touched(np.empty(dims, dtype))
        if kind == "reduced_out":
            return _touched(np.empty(self.shape.reduced_dims, dtype))
        raise KeyError(kind)


def _touched(a: np.ndarray) -> np.ndarray:
    """Fault the pages in now, so the first timed write does not pay for it."""
    a.fill(0)
    return a


def buffer_sets(input_bytes: int, hot_limit: int, rotate_bytes: int, max_sets: int = 16) -> int:
    """How many copies to rotate through: 1 for inputs within the hot limit."""
    if input_bytes <= hot_limit:
        return 1
    return max(2, min(max_sets, math.ceil(rotate_bytes / input_bytes)))


# ---------------------------------------------------------------------------------------
# Reference and check


def _wide(a: np.ndarray) -> np.ndarray:
    """float64 for float32 inputs; long double for float64 ones (more digits than tested)."""
    return a.astype(np.longdouble if a.dtype == np.float64 else np.float64)


def reference_forward(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    w = _wide(x)
    shifted = w - w.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=axis, keepdims=True)
    return shifted - np.log(s) if log else e / s


def reference_logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    w = _wide(x)
    m = w.max(axis=axis, keepdims=True)
    return (np.log(np.exp(w - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def reference(case: Case, pool: BufferPool) -> np.ndarray:
    """The float64 (or long double) result for buffer set 0."""
    name, axis = case.function.name, case.shape.axis
    if name in ("softmax", "log_softmax"):
        return reference_forward(pool.get("x")[0], axis, log=name == "log_softmax")
    if name == "logsumexp":
        return reference_logsumexp(pool.get("x")[0], axis)
    if name == "softmax_backward":
        g, y = _wide(pool.get("grad")[0]), _wide(pool.get("y")[0])
        return y * (g - (g * y).sum(axis=axis, keepdims=True))
    if name == "log_softmax_backward":
        g, y = _wide(pool.get("grad")[0]), _wide(pool.get("log_y")[0])
        return g - np.exp(y) * g.sum(axis=axis, keepdims=True)
    if name == "cross_entropy":
        x, labels = pool.get("x")[0], pool.get("labels")[0]
        picked = np.take_along_axis(_wide(x), np.expand_dims(labels, axis), axis).squeeze(axis)
        return reference_logsumexp(x, axis) - picked
    raise KeyError(name)


def tolerance(case: Case) -> float:
    """Relative tolerance: the base one, widened by sqrt(row / 65536) for rows past 65536.

    A float running sum over n terms typically loses sqrt(n) roundings; libraries that sum
    long rows in plain float32 (torch, onnxruntime on a 16M row) are less accurate there but
    not wrong. The measured error is reported in the JSON either way.
    """
    return BASE_RTOL[case.dtype] * max(1.0, math.sqrt(case.shape.row_length / 65536))


def error_scale(case: Case, ref: np.ndarray) -> float:
    """The absolute part of the check, per function (where relative error is meaningless)."""
    name = case.function.name
    if name == "softmax":
        return 1e-30 if case.dtype == np.float32 else 1e-290  # only underflowed values
    if name.endswith("backward"):
        return float(np.max(np.abs(ref))) if ref.size else 1.0  # cancellation: normwise
    return 1.0  # log-domain results: absolute error near 0


# A result beyond the tolerance but within this many times it is timed and flagged as
# inexact (a float32 running sum over a 16M row, say); beyond it, it is WRONG and not timed.
INEXACT_FACTOR = 10.0


@dataclass
class CheckResult:
    verdict: str  # "ok", "inexact" (timed, flagged) or "wrong" (not timed)
    max_error: float  # max |got - ref| / (|ref| + scale), see error_scale()
    error_in_eps: float  # the same in units of the dtype's machine epsilon (about ULPs)
    message: str = ""

    @property
    def timed(self) -> bool:
        return self.verdict != "wrong"


def check(case: Case, got: np.ndarray, ref: np.ndarray) -> CheckResult:
    got = np.asarray(got)
    if got.ndim == 0 and ref.ndim > 0:  # a reduced loss (cross_entropy): its mean, or sum
        mean = check(case, got, np.asarray(ref.mean()))
        return mean if mean.verdict == "ok" else check(case, got, np.asarray(ref.sum()))
    if got.shape != ref.shape:
        if got.size != ref.size:
            return CheckResult("wrong", math.inf, math.inf, f"shape {got.shape}, expected {ref.shape}")
        got = got.reshape(ref.shape)
    scale = error_scale(case, ref)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got.astype(ref.dtype) - ref) / (np.abs(ref) + scale)
    bad = ~np.isfinite(err)
    max_error = math.inf if bad.any() else float(err.max(initial=0.0))
    eps = float(np.finfo(case.dtype).eps)
    tol = tolerance(case)
    if max_error <= tol:
        return CheckResult("ok", max_error, max_error / eps)
    where = np.unravel_index(int(np.nanargmax(np.where(bad, np.inf, err))), ref.shape) if ref.size else ()
    detail = (f"max error {max_error:.3g} ({max_error / eps:.3g} eps) > {tol:.3g} at {tuple(map(int, where))}: "
              f"got {float(got[where])!r}, expected {float(ref[where])!r}")
    verdict = "inexact" if max_error <= INEXACT_FACTOR * tol else "wrong"
    return CheckResult(verdict, max_error, max_error / eps, detail)
