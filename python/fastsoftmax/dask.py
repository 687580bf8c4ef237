"""Dask support: ``softmax``, ``log_softmax`` and ``logsumexp`` of dask arrays.

The three functions take a ``dask.array.Array`` (anything else is wrapped with
``dask.array.asarray``) and return a lazy dask array. The reduced axis may be split across
any number of chunks; it is never rechunked into one, so arrays larger than the memory of
one machine, or spread over a cluster, are handled chunk by chunk:

1. **Partials.** For every chunk the kernels compute, per reduction along ``axis``, the
   maximum ``m`` of ``beta * x`` and ``S = sum(exp(beta * x - m))`` (``S`` as a head and tail
   in float64), one read of the chunk.
2. **Online merge.** The partials are merged in a tree (``dask.array.reduction``;
   ``split_every`` sets its fan-in) with the online operator
   ``(m1, S1) + (m2, S2) = (M, S1 * exp(m1 - M) + S2 * exp(m2 - M))``, ``M = max(m1, m2)``,
   computed in ``np.longdouble``. ``logsumexp`` is ``M + log(S)`` of the merged pair.
3. **Normalisation.** ``softmax`` and ``log_softmax`` are then written chunk by chunk from the
   chunk and the merged pair of its rows (``dask.array.blockwise``; the pair is broadcast
   along ``axis``). The output has the input's chunks.

When the axis lies in a single chunk, both kernel passes run in the one task per chunk.

Results agree with those of the in-memory functions (:func:`fastsoftmax.softmax`, ...) to
within 2 ULP in the tests, and follow the same rules for special values: a row containing
NaN gives NaN; ``+inf`` entries share the whole mass; a row of all ``-inf`` gives NaN
(``softmax``) and ``-inf`` (``logsumexp``). float32 and float64 keep their dtype; integer and boolean input is computed
in float64; float16 and bfloat16 are computed in float32 and returned in their own dtype.

Each chunk is read twice by ``softmax``/``log_softmax`` (once for the partials, once for the
output), so dask keeps a chunk (in memory, or spilled to disk) until the merged statistics of
its rows are known. ``threads`` is the number of kernel threads per task (default 1: dask already runs one
task per worker thread).

Dask is optional for fastsoftmax: ``import fastsoftmax`` never imports it; importing this
module without it raises ImportError.

Examples
--------
>>> import numpy as np, dask.array as da
>>> import fastsoftmax.dask as fsd
>>> x = da.from_array(np.array([[1., 2., 3., 4., 1., 2., 3.]]), chunks=(1, 3))
>>> np.round(fsd.softmax(x).compute(), 8)
array([[0.02364054, 0.06426166, 0.1746813 , 0.474833  , 0.02364054,
        0.06426166, 0.1746813 ]])
>>> float(fsd.logsumexp(x, axis=-1)[0].compute())
4.744792116251568
"""

from __future__ import annotations

import functools
from typing import Any, Tuple

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'fastsoftmax.dask needs dask (with dask.array): pip install "fastsoftmax[dask]" '
        f"(import failed: {exc})"
    ) from exc

from ._api import _beta_outside, _normalise_axis, _prescaled

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        f"fastsoftmax.dask needs the compiled kernels, which could not be imported ({exc}); "
        "reinstall with `pip install --force-reinstall fastsoftmax`"
    ) from exc

__all__ = ["softmax", "log_softmax", "logsumexp"]

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)


# ---------------------------------------------------------------------------------------
# Validation and dtypes


def _dtypes(dtype: np.dtype) -> Tuple[np.dtype, np.dtype]:
    """(the dtype the kernels work in, the result's dtype), as in-memory fastsoftmax."""
    if dtype in (_F32, _F64):
        return dtype, dtype
    if dtype == np.float16 or (dtype.name == "bfloat16" and dtype.itemsize == 2):
        return _F32, dtype
    if dtype.kind in "iub":
        return _F64, _F64
    if dtype.kind == "f":
        raise TypeError(f"fastsoftmax.dask supports float16, bfloat16, float32 and float64, not {dtype}")
    raise TypeError(f"x must be a real floating, integer or boolean array, got dtype {dtype}")


def _check_beta(beta: Any) -> float:
    if isinstance(beta, (str, bytes)):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}") from None
    if not np.isfinite(b):
        raise ValueError(f"beta must be finite in fastsoftmax.dask, got {b}")
    return b


def _check_threads(threads: Any) -> int:
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be a positive integer, got {type(threads).__name__}")
    if threads <= 0:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    return int(threads)


def _as_dask(x: Any) -> "da.Array":
    if isinstance(x, da.Array):
        return x
    if isinstance(x, (str, bytes)):
        raise TypeError(f"x must be a real numeric array, got {type(x).__name__}")
    return da.asarray(x)


# ---------------------------------------------------------------------------------------
# Chunk functions (module level, so that they pickle to distributed workers)


def _stats_dtype(work: np.dtype) -> np.dtype:
    """One record per reduction: the maximum m (work dtype) and S = hi + lo."""
    return np.dtype([("m", work), ("hi", _F64), ("lo", _F64)])


def _pack(m: np.ndarray, hi: np.ndarray, lo: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    rec = np.empty(m.shape, _stats_dtype(m.dtype))
    rec["m"], rec["hi"], rec["lo"] = m, hi, lo
    return np.expand_dims(rec, axis) if keepdims else rec


def _kernel_array(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` as a C-contiguous array whose dtype is NumPy's own float32/float64 descriptor.

    The kernels accept only those descriptor objects, and a dtype that crossed a pickle (a
    task's arguments, arrays moved between dask workers) is an equal but distinct object.
    """
    canonical = np.dtype(dtype.type)
    a = np.asarray(a, dtype=canonical, order="C")  # keeps 0-d (ascontiguousarray does not)
    if not a.flags.aligned:  # fields of the packed records: the kernels load whole elements
        a = a.copy()
    return a if a.dtype is canonical else a.view(canonical)


def _unpack(rec: np.ndarray, work: np.dtype) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _kernel_array(rec["m"], work), _kernel_array(rec["hi"], _F64), _kernel_array(rec["lo"], _F64)


def _kernel_stats(x: np.ndarray, axis: int, beta: float, threads: int):
    shape = x.shape[:axis] + x.shape[axis + 1 :]
    m = np.empty(shape, x.dtype)
    hi = np.empty(shape, _F64)
    lo = np.empty(shape, _F64)
    _core.partial_stats(x, m, hi, lo, axis, beta, threads)
    return m, hi, lo


def _chunk_stats(block, axis, keepdims, *, work, beta, threads, computing_meta=False):
    """``reduction`` chunk: the (m, S) record of each reduction in one chunk."""
    (ax,) = axis
    x = _kernel_array(block, work)
    return _pack(*_kernel_stats(x, ax, beta, threads), ax, keepdims)


def _merge(rec: np.ndarray, axis: int):
    """Merge the records along ``axis`` with the online operator: (M in the work dtype,
    S in np.longdouble), both without ``axis``."""
    m = rec["m"]
    s = rec["hi"].astype(np.longdouble) + rec["lo"]
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        big = m.max(axis=axis)
        mk = np.expand_dims(big, axis)
        # Partials whose maximum is the merged one count S as is: this covers M = +inf (only
        # the +inf partials contribute, their counts) and M = -inf (all S are 0), where
        # m - M would be NaN. The others are scaled by exp(m - M) (0 when M = +inf). NaN in
        # any S propagates.
        scaled = np.where(m == mk, s, s * np.exp(m.astype(np.longdouble) - mk))
        total = scaled.sum(axis=axis)
    return big, total


def _split(total: np.ndarray):
    hi = total.astype(_F64)
    with np.errstate(invalid="ignore", over="ignore"):
        lo = np.where(np.isfinite(hi), (total - hi).astype(_F64), 0.0)
    return hi, lo


def _combine_stats(rec, axis, keepdims, computing_meta=False):
    """``reduction`` combine/aggregate: merged records."""
    (ax,) = axis
    if computing_meta:
        return rec
    big, total = _merge(rec, ax)
    return _pack(big, *_split(total), ax, keepdims)


def _lse_block(rec, *, result):
    """logsumexp from merged records: M + log(S), in np.longdouble, rounded once to the work
    dtype (then to the result's, for float16 and bfloat16)."""
    big = rec["m"]
    total = rec["hi"].astype(np.longdouble) + rec["lo"]
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = big.astype(np.longdouble) + np.log(total)  # -inf + log(0) = -inf; NaN stays
    with np.errstate(over="ignore"):  # a result beyond the narrower dtype rounds to +-inf
        return lse.astype(big.dtype).astype(result)


def _normalise_block(block, rec, *, axis, work, result, beta, log, threads):
    """``blockwise``: softmax / log_softmax of one chunk from the merged records of its rows."""
    x = _kernel_array(block, work)
    m, hi, lo = _unpack(rec, work)
    out = np.empty(x.shape, x.dtype)
    _core.normalise(x, m, hi, lo, out, axis, beta, log, threads)
    with np.errstate(over="ignore"):  # a result beyond the narrower dtype rounds to +-inf
        return out.astype(result, copy=False)


def _prescaled_block(block, *, work, beta):
    """beta * x of one chunk, for a beta outside the work dtype's normal range."""
    return _prescaled(np.asarray(block), beta, work)


def _fused_block(block, *, axis, work, result, beta, log, threads):
    """The whole axis in one chunk: both passes in one task."""
    x = _kernel_array(block, work)
    m, hi, lo = _kernel_stats(x, axis, beta, threads)
    out = np.empty(x.shape, x.dtype)
    _core.normalise(x, m, hi, lo, out, axis, beta, log, threads)
    with np.errstate(over="ignore"):  # a result beyond the narrower dtype rounds to +-inf
        return out.astype(result, copy=False)


# ---------------------------------------------------------------------------------------
# Graph construction


def _stats(x: "da.Array", axis: int, work: np.dtype, beta: float, threads: int, split_every: Any,
           keepdims: bool) -> "da.Array":
    """Tree reduction of the per-chunk partials along ``axis``: merged records."""
    sdt = _stats_dtype(work)
    ndim = x.ndim if keepdims else x.ndim - 1
    return da.reduction(
        x,
        functools.partial(_chunk_stats, work=work, beta=beta, threads=threads),
        _combine_stats,
        combine=_combine_stats,
        axis=axis,
        keepdims=keepdims,
        dtype=sdt,
        split_every=split_every,
        concatenate=True,
        name="fastsoftmax-stats",
        meta=np.empty((0,) * ndim, sdt),
    )


def _prepare(x: Any, axis: Any, beta: Any, threads: Any):
    x = _as_dask(x)
    work, result = _dtypes(np.dtype(x.dtype))
    beta = _check_beta(beta)
    threads = _check_threads(threads)
    scalar = x.ndim == 0
    ax = _normalise_axis(axis, max(x.ndim, 1))
    if scalar:
        x = x[None]
    if _beta_outside(beta, work):
        # The kernels hold beta in the work dtype, where it would be +-inf or flushed to 0:
        # the chunks are scaled first (the product rounded once) and the kernels take beta = 1.
        x = x.map_blocks(_prescaled_block, work=work, beta=beta, dtype=work, meta=np.empty((0,) * x.ndim, work))
        beta = 1.0
    return x, ax, work, result, beta, threads, scalar


def _forward(x: Any, axis: Any, beta: Any, split_every: Any, threads: Any, log: bool) -> "da.Array":
    x, ax, work, result, beta, threads, scalar = _prepare(x, axis, beta, threads)
    kwargs = dict(axis=ax, work=work, result=result, beta=beta, log=log, threads=threads)
    name = "fastsoftmax-" + ("log_softmax" if log else "softmax") + "-"
    meta = np.empty((0,) * x.ndim, result)
    if x.numblocks[ax] == 1:
        name += tokenize(x, kwargs)
        y = x.map_blocks(_fused_block, dtype=result, meta=meta, name=name, **kwargs)
    else:
        stats = _stats(x, ax, work, beta, threads, split_every, keepdims=False)
        name += tokenize(x, stats, kwargs)
        ind = tuple(range(x.ndim))
        y = da.blockwise(
            _normalise_block, ind, x, ind, stats, ind[:ax] + ind[ax + 1 :],
            dtype=result, meta=meta, name=name, **kwargs,
        )
    return y[0] if scalar else y


def softmax(x: Any, axis: int = -1, *, beta: float = 1.0, split_every: Any = None, threads: int = 1) -> "da.Array":
    r"""Softmax along an axis of a dask array: ``exp(beta * x) / sum(exp(beta * x), axis)``.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Real input, chunked in any way (the axis may be split across chunks).
    axis : int, optional
        The axis the probabilities run along (default: the last).
    beta : float, optional
        Inverse temperature (finite): the result is ``softmax(beta * x)``.
    split_every : int or dict, optional
        Fan-in of the tree that merges the per-chunk statistics (``dask.array.reduction``).
    threads : int, optional
        Kernel threads per task (default 1).

    Returns
    -------
    dask.array.Array
        Lazy; same shape and chunks as ``x``; float32 and float64 keep their dtype.

    Examples
    --------
    >>> import dask.array as da, fastsoftmax.dask as fsd
    >>> x = da.ones((2, 4), chunks=(1, 2))
    >>> fsd.softmax(x).compute()
    array([[0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25]])
    """
    return _forward(x, axis, beta, split_every, threads, log=False)


def log_softmax(x: Any, axis: int = -1, *, beta: float = 1.0, split_every: Any = None, threads: int = 1) -> "da.Array":
    """Log-softmax along an axis of a dask array: ``beta * x - logsumexp(beta * x, axis)``.

    Parameters and dtype rules are those of :func:`softmax`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastsoftmax.dask as fsd
    >>> x = da.from_array(np.array([0.0, 0.0]), chunks=1)
    >>> fsd.log_softmax(x).compute()
    array([-0.69314718, -0.69314718])
    """
    return _forward(x, axis, beta, split_every, threads, log=True)


def logsumexp(
    x: Any, axis: int = -1, *, keepdims: bool = False, beta: float = 1.0, split_every: Any = None, threads: int = 1
) -> "da.Array":
    """``log(sum(exp(beta * x), axis))`` of a dask array, by a tree reduction.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Real input, chunked in any way.
    axis : int, optional
        The axis to reduce (default: the last).
    keepdims : bool, optional
        Keep the reduced axis with length 1.
    beta, split_every, threads
        As in :func:`softmax`.

    Returns
    -------
    dask.array.Array
        Lazy; ``x``'s shape without ``axis`` (or with it of length 1). An empty axis or a row
        of all ``-inf`` gives ``-inf``; a row containing ``+inf`` gives ``+inf``; NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastsoftmax.dask as fsd
    >>> x = da.from_array(np.array([[1000.0, 1000.0]]), chunks=1)
    >>> fsd.logsumexp(x, axis=1).compute()
    array([1000.69314718])
    """
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims must be a bool, got {type(keepdims).__name__}")
    x, ax, work, result, beta, threads, scalar = _prepare(x, axis, beta, threads)
    keep = bool(keepdims) and not scalar
    stats = _stats(x, ax, work, beta, threads, split_every, keep)
    lse = stats.map_blocks(_lse_block, result=result, dtype=result, meta=np.empty((0,) * stats.ndim, result),
                           name="fastsoftmax-logsumexp-" + tokenize(stats, result))
    return lse  # 0-d input: reduced to 0-d (keepdims does not apply)
