"""PyTorch integration: ``softmax``, ``log_softmax`` and ``cross_entropy`` for CPU tensors.

The three functions take the arguments of their ``torch.nn.functional`` namesakes and return
the same values, computed by the fastsoftmax kernels. They are differentiable: the backward
pass runs fastsoftmax's backward kernels (``softmax_backward``, ``log_softmax_backward``) or,
for ``cross_entropy``, the gradient that the forward pass computed in the same fused pass
over the logits.

They are registered as PyTorch custom operators (``torch.ops.fastsoftmax.*``) with
``torch.library``, each with a fake implementation (shapes and dtypes without computing) and
an autograd formula, so ``torch.compile(..., fullgraph=True)`` traces them without graph
breaks and ``torch.autograd.gradcheck`` applies.

Contiguous float32 and float64 tensors are handed to the kernels without a copy (through
``Tensor.numpy()``), and results come back without one (``torch.from_numpy``). Other
layouts are made contiguous first; float16 and bfloat16 are computed in float32 and rounded
once. Only CPU tensors are supported (``meta`` and fake tensors work for tracing). The
kernels use ``fastsoftmax.get_num_threads()`` threads (see ``fastsoftmax.set_num_threads``),
independently of ``torch.set_num_threads``.

For ``loss.backward()`` (an incoming gradient of exactly 1, in eager mode) the backward pass
of ``cross_entropy`` hands out the gradient saved by the forward pass as it is, so a training
step makes a single pass that writes the gradient; otherwise it scales it (one more pass).

PyTorch is optional for fastsoftmax: ``import fastsoftmax`` never imports it; importing this
module without it raises ImportError.

Examples
--------
>>> import torch
>>> import fastsoftmax.torch as fst
>>> x = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
>>> fst.softmax(x, dim=1).detach()
tensor([[0.0900, 0.2447, 0.6652]])
>>> loss = fst.cross_entropy(x, torch.tensor([2]))
>>> loss.backward()
>>> x.grad
tensor([[ 0.0900,  0.2447, -0.3348]])

Differences from ``torch.nn.functional``: invalid class targets raise ``ValueError`` (from
the kernel) rather than ``IndexError``/``RuntimeError``; ``cross_entropy`` is not twice
differentiable (``create_graph=True`` through it raises) and does not differentiate with
respect to probability targets or ``weight``.
"""

import numbers
import operator
from typing import Any, Optional, Tuple

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "fastsoftmax.torch needs PyTorch, which is not installed. Install it with "
        "`pip install torch==2.13.0` (or a compatible version; the CPU build is enough)."
    ) from exc

import numpy as np

from . import _api

__all__ = ["softmax", "log_softmax", "cross_entropy"]

Tensor = torch.Tensor

_HALF = (torch.float16, torch.bfloat16)
_FLOATS = (torch.float32, torch.float64) + _HALF

try:  # NumPy has no bfloat16; ml_dtypes provides one that fastsoftmax reads natively.
    import ml_dtypes as _ml_dtypes

    _NP_BFLOAT16: Optional[np.dtype] = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _NP_BFLOAT16 = None


# ---------------------------------------------------------------------------------------
# Argument checks (run in the public functions, so also at trace time under torch.compile)


def _check_tensor(t: Any, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type not in ("cpu", "meta"):
        raise ValueError(
            f"{name} is on device '{t.device}', but fastsoftmax.torch computes on the CPU only; "
            f"move it with .cpu() or use torch.nn.functional on that device"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")


def _check_floating(t: Tensor, name: str) -> None:
    if t.dtype not in _FLOATS:
        kind = "complex" if t.is_complex() else "non-floating"
        raise TypeError(
            f"{name} must be a real floating tensor (float32, float64, float16 or bfloat16), "
            f"got the {kind} dtype {t.dtype}"
        )


def _check_dim(dim: Any, ndim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        try:
            dim = operator.index(dim)
        except TypeError:
            raise TypeError(f"dim must be an integer, got {type(dim).__name__}") from None
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= dim <= hi:
        raise IndexError(f"Dimension out of range (expected to be in range of [{lo}, {hi}], but got {dim})")
    return dim % max(ndim, 1)


def _check_dtype(dtype: Any) -> None:
    if dtype is not None and dtype not in _FLOATS:
        raise TypeError(f"dtype must be a real floating torch.dtype (float32, float64, float16 or bfloat16), got {dtype!r}")


# ---------------------------------------------------------------------------------------
# Tensor <-> ndarray without copies


def _as_array(t: Tensor) -> np.ndarray:
    """The tensor's data as an ndarray, sharing memory when it is contiguous."""
    t = t.detach().resolve_conj().resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_NP_BFLOAT16)
    return t.numpy()


def _as_tensor(a: Any) -> Tensor:
    """An ndarray (or NumPy scalar) as a tensor sharing its memory."""
    a = np.asarray(a)
    if _NP_BFLOAT16 is not None and a.dtype == _NP_BFLOAT16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _widen(t: Optional[Tensor]) -> Optional[Tensor]:
    """bfloat16 is computed in float32 when NumPy cannot hold it (no ml_dtypes)."""
    if t is not None and t.dtype == torch.bfloat16 and _NP_BFLOAT16 is None:
        return t.float()
    return t


# ---------------------------------------------------------------------------------------
# softmax / log_softmax and their backward passes as custom operators


@torch.library.custom_op("fastsoftmax::softmax", mutates_args=(), device_types="cpu")
def _softmax_op(input: Tensor, dim: int) -> Tensor:
    x = _widen(input)
    return _as_tensor(_api.softmax(_as_array(x), axis=dim)).to(input.dtype)


@torch.library.custom_op("fastsoftmax::log_softmax", mutates_args=(), device_types="cpu")
def _log_softmax_op(input: Tensor, dim: int) -> Tensor:
    x = _widen(input)
    return _as_tensor(_api.log_softmax(_as_array(x), axis=dim)).to(input.dtype)


@torch.library.custom_op("fastsoftmax::softmax_backward", mutates_args=(), device_types="cpu")
def _softmax_backward_op(grad: Tensor, output: Tensor, dim: int) -> Tensor:
    g, y = _widen(grad.to(output.dtype)), _widen(output)
    return _as_tensor(_api.softmax_backward(_as_array(g), _as_array(y), axis=dim)).to(output.dtype)


@torch.library.custom_op("fastsoftmax::log_softmax_backward", mutates_args=(), device_types="cpu")
def _log_softmax_backward_op(grad: Tensor, output: Tensor, dim: int) -> Tensor:
    g, y = _widen(grad.to(output.dtype)), _widen(output)
    return _as_tensor(_api.log_softmax_backward(_as_array(g), _as_array(y), axis=dim)).to(output.dtype)


def _fake_like(input: Tensor, dim: int) -> Tensor:
    return input.new_empty(input.shape)


def _fake_backward(grad: Tensor, output: Tensor, dim: int) -> Tensor:
    return output.new_empty(output.shape)


for _op in (_softmax_op, _log_softmax_op):
    _op.register_fake(_fake_like)
for _op in (_softmax_backward_op, _log_softmax_backward_op):
    _op.register_fake(_fake_backward)


def _save_output(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
    ctx.dim = inputs[1]
    ctx.save_for_backward(output)


def _softmax_grad(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], None]:
    (y,) = ctx.saved_tensors
    return _softmax_backward_op(grad, y, ctx.dim), None


def _log_softmax_grad(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], None]:
    (y,) = ctx.saved_tensors
    return _log_softmax_backward_op(grad, y, ctx.dim), None


_softmax_op.register_autograd(_softmax_grad, setup_context=_save_output)
_log_softmax_op.register_autograd(_log_softmax_grad, setup_context=_save_output)


# Second derivatives (double backward, gradgradcheck). With s = sum(g * y) along dim:
#   softmax_backward     dx = y * (g - s)       d/dg: softmax_backward(v, y)
#                                               d/dy: v * (g - s) - g * sum(v * y)
#   log_softmax_backward dx = g - exp(y) sum(g) d/dg: v - sum(v * exp(y))
#                                               d/dy: -v * exp(y) * sum(g)


def _save_backward(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
    grad, y, ctx.dim = inputs
    ctx.save_for_backward(grad, y)


def _softmax_backward_grad(ctx: Any, v: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], None]:
    g, y = ctx.saved_tensors
    d = ctx.dim
    dg = _softmax_backward_op(v, y, d) if ctx.needs_input_grad[0] else None
    dy = None
    if ctx.needs_input_grad[1]:
        dy = v * (g - (g * y).sum(d, keepdim=True)) - g * (v * y).sum(d, keepdim=True)
    return dg, dy, None


def _log_softmax_backward_grad(ctx: Any, v: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], None]:
    g, y = ctx.saved_tensors
    d = ctx.dim
    p = y.exp()
    dg = v - (v * p).sum(d, keepdim=True) if ctx.needs_input_grad[0] else None
    dy = -v * p * g.sum(d, keepdim=True) if ctx.needs_input_grad[1] else None
    return dg, dy, None


_softmax_backward_op.register_autograd(_softmax_backward_grad, setup_context=_save_backward)
_log_softmax_backward_op.register_autograd(_log_softmax_backward_grad, setup_context=_save_backward)


# ---------------------------------------------------------------------------------------
# cross_entropy: one fused operator returning (loss, d loss / d logits)


@torch.library.custom_op("fastsoftmax::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    compute_grad: bool,
) -> Tuple[Tensor, Tensor]:
    """``input`` is (N, C) or (N, C, d1, ...), the classes along dim 1 (read there in place
    where the kernels find it faster than moving them last); ``target`` holds int64 class
    indices with the input's shape without the classes, or floating probabilities with the
    input's shape.

    Returns the loss and, if ``compute_grad``, the gradient of the reduced loss (for
    ``"none"``: of the sum of the losses, i.e. each sample's own gradient) with respect to
    ``input``; otherwise an empty tensor in its place.
    """
    x, t, w = _widen(input), _widen(target), _widen(weight)
    if t.dtype == torch.bfloat16:  # fastsoftmax reads bfloat16 logits, not bfloat16 probabilities
        t = t.float()
    res = _api.cross_entropy(
        _as_array(x),
        _as_array(t),
        axis=1,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        weight=None if w is None else _as_array(w),
        return_grad=compute_grad,
    )
    loss, grad = res if compute_grad else (res, None)
    loss_t = _as_tensor(loss).to(input.dtype)
    # (contiguous, as the fake kernel says: over a middle class dim the package may hand back
    # a view of a gradient computed with the classes last)
    grad_t = _as_tensor(grad).to(input.dtype).contiguous() if compute_grad else input.new_empty((0,))
    return loss_t, grad_t


@_cross_entropy_op.register_fake
def _cross_entropy_fake(input, target, weight, ignore_index, reduction, label_smoothing, compute_grad):
    loss = input.new_empty(input.shape[:1] + input.shape[2:] if reduction == "none" else ())
    grad = input.new_empty(input.shape if compute_grad else (0,))
    return loss, grad


def _cross_entropy_setup(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, Tensor]) -> None:
    ctx.reduction = inputs[4]
    ctx.has_grad = inputs[6]
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # else autograd fills a zero gradient for output[1]
    ctx.save_for_backward(output[1])


def _cross_entropy_grad(ctx: Any, grad_loss: Tensor, _unused: Any) -> Tuple[Optional[Tensor], ...]:
    nones = (None,) * 6
    if not ctx.needs_input_grad[0]:
        return (None,) + nones
    if torch.is_grad_enabled():
        # create_graph=True: the saved gradient does not depend on the logits in the graph, so a
        # second derivative through it would be silently wrong. Refuse instead.
        raise RuntimeError(
            "fastsoftmax.torch.cross_entropy is not twice differentiable (create_graph=True / "
            "double backward); use torch.nn.functional.cross_entropy for higher-order gradients"
        )
    if not ctx.has_grad:
        raise RuntimeError(
            "fastsoftmax.torch.cross_entropy: the forward pass was run without computing the "
            "gradient (the input did not require grad, or grad mode was off)"
        )
    (g,) = ctx.saved_tensors
    if grad_loss is None:  # the loss took no part in what is differentiated
        return (None,) + nones
    if ctx.reduction == "none":
        return (g * grad_loss.unsqueeze(1),) + nones
    if _is_eager_one(grad_loss):
        # loss.backward(): the saved gradient is the answer. Returning it without a copy is
        # safe: autograd only reuses a gradient buffer in place (or steals it for .grad) when
        # no one else holds it, i.e. after this node has released it (retain_graph=False).
        return (g,) + nones
    return (g * grad_loss,) + nones


def _is_functorch_wrapped(t: Tensor) -> bool:
    check = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return True if check is None else bool(check(t))  # unknown: assume it may be


def _is_eager_one(t: Tensor) -> bool:
    """Whether ``t`` is a plain CPU tensor holding exactly 1 (never while tracing)."""
    if type(t) is not torch.Tensor or t.device.type != "cpu" or t.numel() != 1:
        return False
    if torch.compiler.is_compiling() or _is_functorch_wrapped(t):
        return False
    try:
        return bool(t.item() == 1)
    except RuntimeError:  # pragma: no cover - a tensor whose data cannot be read
        return False


_cross_entropy_op.register_autograd(_cross_entropy_grad, setup_context=_cross_entropy_setup)


# ---------------------------------------------------------------------------------------
# The public functions


def _prepared(input: Tensor, dim: int, dtype: Optional[torch.dtype]):
    """The checked input (cast to ``dtype`` if given) and its normalised ``dim``."""
    _check_tensor(input, "input")
    _check_dtype(dtype)
    if dtype is not None:
        input = input.to(dtype)
    _check_floating(input, "input")
    return input, _check_dim(dim, input.dim())


def softmax(input: Tensor, dim: int, *, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``torch.nn.functional.softmax(input, dim, dtype=dtype)`` by the fastsoftmax kernels.

    ``dtype``, if given, is the floating dtype the input is cast to before the operation.
    Differentiable; the backward pass is :func:`fastsoftmax.softmax_backward`.
    """
    input, dim = _prepared(input, dim, dtype)
    return _softmax_op(input, dim)


def log_softmax(input: Tensor, dim: int, *, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``torch.nn.functional.log_softmax(input, dim, dtype=dtype)`` by the fastsoftmax kernels.

    Differentiable; the backward pass is :func:`fastsoftmax.log_softmax_backward`.
    """
    input, dim = _prepared(input, dim, dtype)
    return _log_softmax_op(input, dim)


_REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """``torch.nn.functional.cross_entropy`` by fastsoftmax's fused kernel.

    ``input`` is (N, C), (N, C, d1, ...) or unbatched (C,); the classes are along dim 1 (dim
    0 when unbatched). ``target`` holds class indices (any integer dtype; shape (N, d1, ...),
    or 0-d when unbatched) or class probabilities (floating, the input's shape). One pass
    over the logits computes the loss and, when the input requires grad, the gradient,
    which the backward pass only scales by the incoming gradient.
    """
    _check_tensor(input, "input")
    _check_floating(input, "input")
    _check_tensor(target, "target")
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    ignore_index = int(ignore_index)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a real number, got {type(label_smoothing).__name__}")
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if input.dim() == 0:
        raise ValueError("input must have at least one dimension (the classes)")

    if target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices or floating probabilities, got dtype {target.dtype}")
    probabilities = target.is_floating_point()
    if probabilities:
        _check_floating(target, "target")
    grad_mode = torch.is_grad_enabled()
    if probabilities and grad_mode and target.requires_grad:
        raise NotImplementedError(
            "fastsoftmax.torch.cross_entropy does not differentiate with respect to probability "
            "targets; pass target.detach() or use torch.nn.functional.cross_entropy"
        )

    unbatched = input.dim() == 1
    classes = input.shape[0] if unbatched else input.shape[1]
    sample_shape = () if unbatched else (input.shape[0],) + tuple(input.shape[2:])
    expected = tuple(input.shape) if probabilities else sample_shape
    if tuple(target.shape) != expected:
        kind = "probability" if probabilities else "class"
        raise ValueError(f"{kind} targets must have shape {expected} for input of shape {tuple(input.shape)}, got {tuple(target.shape)}")

    if weight is not None:
        _check_tensor(weight, "weight")
        _check_floating(weight, "weight")
        if tuple(weight.shape) != (classes,):
            raise ValueError(f"weight must have shape ({classes},), got {tuple(weight.shape)}")
        if grad_mode and weight.requires_grad:
            raise NotImplementedError("fastsoftmax.torch.cross_entropy does not differentiate with respect to weight")
        weight = weight.detach().to(input.dtype)

    # Unbatched input as one sample (a view); (N, C) and (N, C, d...) go as they are.
    rows, t = input, target
    if unbatched:
        rows, t = input.reshape(1, classes), target.reshape(1, classes) if probabilities else target.reshape(1)
    t = t.to(input.dtype) if probabilities else t.to(torch.int64)
    compute_grad = grad_mode and input.requires_grad
    loss, _ = _cross_entropy_op(rows, t, weight, ignore_index, reduction, label_smoothing, compute_grad)
    return loss.reshape(sample_shape) if reduction == "none" else loss
