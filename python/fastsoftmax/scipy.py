"""Drop-in replacements for ``scipy.special.softmax``, ``log_softmax`` and ``logsumexp``.

The three functions here take SciPy's arguments, defaults and dtype rules and return SciPy's
results, so that ::

    from fastsoftmax.scipy import softmax, log_softmax, logsumexp

can replace ``from scipy.special import ...`` in existing code. Real-valued NumPy input (the
common case), with or without ``b=`` weights, is computed by the fastsoftmax kernels; SciPy's
conventions are then applied where they differ from fastsoftmax's own (groups containing
``+inf`` give NaN, as in SciPy, instead of the limit). Complex input and arrays of other
array-API libraries (PyTorch, JAX, CuPy, array-api-strict, ...) take a plain array-API
implementation that returns arrays of the input's library. SciPy itself is not needed.

Known, deliberate differences from SciPy, each where SciPy's result is an artefact:

- integer input to ``softmax`` / ``log_softmax`` never wraps around: SciPy subtracts the
  maximum in the integer type, so that unsigned input (``uint8 [1, 2]``) or a wide range of
  int8/int16 values gives NaN/-inf there; the result dtype is SciPy's;
- ``logsumexp`` leaves out the elements with ``b == 0`` even where the result is not finite
  (SciPy: ``logsumexp([inf, inf], b=[0, 1])`` is NaN, from ``0 * inf``; here ``inf``);
- ``logsumexp`` results that SciPy's fallback loses to underflow or overflow are kept
  (``logsumexp([-1000, -1000], b=[-1, -1])`` is NaN, the log of a negative number, not
  -inf; ``b=inf`` gives inf, not NaN);
- ``logsumexp`` of an empty array over several axes is -inf (SciPy raises IndexError), and
  with ``axis=()`` keeps the empty shape.

Examples
--------
>>> import numpy as np
>>> from fastsoftmax.scipy import softmax, logsumexp
>>> softmax(np.array([[1., 1.], [1., 1.]]))
array([[0.25, 0.25],
       [0.25, 0.25]])
>>> float(logsumexp([1000., 1000.]))
1000.6931471805599
"""

from __future__ import annotations

import math
import operator
from typing import Any, Tuple

import numpy as np

from . import _api

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError  # type: ignore[attr-defined,no-redef]

__all__ = ["softmax", "log_softmax", "logsumexp"]

_PYTHON_SCALARS = (bool, int, float, complex)


# ---------------------------------------------------------------------------------------
# Namespaces and dtypes


def _namespace(*args: Any):
    """The array namespace of the arguments: ``numpy`` itself, or another library's.

    NumPy arrays and scalars, Python scalars, lists and tuples (anything that is not an array
    of another library) give ``numpy``. For other arrays the array-API namespace comes from
    ``__array_namespace__``, else from ``array_api_compat`` (stand-alone or SciPy's vendored
    copy); an object that neither knows is treated as an array_like and converted by NumPy.
    """
    for a in args:
        if a is None or isinstance(a, (np.ndarray, np.generic, list, tuple) + _PYTHON_SCALARS):
            continue
        get = getattr(a, "__array_namespace__", None)
        if get is not None:
            return get()
        compat = _compat_array_namespace()
        if compat is not None:
            try:
                xp = compat(a)
            except TypeError:
                continue
            if getattr(xp, "__name__", "").split(".")[-1] != "numpy":
                return xp
    return np


def _compat_array_namespace():
    try:
        from array_api_compat import array_namespace
    except ImportError:
        try:
            from scipy._lib.array_api_compat import array_namespace  # type: ignore[no-redef]
        except ImportError:
            return None
    return array_namespace


def _kind(xp, dtype) -> str:
    """One of "b", "i", "f", "c" (or NumPy's kind letter for anything else)."""
    if xp is np:
        return np.dtype(dtype).kind.replace("u", "i")
    for kind, name in (("b", "bool"), ("i", "integral"), ("f", "real floating"), ("c", "complex floating")):
        if xp.isdtype(dtype, name):
            return kind
    return "O"


def _astype(xp, x, dtype):
    return x.astype(dtype, copy=False) if xp is np else xp.astype(x, dtype)


def _device(x):
    return getattr(x, "device", None)


def _errstate():
    # NumPy's floating-point warnings are not SciPy's business here: inf - inf, log(0) and
    # friends are expected on the way to the documented results.
    return np.errstate(all="ignore")


# ---------------------------------------------------------------------------------------
# Axes


def _axes(axis: Any, ndim: int) -> Tuple[int, ...]:
    """``axis`` (None, an integer or a tuple of integers) as a tuple of distinct axes >= 0."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for ax in items:
        ax = operator.index(ax)
        if not -ndim <= ax < ndim:
            raise AxisError(ax, ndim)
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ValueError("duplicate value in 'axis'")
    return tuple(out)


def _reduced_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _last_axis_layout(x: np.ndarray, axes: tuple):
    """``x`` as an array whose last axis runs over ``axes`` (a copy unless already laid out so),
    and the shape of ``x`` with ``axes`` moved to the end."""
    rest = [i for i in range(x.ndim) if i not in axes]
    moved = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))
    shape = tuple(x.shape[i] for i in rest)
    return moved.reshape(shape + (-1,)), moved.shape


# ---------------------------------------------------------------------------------------
# softmax and log_softmax


def _softmax_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype SciPy's ``exp(x - max(x))`` has: floats keep theirs, integers follow NumPy's
    ``exp`` (int8/uint8 -> float16, int16/uint16 -> float32, wider -> float64)."""
    return dtype if dtype.kind in "fc" else np.promote_types(dtype, np.float16)


def _exact_int_shift(x: np.ndarray, axes: tuple) -> np.ndarray:
    """64-bit integers beyond 2**53 lose digits in float64; ``x - max(x)`` does not, and
    softmax does not change when the same value is subtracted along ``axes``. The difference
    is taken in uint64 (modular, hence exact: it lies in [0, 2**64))."""
    m = np.max(x, axis=axes, keepdims=True)
    d = m.astype(np.uint64) - x.astype(np.uint64)
    return -(d.astype(np.float64))


def _kernel_forward(x: np.ndarray, axes: tuple, log: bool, dtype: np.dtype) -> np.ndarray:
    fn = _api.log_softmax if log else _api.softmax
    if len(axes) == 1:
        return fn(x, axes[0], dtype=dtype)
    if len(axes) == x.ndim:
        order = "F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C"
        return fn(x.ravel(order=order), -1, dtype=dtype).reshape(x.shape, order=order)
    flat, moved_shape = _last_axis_layout(x, axes)
    res = fn(flat, -1, dtype=dtype).reshape(moved_shape)
    return np.moveaxis(res, range(x.ndim - len(axes), x.ndim), axes)


def _scipy_infinities(res: np.ndarray, x: np.ndarray, axes: tuple, log: bool) -> np.ndarray:
    """SciPy's results for groups that contain ``+inf`` (fastsoftmax gives the limit there).

    ``softmax``: the whole group is NaN. ``log_softmax``: NaN at the ``+inf`` entries and
    ``-inf`` elsewhere (all NaN if the group also holds a NaN, which the kernels give already).
    """
    top = np.max(x)  # one cheap pass; NaN or +inf here means a closer look is needed
    if top < np.inf:
        return res
    posinf = np.isposinf(x)
    has_inf = posinf.any(axis=axes, keepdims=True)
    if not has_inf.any():
        return res
    if not log:
        return np.where(has_inf, res.dtype.type(np.nan), res)
    fix = has_inf & ~np.isnan(x).any(axis=axes, keepdims=True)
    return np.where(fix, np.where(posinf, res.dtype.type(np.nan), res.dtype.type(-np.inf)), res)


def _generic_forward(xp, x, axes: tuple, log: bool):
    """The textbook formulas in any array-API namespace (also NumPy's complex and edge cases)."""
    with _errstate():
        m = xp.max(x, axis=axes, keepdims=True)
        if not log:
            e = xp.exp(x - m)
            return e / xp.sum(e, axis=axes, keepdims=True)
        # A non-finite maximum is not subtracted: inf - inf would make every entry NaN.
        m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        shifted = x - m
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axes, keepdims=True))


def _forward(x: Any, axis: Any, log: bool):
    xp = _namespace(x)
    if xp is not np:
        x = xp.asarray(x)
        axes = _axes(axis, max(x.ndim, 1))
        if x.ndim == 0:
            return xp.reshape(_generic_forward(xp, xp.reshape(x, (1,)), axes, log), ())
        return _generic_forward(xp, x, axes, log)

    x = np.asarray(x)
    axes = _axes(axis, max(x.ndim, 1))
    kind = x.dtype.kind
    if kind == "b" or kind not in "iufc":
        raise TypeError(f"softmax and log_softmax need a numeric, non-boolean array, got dtype {x.dtype}")
    scalar = x.ndim == 0
    if scalar:
        x = x.reshape(1)
    if kind == "c" or x.size == 0 or not axes:
        # Complex input, empty arrays (SciPy raises where a maximum over nothing is asked for)
        # and axis=() (every entry its own group): NumPy.
        res = _generic_forward(np, x, axes, log)
    else:
        dtype = _softmax_dtype(x.dtype)
        if kind in "iu" and x.dtype.itemsize == 8:
            lo, hi = np.min(x), np.max(x)
            if max(abs(int(lo)), abs(int(hi))) > 2**53:
                x = _exact_int_shift(x, axes)
        res = _kernel_forward(x, axes, log, dtype)
        if x.dtype.kind == "f":
            res = _scipy_infinities(res, x, axes, log)
    return res.reshape(())[()] if scalar else res


def softmax(x: Any, axis: Any = None) -> Any:
    r"""Compute the softmax function (drop-in for :func:`scipy.special.softmax`).

    Each element becomes its exponential divided by the sum of the exponentials of its group::

        softmax(x) = exp(x) / sum(exp(x))

    Parameters
    ----------
    x : array_like
        Input array: real or complex numbers, of NumPy or of another array-API library.
    axis : int or tuple of ints, optional
        Axis or axes the groups run along. Default is None: the whole array is one group.

    Returns
    -------
    s : ndarray or scalar
        An array the same shape as `x` that sums to 1 along `axis` (a NumPy scalar for 0-d
        NumPy input). float16/32/64 input keeps its dtype; integer input gets the dtype of
        ``numpy.exp`` of it (float64 for int32 and int64).

    Raises
    ------
    TypeError
        For boolean, string or object input (as SciPy).
    ValueError
        For a group with no elements, or a repeated axis.
    numpy.exceptions.AxisError
        For an axis out of range.

    Notes
    -----
    Real NumPy input is computed by the fastsoftmax kernels (:func:`fastsoftmax.softmax`):
    one read of the data for the maximum and the normaliser together, one write. A tuple of
    axes is moved to the end and flattened into one axis first (a copy). Where fastsoftmax and
    SciPy differ, SciPy's result is returned: a group containing ``+inf`` is all NaN. A group
    containing NaN, or of all ``-inf``, is NaN; large finite values never overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.scipy import softmax
    >>> x = np.array([[1, 0.5, 0.2, 3],
    ...               [1,  -1,   7, 3],
    ...               [2,  12,  13, 3]])
    >>> m = softmax(x)
    >>> float(round(m.sum(), 12))
    1.0
    >>> with np.printoptions(precision=5):
    ...     print(softmax(x, axis=1))
    [[1.05877e-01 6.42177e-02 4.75736e-02 7.82332e-01]
     [2.42746e-03 3.28521e-04 9.79307e-01 1.79366e-02]
     [1.22094e-05 2.68929e-01 7.31025e-01 3.31885e-05]]
    >>> softmax(np.array([1000., 0., 0., 0.]))
    array([1., 0., 0., 0.])
    >>> softmax([np.inf, 1.0])
    array([nan, nan])
    """
    return _forward(x, axis, log=False)


def log_softmax(x: Any, axis: Any = None) -> Any:
    r"""Compute the logarithm of the softmax function (drop-in for
    :func:`scipy.special.log_softmax`).

    In principle ``log_softmax(x) = log(softmax(x))``, computed without the loss of accuracy
    that has where the softmax saturates.

    Parameters
    ----------
    x : array_like
        Input array: real or complex numbers, of NumPy or of another array-API library.
    axis : int or tuple of ints, optional
        Axis or axes the groups run along. Default is None: the whole array is one group.

    Returns
    -------
    s : ndarray or scalar
        An array the same shape as `x` whose exponential sums to 1 along `axis` (a NumPy
        scalar for 0-d NumPy input). dtypes as in :func:`softmax`.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As :func:`softmax`.

    Notes
    -----
    Real NumPy input is computed by :func:`fastsoftmax.log_softmax` (``x - logsumexp(x)``
    with the subtraction rounded once). SciPy's special values are kept: in a group that
    contains ``+inf`` the ``+inf`` entries are NaN and the others ``-inf``; a group of all
    ``-inf`` or containing NaN is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.scipy import log_softmax
    >>> log_softmax(np.array([1000.0, 1.0]))
    array([   0., -999.])
    >>> log_softmax(np.arange(4.0).reshape(2, 2), axis=(0, 1)).round(6)
    array([[-3.44019, -2.44019],
           [-1.44019, -0.44019]])
    """
    return _forward(x, axis, log=True)


# ---------------------------------------------------------------------------------------
# logsumexp


def _promote(xp, a, b):
    """``a`` and ``b`` as arrays of one floating (or complex) dtype, broadcast together.

    The dtype is the library's ``result_type`` of the inputs and a weak Python float (so
    integers and booleans become the default floating dtype, float64 in NumPy). Where the
    library cannot promote the inputs together (array-api-strict mixes of integers and
    floats), it is the ``result_type`` of the floating inputs and the default floating dtype.
    """
    if xp is np:
        args = [v if isinstance(v, _PYTHON_SCALARS) else np.asarray(v).dtype for v in (a, b) if v is not None]
        dtype = np.result_type(*args, 1.0)
        if dtype.kind not in "fc":
            raise TypeError(f"logsumexp needs numeric input, got dtype {dtype}")
        a = np.asarray(a, dtype=dtype)
        if b is None:
            return a, None
        return np.broadcast_arrays(a, np.asarray(b, dtype=dtype))
    like = next(v for v in (a, b) if v is not None and not isinstance(v, (list, tuple) + _PYTHON_SCALARS))
    dev = _device(like)
    arrays = [xp.asarray(v, device=dev) for v in (a, b) if v is not None]
    try:
        dtype = xp.result_type(*arrays, 1.0)
    except TypeError:
        floats = [v.dtype for v in arrays if _kind(xp, v.dtype) in "fc"]
        dtype = xp.result_type(*floats, xp.asarray(1.0, device=dev).dtype)
    arrays = [_astype(xp, v, dtype) for v in arrays]
    if len(arrays) == 2:
        arrays = xp.broadcast_arrays(*arrays)
        return arrays[0], arrays[1]
    return arrays[0], None


def _finish(xp, out, sgn, axes, keepdims, return_sign):
    if not keepdims:
        out = xp.squeeze(out, axis=axes)
        sgn = None if sgn is None else xp.squeeze(sgn, axis=axes)
    if xp is np:
        out = out[()] if out.ndim == 0 else out
        sgn = sgn[()] if (sgn is not None and sgn.ndim == 0) else sgn
    return (out, sgn) if return_sign else out


def _sign_from_result(out: np.ndarray) -> np.ndarray:
    """The sign of ``sum(exp(a))`` read off its logarithm: 0 for -inf, NaN for NaN, else 1."""
    one = np.ones_like(out)
    return np.where(out == -np.inf, 0 * one, np.where(np.isnan(out), np.nan * one, one))


def _kernel_logsumexp(t: np.ndarray, axes: tuple, keepdims: bool) -> np.ndarray:
    """``fastsoftmax.logsumexp`` over ``axes`` of a non-empty real array, keeping dims."""
    if len(axes) == 1:
        res = _api.logsumexp(t, axes[0], keepdims=True)
    else:
        flat, _ = _last_axis_layout(t, axes)
        res = _api.logsumexp(flat, -1).reshape(_reduced_shape(t.shape, axes, True))
    return np.asarray(res)


def _weighted_logsumexp(a: np.ndarray, b: np.ndarray, axes: tuple, return_sign: bool):
    """Real ``log|sum(b * exp(a))|`` and its sign with the kernels (``a``, ``b`` broadcast).

    With ``t = a + log|b|`` (``-inf`` where ``b == 0``, so that element is left out), the
    positive and the negative terms are two plain logsumexps, ``lp`` and ``ln``; then
    ``log|P - N| = max(lp, ln) + log(1 - exp(-|lp - ln|))`` with the sign of ``lp - ln``.
    Where that is not finite (infinite or NaN input, a sum that cancels to zero), the direct
    ``log(sum(b * exp(a)))`` is used, so that infinities follow ``exp`` and ``log``.
    """
    work = np.promote_types(a.dtype, np.float32)  # float16 is computed in float32
    with _errstate():
        t = np.log(np.abs(b.astype(work, copy=False)))
        t += a
        zero = b == 0
        if zero.any():
            np.copyto(t, -np.inf, where=zero)
        neg = b < 0  # NaN weights count as positive: they make the result NaN either way
        if not neg.any():
            out = _kernel_logsumexp(t, axes, keepdims=True).astype(a.dtype, copy=False)
            return out, (_sign_from_result(out) if return_sign else None)
        t_neg = np.where(neg, t, -np.inf)
        np.copyto(t, -np.inf, where=neg)
        lp = _kernel_logsumexp(t, axes, keepdims=True)
        ln = _kernel_logsumexp(t_neg, axes, keepdims=True)
        d = lp - ln
        # log(1 - exp(-|d|)), accurate both for small |d| (expm1) and large (log1p).
        e = -np.abs(d)
        log1mexp = np.where(e > -math.log(2), np.log(-np.expm1(e)), np.log1p(-np.exp(e)))
        out = np.maximum(lp, ln) + log1mexp
        sgn = np.sign(d)
        # Where P and N are within a factor e of each other, the rounding of a + log|b| in
        # lp and ln (half an ULP of a) grows by coth(|d| / 2) > 2 in log|P - N|: those groups
        # are summed again as sum(b * exp(a - max a)) in a wider type, b applied after exp.
        close = np.abs(d) < 1
        if close.any():
            out, sgn = _cancelling_groups(a, b, axes, close, out, sgn)
        finite = np.isfinite(out)
        if not finite.all():
            direct = np.sum(np.where(zero, 0, b * np.exp(a)), axis=axes, keepdims=True)
            out = np.where(finite, out, np.log(np.abs(direct)))
            sgn = np.where(finite, sgn, np.sign(direct))
        if not return_sign:
            out = np.where(sgn < 0, np.nan, out)
    return out.astype(a.dtype, copy=False), (sgn.astype(a.dtype, copy=False) if return_sign else None)


def _cancelling_groups(a: np.ndarray, b: np.ndarray, axes: tuple, close: np.ndarray, out: np.ndarray,
                       sgn: np.ndarray):
    """``out`` and ``sgn`` with the groups in ``close`` (the reduced shape, kept dims) taken as
    ``M + log|sum(b * exp(a - M))|``, ``M`` the largest ``a`` with ``b != 0``: a and b enter
    unrounded, each term is off by its exponential's rounding alone, and the sum is formed in
    long double (float64 for narrower dtypes), so that it cancels with the digits to spare."""
    wide = np.dtype(np.longdouble) if a.dtype.itemsize >= 8 else np.dtype(np.float64)
    flat_a, _ = _last_axis_layout(a, axes)
    flat_b, _ = _last_axis_layout(b, axes)
    pick = close.reshape(flat_a.shape[:-1])
    ga, gb = flat_a[pick].astype(wide), flat_b[pick].astype(wide)
    used = gb != 0  # b == 0 leaves the element out, whatever a is
    m = np.max(np.where(used, ga, -np.inf), axis=-1, keepdims=True)
    total = np.sum(np.where(used, gb * np.exp(np.where(used, ga, m) - m), 0), axis=-1)
    out, sgn = out.copy(), sgn.copy()
    out.reshape(pick.shape)[pick] = m[:, 0] + np.log(np.abs(total))
    sgn.reshape(pick.shape)[pick] = np.sign(total)
    return out, sgn


def _wrap_phase(xp, out, cdtype):
    """Bring the imaginary part of ``out`` into (-pi, pi], the principal branch of log."""
    y = xp.imag(out)
    k = xp.ceil((y - math.pi) / (2 * math.pi))
    keep = ((y > -math.pi) & (y <= math.pi)) | ~xp.isfinite(y)
    unit = xp.asarray(1j, dtype=cdtype, device=_device(out)) if xp is not np else np.asarray(1j, dtype=cdtype)
    turn = _astype(xp, (2 * math.pi) * k, cdtype) * unit
    return xp.where(keep, out, out - turn)


def _generic_logsumexp(xp, a, b, axes: tuple, return_sign: bool):
    """logsumexp with weights, signs and complex values in any array-API namespace.

    With ``t = a + log(b)`` (``-inf`` where ``b == 0``) the sum is ``sum(exp(t))`` (with the
    sign of ``b`` for real input). Around ``M``, the largest real part of ``t`` in a group,
    it splits into the terms at the maximum, ``c`` (exactly +-1 each for real input), and the
    rest, ``r``; ``log(c + r) = log(c) + log1p(r / c)`` keeps the tiny contributions that
    ``log(c + r)`` would round away. Where that is not finite (infinite or NaN input, or a
    sum that cancels to zero) the direct ``log(sum(b * exp(a)))`` is used instead, so that
    infinities follow the C99 rules of ``exp`` and ``log``.
    """
    cplx = _kind(xp, a.dtype) == "c"
    zeros = xp.zeros_like(a)
    neg_inf = zeros - math.inf
    with _errstate():
        if b is None:
            t, sgn_b, dropped = a, None, None
        else:
            dropped = b == 0
            safe_b = xp.where(dropped, zeros + 1, b)
            log_b = xp.log(safe_b) if cplx else xp.log(xp.abs(safe_b))
            t = xp.where(dropped, neg_inf, a + log_b)
            sgn_b = None if cplx else xp.sign(b)
        tr = xp.real(t) if cplx else t
        m = xp.max(tr, axis=axes, keepdims=True)
        shift = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        e = xp.exp(t - shift)
        if sgn_b is not None:
            e = e * sgn_b
        at_max = tr == m
        ez = xp.zeros_like(e)
        c = xp.sum(xp.where(at_max, e, ez), axis=axes, keepdims=True)
        r = xp.sum(xp.where(at_max, ez, e), axis=axes, keepdims=True)
        c_zero = c == 0
        c_safe = xp.where(c_zero, xp.ones_like(c), c)
        q = r / c_safe
        if cplx:
            log_sum = xp.where(c_zero, xp.log(r), xp.log(c_safe) + xp.log1p(q))
            out = log_sum + _astype(xp, shift, log_sum.dtype)
            total = c + r
            size = xp.abs(total)
            sgn = total / xp.where(size == 0, xp.ones_like(size), size)
            sgn = xp.where(size == 0, xp.zeros_like(sgn), sgn)
            if return_sign:
                out = xp.real(out)
        else:
            # log|1 + q|: log1p(q) above -1, log1p(-2 - q) = log(-(1 + q)) below.
            log_abs = xp.log(xp.abs(c_safe)) + xp.where(q >= -1, xp.log1p(q), xp.log1p(-2 - q))
            out = xp.where(c_zero, xp.log(xp.abs(r)), log_abs) + shift
            sgn = xp.where(c_zero, xp.sign(r), xp.sign(c_safe) * xp.sign(1 + q))

        finite = xp.isfinite(out)
        if not cplx and not return_sign:
            out = xp.where(sgn < 0, xp.zeros_like(out) + math.nan, out)
        # NumPy: the direct sum only where needed. (Other libraries may be lazy, as JAX
        # under jit: no branching on values there.)
        if not (xp is np and finite.all()):
            terms = xp.exp(a) if b is None else xp.where(dropped, xp.zeros_like(a), b * xp.exp(a))
            direct = xp.sum(terms, axis=axes, keepdims=True)
            if cplx:
                size = xp.abs(direct)
                direct_out = xp.real(xp.log(direct)) if return_sign else xp.log(direct)
                direct_sgn = xp.where(size == 0, xp.zeros_like(direct), direct / size)
            elif return_sign:
                direct_out, direct_sgn = xp.log(xp.abs(direct)), xp.sign(direct)
            else:
                direct_out, direct_sgn = xp.log(direct), xp.sign(direct)
            out = xp.where(finite, out, direct_out)
            sgn = xp.where(finite, sgn, direct_sgn)
        if cplx and not return_sign:
            out = _wrap_phase(xp, out, out.dtype)
    return out, sgn


def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False, return_sign: bool = False) -> Any:
    r"""Compute the log of the sum of exponentials of input elements (drop-in for
    :func:`scipy.special.logsumexp`).

    Parameters
    ----------
    a : array_like
        Input array: real or complex, of NumPy or of another array-API library.
    axis : None or int or tuple of ints, optional
        Axis or axes over which the sum is taken. By default `axis` is None, and all elements
        are summed.
    b : array_like, optional
        Scaling factor for ``exp(a)``, broadcastable with `a`. Values may be negative, to
        implement subtraction; where ``b == 0`` the element of `a` is left out, even if it is
        infinite or NaN.
    keepdims : bool, optional
        If True, the reduced axes are left in the result as dimensions of size one.
    return_sign : bool, optional
        If True, return a pair: the log of the absolute value of the sum and its sign
        (+1, 0 or -1 for real input, the complex phase for complex input). If False, the log
        of a negative sum is NaN.

    Returns
    -------
    res : ndarray or scalar
        ``log(sum(b * exp(a)))`` over `axis`, computed without overflow. Floating input keeps
        its dtype (with `b`, the two are promoted together); integer and boolean input gives
        float64. Complex results have their imaginary part in (-pi, pi]. An empty sum is
        ``-inf``. NumPy input gives a NumPy scalar where the result is 0-d.
    sgn : ndarray or scalar
        Only if `return_sign` is True: the sign, as described above.

    Notes
    -----
    Real NumPy input is computed by :func:`fastsoftmax.logsumexp`, in one read of the data,
    with the terms equal to the maximum counted exactly so that tiny contributions are not
    lost. Weights enter as ``a + log|b|``; with negative weights the positive and the negative
    terms are summed separately (two kernel calls) and combined as
    ``log|P - N| = log P + log(1 - N / P)``. A tuple of axes is moved to the end and flattened
    into one axis first (a copy). Complex input and other array libraries use an array-API
    implementation of the same algorithm. Where the result is not finite (infinite or NaN
    input, a sum that cancels to zero), it is ``log(sum(b * exp(a)))`` computed directly, so
    that infinities follow the C99 rules of ``exp`` and ``log``, as in SciPy.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.scipy import logsumexp
    >>> a = np.arange(10)
    >>> float(logsumexp(a))
    9.45862974442671
    >>> float(np.log(np.sum(np.exp(a))))
    9.45862974442671

    With weights:

    >>> b = np.arange(10, 0, -1)
    >>> round(float(logsumexp(a, b=b)), 12)
    9.917017853303

    Returning a sign flag:

    >>> res, sgn = logsumexp([1, 2], b=[1, -1], return_sign=True)
    >>> round(float(res), 12), float(sgn)
    (1.541324854613, -1.0)

    Several axes at once, keeping dimensions:

    >>> logsumexp(np.zeros((2, 3, 4)), axis=(0, 2), keepdims=True).shape
    (1, 3, 1)
    """
    xp = _namespace(a, b)
    a, b = _promote(xp, a, b)
    if a.ndim == 0:
        a = xp.reshape(a, (1,))
        if b is not None:
            b = xp.reshape(b, (1,))
    axes = _axes(axis, a.ndim)
    cplx = _kind(xp, a.dtype) == "c"

    if math.prod(n for n in a.shape if n is not None) == 0 and None not in a.shape:
        shape = _reduced_shape(a.shape, axes, True)
        if xp is np:
            out = np.full(shape, -np.inf, dtype=a.dtype)
        else:
            out = xp.full(shape, -math.inf, dtype=a.dtype, device=_device(a))
        # SciPy's sign of an empty sum is the sign of -inf: -1 (NaN + NaN j for complex).
        sgn = out * math.nan if cplx else xp.zeros_like(out) - 1.0
        return _finish(xp, out, sgn, axes, keepdims, return_sign)

    if xp is np and not cplx and axes:
        if b is None:
            out = _kernel_logsumexp(a, axes, keepdims=True)
            sgn = _sign_from_result(out) if return_sign else None
        else:
            out, sgn = _weighted_logsumexp(a, b, axes, return_sign)
        return _finish(np, out, sgn, axes, keepdims, return_sign)

    out, sgn = _generic_logsumexp(xp, a, b, axes, return_sign)
    return _finish(xp, out, sgn if return_sign else None, axes, keepdims, return_sign)
