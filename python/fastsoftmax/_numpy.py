"""The softmax family in NumPy, with the same semantics as the kernels.

Used when the compiled extension is missing, when ``FASTSOFTMAX_ISA=numpy`` is set, and for
dtypes without a kernel. Inputs are already validated arrays; results are computed in a wider
type (float64 for float32, long double for float64, where the platform has one) and returned in the
input's dtype.
"""

from __future__ import annotations

import numpy as np


def _wide(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.longdouble) if dtype.itemsize >= 8 else np.dtype(np.float64)


def _work(x: np.ndarray, beta: float, where=None) -> np.ndarray:
    # beta * x is rounded in the input's dtype, as the kernels do, then widened; entries
    # outside `where` read as -inf.
    with np.errstate(invalid="ignore", over="ignore"):
        z = x * x.dtype.type(beta) if beta != 1.0 else x
    z = z.astype(_wide(x.dtype), copy=False)
    return z if where is None else np.where(where, z, -np.inf)


def _narrow(y: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # a value beyond the dtype's range is +-inf there
        return y.astype(dtype, copy=False)


def _finish(y: np.ndarray, where, axis: int, outside: float, dtype) -> np.ndarray:
    """Entries outside `where`, and rows with nothing selected, read `outside`."""
    if where is not None:
        w = np.broadcast_to(where, y.shape)
        y = np.where(w & w.any(axis=axis, keepdims=True), y, outside)
    return _narrow(y, dtype)


def _row_stats(z: np.ndarray, axis: int):
    """Max over non-NaN entries, sum of exp(z - max) below the max, ties, NaN and +inf counts."""
    nan = np.isnan(z).any(axis=axis, keepdims=True)
    posinf = z == np.inf
    k_inf = posinf.sum(axis=axis, keepdims=True)
    m = np.max(np.where(np.isnan(z), -np.inf, z), axis=axis, keepdims=True, initial=-np.inf)
    finite_m = np.where(np.isfinite(m), m, 0)
    below = z < m
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        rest = np.where(below, np.exp(np.where(below, z, finite_m) - finite_m), 0).sum(axis=axis, keepdims=True)
    ties = (z == m).sum(axis=axis, keepdims=True)
    return m, rest, ties, nan, posinf, k_inf


def logsumexp(x: np.ndarray, axis: int, keepdims: bool = False, beta: float = 1.0, where=None) -> np.ndarray:
    z = _work(x, beta, where)
    m, rest, ties, nan, _, _ = _row_stats(z, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        lse = np.where(np.isfinite(m), m + np.log1p(rest + (ties - 1)), m)
    lse = np.where(nan, np.nan, lse)
    if not keepdims:
        lse = np.squeeze(lse, axis=axis)
    return _narrow(lse, x.dtype)


def softmax(x: np.ndarray, axis: int, beta: float = 1.0, where=None) -> np.ndarray:
    z = _work(x, beta, where)
    m, rest, ties, nan, posinf, k_inf = _row_stats(z, axis)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        y = np.exp(z - m) / (rest + ties)  # a row of all -inf gives NaN through -inf - -inf
        y = np.where(k_inf > 0, posinf / k_inf, y)
    y = np.where(nan, np.nan, y)
    return _finish(y, where, axis, 0.0, x.dtype)


def log_softmax(x: np.ndarray, axis: int, beta: float = 1.0, where=None) -> np.ndarray:
    z = _work(x, beta, where)
    m, rest, ties, nan, posinf, k_inf = _row_stats(z, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        # (z - m) - log S, as the kernels: z - (m + log S) would round m + log S first, an
        # error of half an ULP of m where the result may be as small as log S.
        y = (z - m) - np.log1p(rest + (ties - 1))  # -inf rows: -inf - -inf = NaN
        y = np.where(k_inf > 0, np.where(posinf, -np.log(k_inf), -np.inf), y)
    y = np.where(nan, np.nan, y)
    return _finish(y, where, axis, -np.inf, x.dtype)


def _grads(grad: np.ndarray, y: np.ndarray, where):
    wide = _wide(grad.dtype)
    g, s = grad.astype(wide), y.astype(wide)
    if where is not None:
        g = np.where(where, g, 0)
    return g, s


def softmax_backward(grad: np.ndarray, y: np.ndarray, axis: int, beta: float = 1.0, where=None) -> np.ndarray:
    g, s = _grads(grad, y, where)
    with np.errstate(invalid="ignore"):  # inf - inf, 0 * inf: NaN, as the kernels give
        dot = (g * s).sum(axis=axis, keepdims=True)
        dx = beta * s * (g - dot)
    return _narrow(dx if where is None else np.where(where, dx, 0), grad.dtype)


def log_softmax_backward(grad: np.ndarray, y: np.ndarray, axis: int, beta: float = 1.0, where=None) -> np.ndarray:
    g, s = _grads(grad, y, where)
    # inf + -inf, 0 * inf: NaN, and e^y beyond the range (y is not a log-probability): inf,
    # as the kernels give
    with np.errstate(invalid="ignore", over="ignore"):
        total = g.sum(axis=axis, keepdims=True)
        dx = beta * (g - np.exp(s) * total)
    return _narrow(dx if where is None else np.where(where, dx, 0), grad.dtype)


def cross_entropy_rows(x, target, weight, ignore_index, smoothing, scale_nll, scale_smooth, want_grad):
    """Per-row parts of the cross-entropy of (rows, classes) logits, as the kernel computes them.

    Returns (nll, smooth, grad): nll and smooth per row in float64 (smooth is None unless class
    targets are smoothed), and grad (or None) in the logits' dtype.
    """
    rows, classes = x.shape
    wide = _wide(x.dtype)
    z = x.astype(wide)
    w = np.ones(classes, wide) if weight is None else weight.astype(wide)
    m, rest, ties, nan, _, _ = _row_stats(z, 1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # (z - m) - log S, as log_softmax (not z - lse, which rounds m + log S first); a row
        # with +inf (inf - inf), NaN or only -inf gives NaN, as torch.
        logp = np.where(nan, np.nan, (z - m) - np.log1p(rest + (ties - 1)))
        p = np.exp(logp)
    eps = smoothing
    with np.errstate(invalid="ignore", over="ignore"):
        return _cross_entropy_parts(x, z, w, p, logp, target, ignore_index, eps, scale_nll, scale_smooth, want_grad)


def _cross_entropy_parts(x, z, w, p, logp, target, ignore_index, eps, scale_nll, scale_smooth, want_grad):
    rows, classes = x.shape
    if target.ndim == 2:
        tp = (1 - eps) * target.astype(z.dtype) + eps / classes
        nll = -(w * tp * logp).sum(axis=1)
        smooth = None
        grad = scale_nll * (p * (w * tp).sum(axis=1, keepdims=True) - w * tp) if want_grad else None
    else:
        ignored = target == ignore_index
        t = np.where(ignored, 0, target)
        w_t = w[t]
        nll = np.where(ignored, 0, -w_t * np.take_along_axis(logp, t[:, None], 1)[:, 0])
        smooth = np.where(ignored, 0, -(w * logp).sum(axis=1)) if eps > 0 else None
        grad = None
        if want_grad:
            onehot = np.zeros_like(p)
            onehot[np.arange(rows), t] = 1
            g_nll = p - onehot
            # p_t - 1 as minus the other classes' sum, which keeps its digits where p_t is near 1.
            g_nll[np.arange(rows), t] = -np.where(onehot == 1, 0, p).sum(axis=1)
            grad = scale_nll * (1 - eps) * w_t[:, None] * g_nll
            grad = grad + scale_smooth * eps / classes * (p * w.sum() - w)
            grad[ignored] = 0
    if grad is not None:
        grad = grad.astype(x.dtype)
    return nll.astype(np.float64), None if smooth is None else smooth.astype(np.float64), grad
