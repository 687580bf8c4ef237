"""Validation, dtype rules, axis handling and ``out=``; then the kernels or the NumPy path."""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
import warnings
from typing import Any, Iterator, Optional

import numpy as np

from . import _numpy

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError  # type: ignore[attr-defined,no-redef]

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _core = None
    warnings.warn(
        f"fastsoftmax: the compiled kernels could not be imported ({exc}); using the NumPy "
        "implementation. Reinstall with `pip install --force-reinstall fastsoftmax` to get them.",
        RuntimeWarning,
        stacklevel=2,
    )

_use_numpy = _core is None or os.environ.get("FASTSOFTMAX_ISA", "") == "numpy"
if _core is not None and _core.selection_warning():
    warnings.warn(_core.selection_warning(), RuntimeWarning, stacklevel=2)

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------
# Threads


def _cgroup_cpu_limit() -> Optional[int]:
    """The CPU quota of this process's cgroup (v2 cpu.max or v1 cfs files), rounded up."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        pass
    return None


@functools.lru_cache(maxsize=None)
def _usable_cpus() -> int:
    """CPUs this process may use (read once: the files behind it are slow to read per call)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)


def _positive_threads(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(min(value, 2**31 - 1))  # an upper bound: more than the kernels' int means all


def _threads_from_env() -> Optional[int]:
    raw = os.environ.get("FASTSOFTMAX_NUM_THREADS", "").strip()
    if not raw:
        return None
    try:
        return _positive_threads(int(raw), "FASTSOFTMAX_NUM_THREADS")
    except (TypeError, ValueError):
        warnings.warn(f"FASTSOFTMAX_NUM_THREADS={raw!r} is not a positive integer; ignored", RuntimeWarning, stacklevel=2)
        return None


_threads_override: Optional[int] = _threads_from_env()


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use by default (``threads=None``).

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> fs.set_num_threads(1); fs.get_num_threads()
    1
    >>> fs.set_num_threads(None)  # back to the default
    """
    global _threads_override
    _threads_override = None if n is None else _positive_threads(n, "n")


# The OpenMP runtime reads OMP_NUM_THREADS once, as it starts (at the latest when _core is
# loaded): whether it was set is read here once, at import, not on every call (os.environ.get
# alone took 0.7 us, a quarter of a call on a (8, 100) array).
_openmp = _core is not None and bool(_core.openmp())
_omp_env = bool(os.environ.get("OMP_NUM_THREADS"))


def get_num_threads() -> int:
    """The number of threads a call with ``threads=None`` may use.

    ``set_num_threads`` if called, else ``FASTSOFTMAX_NUM_THREADS``, else ``OMP_NUM_THREADS``
    as it was when the package was imported (and ``threadpoolctl.threadpool_limits``, which
    set the OpenMP runtime's limit), else the CPUs this process may use (affinity and cgroup
    quota respected). Small calls use fewer.
    """
    if _threads_override is not None:
        return _threads_override
    if not _openmp:
        return 1
    _hand_over_cap()
    return _core.default_threads()


def _threads(threads: Any) -> int:
    return get_num_threads() if threads is None else _positive_threads(threads, "threads")


_cap_set = False


def _hand_over_cap() -> None:
    """The rule of the default lives in _core (default_threads: the OpenMP limit, capped at the
    usable CPUs unless OMP_NUM_THREADS was set); the cap is handed over on first use."""
    global _cap_set
    if not _cap_set:
        _core.set_default_threads_cap(0 if _omp_env else _usable_cpus())
        _cap_set = True


def _plain_threads(threads: Any) -> int:
    """threads for the plain calls: 0 for get_num_threads's default, resolved in _core."""
    if threads is None and _threads_override is None and _openmp:
        _hand_over_cap()
        return 0
    return _threads(threads)


def backend() -> str:
    """Name of the active path: ``"avx512"``, ``"avx2"``, ``"scalar"`` or ``"numpy"``.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.backend() in ("avx512", "avx2", "scalar", "numpy")
    True
    """
    return "numpy" if _use_numpy else _core.isa()


def available_backends() -> list:
    """The paths this machine can run, the NumPy one last."""
    return (list(_core.available_isas()) if _core is not None else []) + ["numpy"]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a path inside a ``with`` block (not thread-safe; for tests and benchmarks)."""
    global _use_numpy
    if name not in available_backends():
        raise ValueError(f"backend must be one of {available_backends()}, got {name!r}")
    saved_numpy, saved_isa = _use_numpy, (_core.isa() if _core is not None else None)
    try:
        _use_numpy = name == "numpy"
        if not _use_numpy:
            _core.select_isa(name)
        yield
    finally:
        _use_numpy = saved_numpy
        if saved_isa is not None:
            _core.select_isa(saved_isa)


def show_config() -> None:
    """Print the version, the active and available paths, the compiler and its flags."""
    from . import __version__

    print(f"fastsoftmax {__version__}")
    print(f"  active backend:     {backend()}")
    print(f"  available backends: {', '.join(available_backends())}")
    if _core is None:
        print("  compiled kernels:   not importable (NumPy implementation in use)")
        return
    info = _core.build_info()
    print(f"  compiler:           {info['compiler']}")
    print(f"  build type:         {info['build_type']}")
    for isa, flags in info["flags"].items():
        print(f"  flags[{isa}]:{' ' * (10 - len(isa))}{flags}")
    print(f"  numpy:              {np.__version__}")


# ---------------------------------------------------------------------------------------
# Validation


def _as_real_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array: {exc}") from None
    if arr.dtype.kind not in "fiub" and not _is_bfloat16(arr.dtype):
        raise TypeError(
            f"{name} must be a real floating, integer or boolean array, got dtype {arr.dtype}"
        )
    return arr


def _is_bfloat16(dtype: np.dtype) -> bool:
    # ml_dtypes.bfloat16 (a NumPy extension type, kind "V"); the name last, as NumPy works it
    # out in Python on every access.
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def _half_format(dtype: np.dtype) -> Optional[bool]:
    """For the 16-bit formats the kernels widen in registers: False for float16, True for
    bfloat16; None otherwise."""
    if dtype == np.float16:
        return False
    return True if _is_bfloat16(dtype) else None


def _result_dtype(dtype: np.dtype) -> np.dtype:
    """Integers and booleans promote to float64 as NumPy does; floats keep their dtype (in
    native byte order)."""
    return dtype.newbyteorder("=") if dtype.kind == "f" or _is_bfloat16(dtype) else np.dtype(np.float64)


def _compute_dtype(result: np.dtype) -> np.dtype:
    """The dtype the work is done in: float16 and bfloat16 are computed in float32."""
    return np.dtype(np.float32) if _half_format(result) is not None else result


def _normalise_axis(axis: Any, ndim: int) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise AxisError(axis, ndim)
    return axis % ndim


def _check_beta(beta: Any) -> float:
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}") from None
    if math.isnan(b):
        raise ValueError("beta must not be NaN")
    return b


def _beta_outside(beta: float, work_dtype: np.dtype) -> bool:
    """Whether a finite, nonzero beta lies outside the normal range of the dtype the work is
    done in: the kernels hold beta in that dtype, where it would be +-inf (0 * inf = NaN) or
    flushed to 0."""
    if beta == 0 or math.isinf(beta) or 1.1754943508222875e-38 <= abs(beta) <= 3.4028234663852886e38:
        return False  # the normal range of float32, within that of every wider dtype
    info = np.finfo(work_dtype)
    # (as Python floats: NumPy would compare in the narrower dtype)
    return not float(info.tiny) <= abs(beta) <= float(info.max)


def _prescaled(arr: np.ndarray, beta: float, work_dtype: np.dtype) -> np.ndarray:
    """beta * x for a beta outside the work dtype's normal range: x in the work dtype, the
    product in float64 (float64 keeps a subnormal beta), rounded once to the work dtype."""
    x = _converted(arr, work_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return (x.astype(np.promote_types(work_dtype, np.float64), copy=False) * beta).astype(work_dtype, copy=False)


def _check_where(where: Any, shape: tuple) -> Optional[np.ndarray]:
    """``where=`` as a read-only boolean view broadcast to ``shape``, or None."""
    if where is None:
        return None
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {w.dtype}")
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"where of shape {w.shape} cannot be broadcast to the input's shape {shape}") from None


def _kernel_where(w: Optional[np.ndarray], axis: int, transposed: bool) -> Optional[np.ndarray]:
    """The selection as the kernels read it: bytes with stride 0 or 1 along a row axis,
    otherwise C-contiguous."""
    if w is None:
        return None
    if transposed:
        w = w.T
    rows = all(d == 1 for d in w.shape[axis + 1 :])
    if not (rows and (w.shape[axis] <= 1 or w.strides[axis] in (0, 1))):
        w = np.ascontiguousarray(w)
    return w.view(np.uint8)


def _check_out(out: Any, shape: tuple, dtype: np.dtype, inputs: tuple) -> Optional[np.ndarray]:
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"out must have dtype {dtype}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    for a in inputs:
        if not np.may_share_memory(a, out) or _same_view(a, out):
            continue
        if np.shares_memory(a, out, max_work=10**6):
            raise ValueError("out overlaps an input partly; pass the input itself (in place) or a separate array")
    return out


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.dtype.itemsize == b.dtype.itemsize
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _kernel_view(arrays: tuple, axis: int, dtype: np.dtype):
    """C-contiguous views of the arrays in ``dtype`` and the axis in them.

    A Fortran-ordered set is used through its transpose (no copy); anything else that is
    not C-contiguous is copied.
    """
    ndim = arrays[0].ndim
    if ndim > 1 and all(a.flags.f_contiguous and a.flags.aligned and not a.flags.c_contiguous for a in arrays):
        return tuple(_c_aligned(a.T, dtype) for a in arrays), ndim - 1 - axis, True
    return tuple(_c_aligned(a, dtype) for a in arrays), axis, False


def _moved(a: np.ndarray, source: int, destination: int) -> np.ndarray:
    """np.moveaxis (a view), or ``a`` itself when the axis is already in place."""
    return a if source % a.ndim == destination % a.ndim else np.moveaxis(a, source, destination)


def _converted(a: np.ndarray, dtype: Any, requirements: tuple = ()) -> np.ndarray:
    """``a`` in ``dtype`` (a copy only when needed). A value beyond the range of a narrower
    ``dtype`` becomes +-inf there, its correctly rounded value, without NumPy's overflow warning."""
    if a.dtype == dtype:
        return np.require(a, requirements=requirements) if requirements else a
    with np.errstate(over="ignore"):
        return np.require(a, dtype=dtype, requirements=requirements)


def _c_aligned(a: np.ndarray, dtype: Any) -> np.ndarray:
    """C-contiguous and aligned in ``dtype`` (a copy only when needed): the kernels load whole
    elements."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned:
        return a  # the common case, without np.require's own checks
    return _converted(a, dtype, ("C", "A"))


def _deliver(result: np.ndarray, out: Optional[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if out is None:
        return _converted(result, dtype)
    if result is not out:
        with np.errstate(over="ignore"):  # as in _converted
            np.copyto(out, result, casting="unsafe")
    return out


def _kernel_dst(work: np.ndarray, out: Optional[np.ndarray], transposed: bool, dtype: Any = None) -> np.ndarray:
    """Where the kernel writes: ``out`` itself when its layout allows, else a new array."""
    dtype = work.dtype if dtype is None else np.dtype(dtype)
    if out is not None and out.dtype == dtype:
        view = out.T if transposed else out
        if view.flags.c_contiguous and view.flags.aligned:
            return view
    return np.empty(work.shape, dtype)


def _check_dtype(dtype: Any) -> Optional[np.dtype]:
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}") from None
    if dt.kind != "f" and not _is_bfloat16(dt):
        raise TypeError(f"dtype must be a floating dtype (float16, bfloat16, float32, float64), got {dt}")
    return dt


def _forward(
    x: Any, axis: Any, beta: Any, out: Any, log: bool, dtype: Any = None, where: Any = None, threads: Any = None
) -> np.ndarray:
    if where is None and dtype is None and type(x) is np.ndarray and not _use_numpy:
        res = _core.forward_plain(x, axis, beta, out, log, _plain_threads(threads))  # see _core.forward_plain
        if res is not None:
            return res
    nthreads = _threads(threads)
    arr = _as_real_array(x, "x")
    beta = _check_beta(beta)
    dtype = _check_dtype(dtype) or _result_dtype(arr.dtype)
    ax = _normalise_axis(axis, max(arr.ndim, 1))
    out = _check_out(out, arr.shape, dtype, (arr,))
    if arr.ndim == 0:
        w0 = None if where is None else np.asarray(_check_where(where, ())).reshape(1)
        res = _forward(arr.reshape(1), 0, beta, None, log, dtype, w0).reshape(())
        return _deliver(res, out, dtype)
    sel = _check_where(where, arr.shape)
    work_dtype = _compute_dtype(dtype)
    if math.isinf(beta):
        return _deliver(_limit_forward(_converted(arr, work_dtype), ax, beta, log, sel), out, dtype)
    if _beta_outside(beta, work_dtype):
        arr, beta = _prescaled(arr, beta, work_dtype), 1.0
    half = _half_format(arr.dtype)
    if half is not None and not _use_numpy and dtype in (arr.dtype, np.dtype(np.float32)):
        # Read in the 16-bit format, widened in registers; written in it or in float32.
        (work,), kax, transposed = _kernel_view((arr,), ax, arr.dtype)
        dst = _kernel_dst(work, out, transposed, dtype)
        y = dst if dtype == np.float32 else dst.view(np.uint16)
        _core.forward_half(work.view(np.uint16), y, kax, beta, log, half, _kernel_where(sel, kax, transposed), nthreads)
        return _deliver(dst.T if transposed else dst, out, dtype)
    if _use_numpy or work_dtype not in _KERNEL_DTYPES:
        fn = _numpy.log_softmax if log else _numpy.softmax
        res = fn(_converted(arr, np.promote_types(work_dtype, np.float32)), ax, beta, sel)
        return _deliver(res, out, dtype)
    (work,), kax, transposed = _kernel_view((arr,), ax, work_dtype)
    dst = _kernel_dst(work, out, transposed)
    _core.forward(work, dst, kax, beta, log, _kernel_where(sel, kax, transposed), nthreads)
    res = dst.T if transposed else dst
    return _deliver(res, out, dtype)


def _limit_forward(x: np.ndarray, axis: int, beta: float, log: bool, where: Optional[np.ndarray]) -> np.ndarray:
    """beta = +/-inf: arg max (arg min) as one-hot, ties sharing the mass."""
    z = x if beta > 0 else -x
    if where is not None:
        z = np.where(where, z, -np.inf)
    nan = np.isnan(z).any(axis=axis, keepdims=True)
    m = np.max(np.where(np.isnan(z), -np.inf, z), axis=axis, keepdims=True, initial=-np.inf)
    top = z == m
    k = top.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(top, -np.log(k), -np.inf) if log else top / k
    y = np.where(nan, np.nan, y)
    if where is not None:
        y = np.where(where & where.any(axis=axis, keepdims=True), y, -np.inf if log else 0.0)
    return y.astype(x.dtype)


def _backward(
    grad: Any, y: Any, axis: Any, beta: Any, out: Any, log: bool, where: Any = None, threads: Any = None
) -> np.ndarray:
    if where is None and type(grad) is np.ndarray and type(y) is np.ndarray and not _use_numpy:
        res = _core.backward_plain(grad, y, axis, beta, out, log, _plain_threads(threads))
        if res is not None:
            return res
    nthreads = _threads(threads)
    g = _as_real_array(grad, "grad")
    s = _as_real_array(y, "y")
    if g.shape != s.shape:
        raise ValueError(f"grad and y must have the same shape, got {g.shape} and {s.shape}")
    beta = _check_beta(beta)
    dtype = _result_dtype(np.result_type(g.dtype, s.dtype))
    ax = _normalise_axis(axis, max(g.ndim, 1))
    out = _check_out(out, g.shape, dtype, (g, s))
    if g.ndim == 0:
        w0 = None if where is None else np.asarray(_check_where(where, ())).reshape(1)
        res = _backward(g.reshape(1), s.reshape(1), 0, beta, None, log, w0).reshape(())
        return _deliver(res, out, dtype)
    sel = _check_where(where, g.shape)
    work_dtype = _compute_dtype(dtype)
    if _beta_outside(beta, work_dtype):
        # beta only scales the result (dx = beta * dx at beta = 1): the product in float64
        # (which keeps a subnormal beta), rounded once to the result's dtype.
        unit = _backward(_converted(g, work_dtype), _converted(s, work_dtype), ax, 1.0, None, log, sel, nthreads)
        with np.errstate(over="ignore", invalid="ignore"):
            return _deliver(unit.astype(np.promote_types(work_dtype, np.float64), copy=False) * beta, out, dtype)
    if _use_numpy or work_dtype not in _KERNEL_DTYPES:
        fn = _numpy.log_softmax_backward if log else _numpy.softmax_backward
        wd = np.promote_types(work_dtype, np.float32)
        return _deliver(fn(g.astype(wd, copy=False), s.astype(wd, copy=False), ax, beta, sel), out, dtype)
    (gw, sw), kax, transposed = _kernel_view((g, s), ax, work_dtype)
    dst = _kernel_dst(gw, out, transposed)
    _core.backward(gw, sw, dst, kax, beta, log, _kernel_where(sel, kax, transposed), nthreads)
    res = dst.T if transposed else dst
    return _deliver(res, out, dtype)


def _logsumexp(
    x: Any, axis: Any, keepdims: bool, beta: Any, out: Any, where: Any = None, threads: Any = None
) -> np.ndarray:
    if where is None and type(x) is np.ndarray and not _use_numpy:
        res = _core.logsumexp_plain(x, axis, keepdims, beta, out, _plain_threads(threads))
        if res is not None:
            return res
    nthreads = _threads(threads)
    arr = _as_real_array(x, "x")
    beta = _check_beta(beta)
    dtype = _result_dtype(arr.dtype)
    if arr.ndim == 0:
        sel = None if where is None else np.asarray(_check_where(where, ())).reshape(1)
        arr = arr.reshape(1)
        _normalise_axis(axis, 1)
        shape: tuple = ()
        ax = 0
    else:
        ax = _normalise_axis(axis, arr.ndim)
        shape = arr.shape[:ax] + ((1,) if keepdims else ()) + arr.shape[ax + 1 :]
        sel = _check_where(where, arr.shape)
    out = _check_out(out, shape, dtype, (arr,))
    work_dtype = _compute_dtype(dtype)
    if math.isinf(beta):
        raise ValueError("beta must be finite for logsumexp")
    if _beta_outside(beta, work_dtype):
        arr, beta = _prescaled(arr, beta, work_dtype), 1.0
    if _use_numpy or work_dtype not in _KERNEL_DTYPES:
        wd = np.promote_types(work_dtype, np.float32)
        res = _numpy.logsumexp(arr.astype(wd, copy=False), ax, False, beta, sel).reshape(shape)
        return _deliver(res, out, dtype)
    half = _half_format(arr.dtype)
    if half is not None:  # read in the 16-bit format, widened in registers
        work = _c_aligned(arr, arr.dtype)
        res = np.empty(work.shape[:ax] + work.shape[ax + 1 :], dtype=np.float32)
        _core.logsumexp_half(work.view(np.uint16), res, ax, beta, half, _kernel_where(sel, ax, False), nthreads)
        return _deliver(res.reshape(shape), out, dtype)
    work = _c_aligned(arr, work_dtype)
    res = np.empty(work.shape[:ax] + work.shape[ax + 1 :], dtype=work_dtype)
    _core.logsumexp(work, res, ax, beta, _kernel_where(sel, ax, False), nthreads)
    return _deliver(res.reshape(shape), out, dtype)


# ---------------------------------------------------------------------------------------
# The public functions


def softmax(
    x: Any,
    axis: int = -1,
    *,
    beta: float = 1.0,
    where: Any = None,
    dtype: Any = None,
    out: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    r"""Softmax along an axis: ``exp(beta * x) / sum(exp(beta * x), axis)``.

    Parameters
    ----------
    x : array_like
        Real input. float32 and float64 keep their dtype; integers and booleans are
        promoted to float64; float16 is computed in float32 and returned as float16.
    axis : int, optional
        The axis the probabilities run along (default: the last).
    beta : float, optional
        Inverse temperature: the result is ``softmax(beta * x)``. ``beta = 0`` gives the
        uniform distribution, ``beta = inf`` the arg max as a one-hot vector (ties share the
        mass), negative values soft-minimum. A base ``b`` corresponds to ``beta = log(b)``.
    where : array_like of bool, optional
        Broadcastable to ``x`` (a causal ``np.tril`` mask, say). Entries outside it take no
        part and read 0; a row with nothing selected reads 0 throughout. The kernels read the
        mask directly; no masked copy of ``x`` is made.
    dtype : dtype, optional
        Floating dtype to compute and return in, instead of the input's.
    out : ndarray, optional
        Where to write the result; it must have the result's shape and dtype and be
        writeable. It may be ``x`` itself (in place) but must not overlap it partly.
    threads : int, optional
        Most threads to use (default :func:`get_num_threads`); small calls use fewer. The
        result does not depend on it.

    Returns
    -------
    ndarray
        Non-negative values that sum to 1 along ``axis``.

    Notes
    -----
    One pass over the data computes the maximum and the normaliser together (online, block
    by block), a second writes the result. Large values never overflow. A row containing NaN
    gives NaN; a row of all -inf gives NaN; ``+inf`` entries share the whole mass (the limit).
    C-contiguous and Fortran-ordered input is read in place along any axis; other
    non-contiguous input is first copied to a contiguous buffer.

    Examples
    --------
    >>> import numpy as np, fastsoftmax as fs
    >>> np.round(fs.softmax([1., 2., 3., 4., 1., 2., 3.]), 8)
    array([0.02364054, 0.06426166, 0.1746813 , 0.474833  , 0.02364054,
           0.06426166, 0.1746813 ])
    >>> fs.softmax(np.array([1e38, 0.0, -1e38]))
    array([1., 0., 0.])
    >>> fs.softmax([1., 3., 3., 2.], beta=np.inf)
    array([0. , 0.5, 0.5, 0. ])
    >>> fs.softmax(np.zeros((3, 3)), where=np.tril(np.ones((3, 3), bool)))
    array([[1.        , 0.        , 0.        ],
           [0.5       , 0.5       , 0.        ],
           [0.33333333, 0.33333333, 0.33333333]])
    """
    return _forward(x, axis, beta, out, False, dtype, where, threads)


def log_softmax(
    x: Any,
    axis: int = -1,
    *,
    beta: float = 1.0,
    where: Any = None,
    dtype: Any = None,
    out: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    """Logarithm of the softmax, computed as ``beta * x - logsumexp(beta * x)``.

    Parameters and dtype rules are those of :func:`softmax`; entries outside ``where`` read
    ``-inf``.

    Notes
    -----
    Never computed as ``log(softmax(x))``: an online logsumexp pass, then one pass that
    subtracts it (as a double-length constant, so that the subtraction rounds once).

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> fs.log_softmax([1000., 1.])
    array([   0., -999.])
    """
    return _forward(x, axis, beta, out, True, dtype, where, threads)


def softmin(x: Any, axis: int = -1, **kwargs: Any) -> np.ndarray:
    """Soft minimum: :func:`softmax` with ``beta=-1``.

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> fs.softmin([0., 0., 1000.])
    array([0.5, 0.5, 0. ])
    """
    if "beta" in kwargs:
        raise TypeError("softmin takes no beta; use softmax(x, beta=-b)")
    unknown = set(kwargs) - {"where", "dtype", "out", "threads"}
    if unknown:
        raise TypeError(f"softmin() got unexpected keyword arguments {sorted(unknown)}")
    return _forward(
        x, axis, -1.0, kwargs.get("out"), False, kwargs.get("dtype"), kwargs.get("where"), kwargs.get("threads")
    )


def logsumexp(
    x: Any,
    axis: int = -1,
    *,
    keepdims: bool = False,
    where: Any = None,
    beta: float = 1.0,
    out: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    """``log(sum(exp(beta * x), axis)) / ...`` computed without overflow, in one read of ``x``.

    Parameters
    ----------
    x : array_like
        Real input (dtype rules of :func:`softmax`).
    axis : int, optional
        The axis to reduce (default: the last).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    where : array_like of bool, optional
        Broadcastable to ``x``: only the selected entries are summed (-inf if none is).
    beta : float, optional
        Multiplies ``x`` first: the result is ``logsumexp(beta * x)`` (finite values only).
    out : ndarray, optional
        Where to write the result (the reduced shape and the result dtype).

    Returns
    -------
    ndarray
        -inf for an empty axis or a row of all -inf; +inf where +inf occurs; NaN where NaN does.

    Notes
    -----
    Computed as ``m + log1p(sum(exp(x - m)) - 1)`` around the maximum ``m``, with the terms
    equal to the maximum counted exactly, so that tiny contributions are not lost.

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> float(fs.logsumexp([0., -40.]))
    4.248354255291589e-18
    >>> float(fs.logsumexp([1000., 1000.]))
    1000.6931471805599
    """
    return _logsumexp(x, axis, bool(keepdims), beta, out, where, threads)


def softmax_backward(
    grad: Any,
    y: Any,
    axis: int = -1,
    *,
    beta: float = 1.0,
    where: Any = None,
    out: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    """Gradient of softmax with respect to its input: ``beta * y * (grad - sum(grad * y))``.

    Parameters
    ----------
    grad : array_like
        Gradient of the loss with respect to the softmax output.
    y : array_like
        The softmax output (same shape as ``grad``).
    axis : int, optional
        The axis softmax was taken along.
    beta : float, optional
        The inverse temperature the forward pass used.
    where : array_like of bool, optional
        The selection the forward pass used: the gradient is 0 outside it.
    out : ndarray, optional
        Where to write the result; may be ``grad`` or ``y`` itself.

    Examples
    --------
    >>> import numpy as np, fastsoftmax as fs
    >>> y = fs.softmax([0., 0.])
    >>> fs.softmax_backward([1., 0.], y)
    array([ 0.25, -0.25])
    """
    return _backward(grad, y, axis, beta, out, False, where, threads)


def log_softmax_backward(
    grad: Any,
    y: Any,
    axis: int = -1,
    *,
    beta: float = 1.0,
    where: Any = None,
    out: Optional[np.ndarray] = None,
    threads: Optional[int] = None,
) -> np.ndarray:
    """Gradient of log_softmax with respect to its input: ``beta * (grad - exp(y) * sum(grad))``.

    ``y`` is the log_softmax output. Other parameters as in :func:`softmax_backward`.

    Examples
    --------
    >>> import fastsoftmax as fs
    >>> y = fs.log_softmax([0., 0.])
    >>> fs.log_softmax_backward([1., 0.], y)
    array([ 0.5, -0.5])
    """
    return _backward(grad, y, axis, beta, out, True, where, threads)


_REDUCTIONS = ("mean", "sum", "none")


def _reads_in_place(
    x: np.ndarray, ax: int, classes: int, other_targets: bool, half: Any, work_dtype: np.dtype, return_grad: bool
) -> bool:
    """Whether cross_entropy takes a class axis other than the last in place (class targets,
    no smoothing, float32/float64) rather than moving it: where that was measured faster
    (float32, one and two threads; moving is faster for up to 64 classes, which go as short
    rows, for inputs under 2^18 entries, and with the gradient for fewer than 512 classes over
    fewer than 1024 positions; other_targets: probabilities or smoothing). The choice does not
    depend on the threads, so neither do the results. E.g. ns/element, moved -> in place, one
    thread / two: (1, 150, 256, 256) losses 1.85 -> 0.83 / 1.49 -> 0.54, with the gradient
    2.82 -> 2.03 / 2.05 -> 1.40; (8, 100, 32, 32) with the gradient 2.30 -> 1.46 / 1.71 ->
    0.98; (64, 300, 49) with the gradient 1.18 -> 1.48 / 0.88 -> 0.84 (moved)."""
    if ax == x.ndim - 1 or other_targets or half is not None or _use_numpy or work_dtype not in _KERNEL_DTYPES:
        return False
    positions = math.prod(x.shape[ax + 1 :])
    return classes > 64 and x.size >= 1 << 18 and (classes >= 512 or not return_grad or positions >= 1024)


def _cross_entropy_along(
    x: np.ndarray, ax: int, work_dtype: np.dtype, t_rows: np.ndarray, ignored: Optional[np.ndarray],
    w: Optional[np.ndarray], scale: float, return_grad: bool, nthreads: int,
) -> Optional[tuple]:
    """Class-target cross-entropy (no smoothing) over a class axis other than the last, read
    in place: the per-sample maximum m and S = sum(exp(x - m)) from the slice kernels, then
    nll = -w[t] ((x[t] - m) - log S) with log S rounded to the dtype (as the row kernel forms
    it); the gradient as head * softmax(x) from the same statistics with S / head, head =
    scale * w[t] (rounded once), the target's entry then less head (or, where the target holds
    the maximum, -head (S - 1) / S). Returns (losses, None,
    gradient or None) as _cross_entropy_moved, or None (for it) where a statistic or a head is
    not finite and positive."""
    xw = _c_aligned(x, work_dtype)
    shape = xw.shape[:ax] + xw.shape[ax + 1 :]
    m = np.empty(shape, work_dtype)
    s_hi, s_lo = np.empty(shape), np.empty(shape)
    _core.partial_stats(xw, m, s_hi, s_lo, ax, 1.0, nthreads)
    if not (np.isfinite(m).all() and np.isfinite(s_hi).all()):
        return None  # NaN, +-inf: the row kernels' special cases
    target = t_rows.reshape(shape)
    skip = None if ignored is None else ignored.reshape(shape)
    safe = target if skip is None else np.where(skip, 0, target)
    index = np.expand_dims(safe, ax)
    x_t = np.take_along_axis(xw, index, axis=ax).squeeze(ax).astype(np.float64)
    # The loss in the type the row kernel forms it in (long double for float64 logits, where
    # x_t - m may round in float64), log S rounded to the dtype as there.
    wide = np.dtype(np.float64) if work_dtype == np.float32 else np.dtype(np.longdouble)
    s_less_1 = (s_hi - 1.0).astype(wide) + s_lo  # S >= 1
    log_s = np.log1p(s_less_1).astype(work_dtype).astype(wide)
    w_t = np.ones(shape) if w is None else w.astype(np.float64)[safe]
    nll = (-w_t.astype(wide) * ((x_t.astype(wide) - m.astype(wide)) - log_s)).astype(np.float64)
    # The slice kernels return S = ties + rel rounded in the wide type (an absolute error of
    # eps(wide)): where the target holds the only maximum and S - 1 is below 64 eps(wide) /
    # eps(dtype), that error exceeds 1/64 ULP of the loss, log S ~ S - 1 (and of the
    # target's gradient entry): those samples are taken again by the row kernel.
    again = (x_t == m) & (s_less_1 < 64 * np.finfo(wide).eps / np.finfo(work_dtype).eps)
    if skip is not None:
        again &= ~skip
    again_grad = None
    if again.any():
        rows = _moved(xw, ax, -1)[again]  # (samples, classes), a copy of those samples only
        nll_again = np.empty(rows.shape[0])
        again_grad = np.empty_like(rows) if return_grad else None
        # ignore_index -1: none of these samples is ignored
        _core.cross_entropy(
            rows, np.ascontiguousarray(target[again]), w, -1, 0.0, float(scale), float(scale), nll_again, None,
            again_grad, nthreads,
        )
        nll[again] = nll_again
    if skip is not None:
        nll[skip] = 0.0
    if not return_grad:
        return nll.reshape(-1), None, None
    head = scale * w_t
    if skip is not None:
        head[skip] = 1.0  # any positive value: the statistics below make the row 0
    if not (np.isfinite(head).all() and (head > 0).all()):
        return None
    with np.errstate(over="ignore"):
        h_hi, h_lo = s_hi / head, s_lo / head
    if skip is not None:
        h_hi[skip], h_lo[skip] = np.inf, 0.0  # S = inf: softmax * 0
    grad = np.empty_like(xw)
    _core.normalise(xw, m, h_hi, h_lo, grad, ax, 1.0, False, nthreads)
    g_t = np.take_along_axis(grad, index, axis=ax).squeeze(ax).astype(np.float64) - head
    # Where the target holds the maximum, p_t - 1 = -(S - 1) / S (S relative to e(m) >= 1):
    # without the cancellation of p_t - 1, which leaves only p_t's rounding where p_t is near 1.
    top = x_t == m.astype(np.float64)
    g_t[top] = (-head * (((s_hi - 1.0) + s_lo) / (s_hi + s_lo)))[top]
    if skip is not None:
        g_t[skip] = 0.0
    np.put_along_axis(grad, index, np.expand_dims(g_t.astype(work_dtype), ax), axis=ax)
    if again_grad is not None:
        _moved(grad, ax, -1)[again] = again_grad
    return nll.reshape(-1), None, grad


def _cross_entropy_moved(
    x: np.ndarray, ax: int, classes: int, half: Any, work_dtype: np.dtype, t_rows: np.ndarray,
    w: Optional[np.ndarray], ignore_index: int, eps: float, scale: float, smoothed: bool, return_grad: bool,
    nthreads: int,
) -> tuple:
    """cross_entropy by rows of classes (the class axis moved last, a copy unless it is last):
    losses, smoothing terms (or None) and the gradient (or None) in the logits' layout."""
    # 16-bit logits stay in their format (widened in registers); others in the compute dtype.
    x_rows = _c_aligned(_moved(x, ax, -1).reshape(-1, classes), x.dtype if half is not None else work_dtype)
    rows = x_rows.shape[0]
    if _use_numpy or work_dtype not in _KERNEL_DTYPES:
        wd = np.promote_types(work_dtype, np.float32)
        nll, smooth, grad = _numpy.cross_entropy_rows(
            x_rows.astype(wd), t_rows, None if w is None else w.astype(wd), ignore_index, eps, scale, scale, return_grad
        )
    else:
        nll = np.empty(rows, np.float64)
        smooth = np.empty(rows, np.float64) if smoothed else None
        grad = np.empty_like(x_rows) if return_grad else None
        if half is None:
            _core.cross_entropy(x_rows, t_rows, w, ignore_index, eps, float(scale), float(scale), nll, smooth, grad, nthreads)
        else:
            _core.cross_entropy_half(
                x_rows.view(np.uint16), half, t_rows, w, ignore_index, eps, float(scale), float(scale),
                nll, smooth, None if grad is None else grad.view(np.uint16), nthreads,
            )
    if grad is not None:
        grad = _moved(grad.reshape(x.shape[:ax] + x.shape[ax + 1 :] + (classes,)), -1, ax)
    return nll, smooth, grad


def cross_entropy(
    logits: Any,
    target: Any,
    axis: int = -1,
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    weight: Any = None,
    return_grad: bool = False,
    threads: Optional[int] = None,
) -> Any:
    """Cross-entropy between softmax(logits) and targets, with torch's semantics.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores; ``axis`` holds the classes.
    target : array_like
        Either integer class indices with the logits' shape without ``axis``, or class
        probabilities (floating) with the logits' shape.
    axis : int, optional
        The class axis (default: the last).
    reduction : {"mean", "sum", "none"}, optional
        As ``torch.nn.functional.cross_entropy``: with class targets, "mean" divides by the
        summed weights of the non-ignored targets (NaN when all are ignored); with
        probability targets, by the number of samples.
    ignore_index : int, optional
        Class targets equal to it contribute neither loss nor gradient.
    label_smoothing : float, optional
        In [0, 1]: the target becomes ``(1 - s) * target + s / classes``.
    weight : array_like, optional
        One weight per class.
    return_grad : bool, optional
        Also return the gradient of the (reduced) loss with respect to the logits; for
        ``reduction="none"`` the gradient of the sum of the losses.

    Returns
    -------
    loss : scalar or ndarray
        In the logits' floating dtype (float64 for integer logits).
    grad : ndarray
        Only with ``return_grad``: same shape and dtype as the logits.

    Notes
    -----
    Fused: per row, one online logsumexp pass, then (with ``return_grad``) one pass that
    writes ``scale * (softmax - target)`` with smoothing and weights applied. No softmax or
    log_softmax array is allocated. A class axis other than the last is read in place for
    class targets without smoothing; otherwise it is first moved to the end (a copy).

    Examples
    --------
    >>> import numpy as np, fastsoftmax as fs
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> round(float(fs.cross_entropy(logits, [0, 2])), 6)
    0.669079
    >>> loss, grad = fs.cross_entropy(logits, [0, 2], return_grad=True)
    >>> np.round(grad, 4)
    array([[-0.1065,  0.0533,  0.0533],
           [ 0.1667,  0.1667, -0.3333]])
    """
    nthreads = _threads(threads)
    x = _as_real_array(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    ax = _normalise_axis(axis, x.ndim)
    classes = x.shape[ax]
    if classes == 0:
        raise ValueError("logits must have at least one class along axis")
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    ignore_index = int(ignore_index)
    if not -(2**63) <= ignore_index < 2**63:
        # As torch, which holds it in int64 too (and raises for it); no target could equal it.
        raise ValueError(f"ignore_index must be a 64-bit signed integer, in [-2**63, 2**63), got {ignore_index}")
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, (int, float, np.integer, np.floating)):
        raise TypeError(f"label_smoothing must be a real number, got {type(label_smoothing).__name__}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    dtype = _result_dtype(x.dtype)
    work_dtype = _compute_dtype(dtype)
    sample_shape = x.shape[:ax] + x.shape[ax + 1 :]

    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != sample_shape:
            raise ValueError(f"class targets must have shape {sample_shape} (the logits' without axis), got {t.shape}")
        # uint64 values beyond int64 would wrap in int64 (2**64 - 100 to -100): they are
        # neither a class nor ignore_index (an int64), and reported as given.
        t_check = t.reshape(-1) if t.dtype == np.uint64 and t.size and int(t.max()) >= 2**63 else None
        t_rows = _c_aligned(t.reshape(-1), np.int64) if t_check is None else t_check
        ignored = None  # no target ignored
        lo, hi = (int(t_rows.min()), int(t_rows.max())) if t_rows.size else (0, -1)
        if lo <= ignore_index <= hi:
            ignored = t_rows == ignore_index
        if lo < 0 or hi >= classes:  # some target is not a class: allowed only if ignored
            bad = (t_rows < 0) | (t_rows >= classes)
            if ignored is not None:
                bad &= ~ignored
            if bad.any():
                raise ValueError(
                    f"target values must be in [0, {classes}) or equal ignore_index={ignore_index}, "
                    f"got {int(t_rows[bad][0])}"
                )
        probabilities = False
    elif t.dtype.kind == "f" or _is_bfloat16(t.dtype):
        if t.shape != x.shape:
            raise ValueError(f"probability targets must have the logits' shape {x.shape}, got {t.shape}")
        t_rows = _c_aligned(_moved(t, ax, -1).reshape(-1, classes), work_dtype)
        probabilities = True
    else:
        raise TypeError(f"target must hold integer class indices or floating probabilities, got dtype {t.dtype}")

    w = None
    if weight is not None:
        w = _as_real_array(weight, "weight")
        if w.shape != (classes,):
            raise ValueError(f"weight must have shape ({classes},), got {w.shape}")
        w = _c_aligned(w, work_dtype)

    half = None if _use_numpy else _half_format(x.dtype)
    rows = math.prod(sample_shape)
    if probabilities:
        total = float(rows)
    else:
        valid = t_rows if ignored is None else t_rows[~ignored]
        total = float(w.astype(np.float64)[valid].sum()) if w is not None else float(valid.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 1.0 / np.float64(total) if reduction == "mean" else 1.0
    smoothed = eps > 0 and not probabilities

    res = None  # (losses, smoothing terms, gradient in the logits' layout)
    if _reads_in_place(x, ax, classes, probabilities or smoothed, half, work_dtype, return_grad):
        res = _cross_entropy_along(x, ax, work_dtype, t_rows, ignored, w, scale, return_grad, nthreads)
    if res is None:
        res = _cross_entropy_moved(
            x, ax, classes, half, work_dtype, t_rows, w, ignore_index, eps, scale, smoothed, return_grad, nthreads
        )
    nll, smooth, grad = res

    # (+ 0.0: a loss of -0.0 is reported as 0.0, as the smoothed formula gives it)
    per_sample = nll if probabilities else nll + 0.0 if not smoothed else (1 - eps) * nll + (eps / classes) * smooth
    if reduction == "none":
        loss: Any = _converted(np.asarray(per_sample).reshape(sample_shape), dtype)
    else:
        if reduction == "sum":
            total_loss = per_sample.sum()
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                total_loss = per_sample.sum() * scale
        with np.errstate(over="ignore"):  # as in _converted
            loss = dtype.type(total_loss)
    if not return_grad:
        return loss
    return loss, _converted(grad, dtype)
