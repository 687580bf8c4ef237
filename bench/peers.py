"""The libraries measured: fastsoftmax and its peers, each behind the same small interface.

A library turns a :class:`~cases.Case` and its :class:`~cases.BufferPool` into a
:class:`Runner`: ``runner.call(i)`` computes the case's function on buffer set ``i`` and
returns the result. Whatever can be prepared ahead (output arrays, tensors wrapping the
NumPy buffers, ONNX sessions and bindings, jitted functions, device arrays) is prepared
in :meth:`Library.runner`, outside the timed region. A library without the operation
raises :class:`Unsupported`, which the report shows as skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, List, Optional

import numpy as np

from cases import Case, BufferPool


class Unsupported(Exception):
    """The library has no such operation, or not for this layout or dtype."""


@dataclass
class Runner:
    call: Callable[[int], Any]
    to_numpy: Callable[[Any], np.ndarray] = np.asarray
    context: Callable[[], ContextManager] = contextlib.nullcontext
    notes: List[str] = field(default_factory=list)
    keep_alive: Any = None  # objects the call needs to outlive it (an ONNX session)


class Library:
    name = "?"
    is_fastsoftmax = False

    def __init__(self) -> None:
        self.module: Any = None
        self.unavailable: Optional[str] = None  # why it cannot be measured at all

    @property
    def version(self) -> str:
        return str(getattr(self.module, "__version__", "")) if self.module is not None else ""

    def threads_note(self, threads: int) -> str:
        """How the thread count is applied (or why it is not)."""
        return ""

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        raise NotImplementedError

    def _import(self, name: str) -> Any:
        try:
            return importlib.import_module(name)
        except Exception as exc:  # ImportError, or a broken install failing on import
            self.unavailable = " ".join(f"not installed ({type(exc).__name__}: {exc})".split())
            return None


def _kind_sets(case: Case, pool: BufferPool) -> List[List[np.ndarray]]:
    return [pool.get(kind) for kind in case.function.inputs]


def _out_sets(case: Case, pool: BufferPool) -> List[np.ndarray]:
    return pool.get("reduced_out" if case.function.reduced_output else "out")


# ---------------------------------------------------------------------------------------
# fastsoftmax


class FastSoftmax(Library):
    """The package under test, through its public functions with a preallocated ``out=``.

    ``isa`` forces one backend (``fastsoftmax[avx2]``); ``raw_kernel`` calls the compiled
    kernels directly (``fastsoftmax:kernel``), which shows what the Python-side checks cost.
    """

    is_fastsoftmax = True

    def __init__(self, isa: Optional[str] = None, raw_kernel: bool = False) -> None:
        super().__init__()
        self.isa = isa
        self.raw_kernel = raw_kernel
        self.name = "fastsoftmax" + (f"[{isa}]" if isa else "") + (":kernel" if raw_kernel else "")
        self.module = self._import("fastsoftmax")
        if self.module is not None and isa is not None:
            available = self.module._api.available_backends()
            if isa not in available:
                self.unavailable = f"backend {isa!r} not available here (have {', '.join(available)})"

    @property
    def backend(self) -> str:
        if self.module is None:
            return ""
        return self.isa or self.module.backend()

    def _accepts_threads(self, function_name: str) -> bool:
        fn = getattr(self.module, function_name, None)
        try:
            return fn is not None and "threads" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return False

    def threads_note(self, threads: int) -> str:
        if self._accepts_threads("softmax"):
            return f"threads={threads} passed to each call"
        if hasattr(self.module, "set_num_threads"):
            return f"fastsoftmax.set_num_threads({threads})"
        return "single-threaded (fastsoftmax has no threads= yet)" if threads > 1 else ""

    def _context(self, threads: int) -> Callable[[], ContextManager]:
        fs, isa = self.module, self.isa
        set_threads = getattr(fs, "set_num_threads", None)
        use_set_threads = set_threads is not None and not self._accepts_threads("softmax")

        @contextlib.contextmanager
        def context():
            with contextlib.ExitStack() as stack:
                if isa is not None:
                    stack.enter_context(fs._api.use_backend(isa))
                if use_set_threads:
                    set_threads(threads)
                yield

        return context

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        fs = self.module
        name, axis = case.function.name, case.shape.axis
        if not hasattr(fs, name):
            raise Unsupported(f"fastsoftmax has no {name} yet")
        ins, outs = _kind_sets(case, pool), _out_sets(case, pool)
        kwargs: Dict[str, Any] = {}
        if self._accepts_threads(name):
            kwargs["threads"] = case.threads
        notes = [self.threads_note(case.threads)] if case.threads > 1 else []
        context = self._context(case.threads)

        if self.raw_kernel:
            return Runner(self._kernel_call(name, axis, ins, outs), context=context, notes=notes)
        if name == "cross_entropy":
            call = self._cross_entropy_call(case, ins, outs, kwargs, notes)
            return Runner(call, context=context, notes=notes)
        fn = getattr(fs, name)
        if len(ins) == 1:
            (xs,) = ins
            return Runner(lambda i: fn(xs[i], axis, out=outs[i], **kwargs), context=context, notes=notes)
        gs, ys = ins
        return Runner(lambda i: fn(gs[i], ys[i], axis, out=outs[i], **kwargs), context=context, notes=notes)

    def _kernel_call(self, name: str, axis: int, ins, outs) -> Callable[[int], Any]:
        core = self.module._core
        if name in ("softmax", "log_softmax"):
            (xs,) = ins
            log = name == "log_softmax"
            return lambda i: (core.forward(xs[i], outs[i], axis, 1.0, log), outs[i])[1]
        if name == "logsumexp":
            (xs,) = ins
            return lambda i: (core.logsumexp(xs[i], outs[i], axis, 1.0), outs[i])[1]
        if name in ("softmax_backward", "log_softmax_backward"):
            gs, ys = ins
            log = name == "log_softmax_backward"
            return lambda i: (core.backward(gs[i], ys[i], outs[i], axis, 1.0, log), outs[i])[1]
        raise Unsupported(f"no raw kernel entry for {name}")

    def _cross_entropy_call(self, case, ins, outs, kwargs, notes) -> Callable[[int], Any]:
        """Adapts to the signature cross_entropy ends up with: per-row losses wanted."""
        fn = self.module.cross_entropy
        xs, labels = ins
        params = inspect.signature(fn).parameters
        if "reduction" in params:
            kwargs["reduction"] = "none"
        if "axis" in params:
            kwargs["axis"] = case.shape.axis
        elif not case.shape.last_axis:
            raise Unsupported("cross_entropy takes no axis= and the classes are not on the last axis")
        if "out" in params and kwargs.get("reduction") == "none":
            return lambda i: fn(xs[i], labels[i], out=outs[i], **kwargs)
        if "reduction" not in params:
            notes.append("cross_entropy has no reduction=; its result is checked as returned")
        return lambda i: fn(xs[i], labels[i], **kwargs)


# ---------------------------------------------------------------------------------------
# NumPy


def numpy_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def numpy_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


def numpy_logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    return (np.log(np.exp(x - m).sum(axis, keepdims=True)) + m).squeeze(axis)


def numpy_softmax_backward(grad: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return y * (grad - (grad * y).sum(axis, keepdims=True))


def numpy_log_softmax_backward(grad: np.ndarray, log_y: np.ndarray, axis: int) -> np.ndarray:
    return grad - np.exp(log_y) * grad.sum(axis, keepdims=True)


def numpy_cross_entropy(x: np.ndarray, labels: np.ndarray, axis: int) -> np.ndarray:
    picked = np.take_along_axis(x, np.expand_dims(labels, axis), axis).squeeze(axis)
    return numpy_logsumexp(x, axis) - picked


class NumPyPeer(Library):
    """The textbook NumPy expressions (softmax is the 3-line ``exp(x - max) / sum``)."""

    name = "numpy"
    FUNCTIONS = {
        "softmax": numpy_softmax,
        "log_softmax": numpy_log_softmax,
        "logsumexp": numpy_logsumexp,
        "softmax_backward": numpy_softmax_backward,
        "log_softmax_backward": numpy_log_softmax_backward,
        "cross_entropy": numpy_cross_entropy,
    }

    def __init__(self) -> None:
        super().__init__()
        self.module = np

    def threads_note(self, threads: int) -> str:
        return "single-threaded (NumPy ufuncs and reductions do not use threads)" if threads > 1 else ""

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        fn, axis = self.FUNCTIONS[case.function.name], case.shape.axis
        ins = _kind_sets(case, pool)
        notes = [self.threads_note(case.threads)] if case.threads > 1 else []
        return Runner(lambda i: fn(*(s[i] for s in ins), axis), notes=notes)


# ---------------------------------------------------------------------------------------
# SciPy


class SciPyPeer(Library):
    name = "scipy"

    def __init__(self) -> None:
        super().__init__()
        self.module = self._import("scipy")
        self.special = self._import("scipy.special") if self.module is not None else None

    def threads_note(self, threads: int) -> str:
        return "single-threaded (scipy.special runs NumPy ufuncs)" if threads > 1 else ""

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        name, axis = case.function.name, case.shape.axis
        if name not in ("softmax", "log_softmax", "logsumexp"):
            raise Unsupported(f"scipy.special has no {name}")
        fn = getattr(self.special, name)
        (xs,) = _kind_sets(case, pool)
        notes = [self.threads_note(case.threads)] if case.threads > 1 else []
        return Runner(lambda i: fn(xs[i], axis=axis), notes=notes)


# ---------------------------------------------------------------------------------------
# PyTorch


class TorchPeer(Library):
    """torch on the CPU, on tensors that share the NumPy buffers (``out=`` where it exists)."""

    name = "torch"

    def __init__(self) -> None:
        super().__init__()
        self.module = self._import("torch")
        if self.module is not None:
            self.module.set_grad_enabled(False)

    def threads_note(self, threads: int) -> str:
        return f"torch.set_num_threads({threads})"

    def _context(self, threads: int) -> Callable[[], ContextManager]:
        torch = self.module

        @contextlib.contextmanager
        def context():
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            yield

        return context

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        torch = self.module
        name, dim = case.function.name, case.shape.axis
        ins = [[torch.from_numpy(a) for a in s] for s in _kind_sets(case, pool)]
        outs = [torch.from_numpy(a) for a in _out_sets(case, pool)]
        to_numpy = lambda t: t.numpy()  # noqa: E731
        context = self._context(case.threads)
        dtype = torch.float32 if case.dtype == np.float32 else torch.float64
        notes: List[str] = []
        if name == "softmax":
            (xs,) = ins
            call = lambda i: torch.softmax(xs[i], dim, out=outs[i])  # noqa: E731
        elif name == "log_softmax":
            (xs,) = ins
            call = lambda i: torch.log_softmax(xs[i], dim, out=outs[i])  # noqa: E731
        elif name == "logsumexp":
            (xs,) = ins
            call = lambda i: torch.logsumexp(xs[i], dim, out=outs[i])  # noqa: E731
        elif name == "softmax_backward":
            gs, ys = ins
            # The private autograd kernel; it has no out= variant, so it allocates.
            call = lambda i: torch._softmax_backward_data(gs[i], ys[i], dim, dtype)  # noqa: E731
            notes.append("torch._softmax_backward_data (allocates its result)")
        elif name == "log_softmax_backward":
            gs, ys = ins
            call = lambda i: torch._log_softmax_backward_data(gs[i], ys[i], dim, dtype, out=outs[i])  # noqa: E731
            notes.append("torch._log_softmax_backward_data")
        elif name == "cross_entropy":
            if not (dim == 1 or len(case.shape.dims) == 1):
                raise Unsupported("torch's cross_entropy takes the classes on dim 1")
            xs, labels = ins
            ce = torch.nn.functional.cross_entropy
            call = lambda i: ce(xs[i], labels[i], reduction="none")  # noqa: E731
        else:
            raise Unsupported(f"torch has no {name}")
        return Runner(call, to_numpy=to_numpy, context=context, notes=notes)


# ---------------------------------------------------------------------------------------
# onnxruntime


class OnnxRuntimePeer(Library):
    """A one-node ONNX model per case, run through IOBinding on the NumPy buffers.

    Session options: the requested intra-op threads, one inter-op thread, all graph
    optimisations, and thread-pool spinning off (a spinning pool would steal the core from
    the library timed right after it in the interleaved rounds).
    """

    name = "onnxruntime"
    OPSET = 17

    def __init__(self) -> None:
        super().__init__()
        self.module = self._import("onnxruntime")
        self.onnx = self._import("onnx") if self.module is not None else None
        if self.onnx is None and self.module is not None:
            self.unavailable = "onnx (needed to build the models) " + (self.unavailable or "")

    @property
    def version(self) -> str:
        return f"{self.module.__version__} (onnx {self.onnx.__version__})" if self.onnx else ""

    def threads_note(self, threads: int) -> str:
        return f"intra_op_num_threads={threads}, spinning off"

    def _session(self, model_bytes: bytes, threads: int):
        ort = self.module
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # NOT_IMPLEMENTED for a dtype, for instance
            raise Unsupported(f"session failed: {str(exc).splitlines()[0][:160]}") from None

    def _model(self, case: Case) -> tuple:
        """(model bytes, input names, output shape, notes) for the case's function."""
        helper, TensorProto = self.onnx.helper, self.onnx.TensorProto
        elem = TensorProto.FLOAT if case.dtype == np.float32 else TensorProto.DOUBLE
        dims, axis = list(case.shape.dims), case.shape.axis
        reduced = list(case.shape.reduced_dims)
        tensor = lambda n, shape, t=elem: helper.make_tensor_value_info(n, t, shape)  # noqa: E731
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [axis])
        name = case.function.name
        notes: List[str] = []
        initializers = []
        if name in ("softmax", "log_softmax"):
            op = "Softmax" if name == "softmax" else "LogSoftmax"
            nodes = [helper.make_node(op, ["x"], ["out"], axis=axis)]
            inputs, out_shape = [tensor("x", dims)], dims
        elif name == "logsumexp":
            nodes = [helper.make_node("ReduceLogSumExp", ["x"], ["out"], axes=[axis], keepdims=0)]
            inputs, out_shape = [tensor("x", dims)], reduced
        elif name == "softmax_backward":  # no SoftmaxGrad outside the training build
            nodes = [
                helper.make_node("Mul", ["grad", "y"], ["gy"]),
                helper.make_node("ReduceSum", ["gy", "axes"], ["dot"], keepdims=1),
                helper.make_node("Sub", ["grad", "dot"], ["centred"]),
                helper.make_node("Mul", ["y", "centred"], ["out"]),
            ]
            initializers.append(axes)
            inputs, out_shape = [tensor("grad", dims), tensor("y", dims)], dims
            notes.append("graph Mul, ReduceSum, Sub, Mul (no SoftmaxGrad in inference builds)")
        elif name == "log_softmax_backward":
            nodes = [
                helper.make_node("ReduceSum", ["grad", "axes"], ["total"], keepdims=1),
                helper.make_node("Exp", ["y"], ["p"]),
                helper.make_node("Mul", ["p", "total"], ["scaled"]),
                helper.make_node("Sub", ["grad", "scaled"], ["out"]),
            ]
            initializers.append(axes)
            inputs, out_shape = [tensor("grad", dims), tensor("y", dims)], dims
            notes.append("graph ReduceSum, Exp, Mul, Sub")
        elif name == "cross_entropy":
            if axis != 1:
                raise Unsupported("SoftmaxCrossEntropyLoss takes (N, C, ...) scores: classes on axis 1")
            nodes = [helper.make_node("SoftmaxCrossEntropyLoss", ["x", "labels"], ["out"], reduction="none")]
            inputs = [tensor("x", dims), tensor("labels", reduced, TensorProto.INT64)]
            out_shape = reduced
        else:
            raise Unsupported(f"no ONNX model for {name}")
        graph = helper.make_graph(nodes, name, inputs, [tensor("out", out_shape)], initializer=initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.OPSET)])
        model.ir_version = 8
        return model.SerializeToString(), [i.name for i in inputs], notes

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        model_bytes, input_names, notes = self._model(case)
        session = self._session(model_bytes, case.threads)
        ins, outs = _kind_sets(case, pool), _out_sets(case, pool)
        bindings = []
        for i in range(pool.n_sets):
            binding = session.io_binding()
            for input_name, arrays in zip(input_names, ins):
                a = arrays[i]
                binding.bind_input(input_name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)
            out = outs[i]
            binding.bind_output("out", "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
            bindings.append(binding)
        run = session.run_with_iobinding

        def call(i: int):
            run(bindings[i])
            return outs[i]

        return Runner(call, notes=notes, keep_alive=(session, bindings))


# ---------------------------------------------------------------------------------------
# JAX


class JaxPeer(Library):
    """jax.nn functions, jitted, on device arrays put in place beforehand.

    XLA's thread pool is fixed when jax is imported: run.py sets XLA_FLAGS for one thread
    when every requested thread count is 1; otherwise XLA keeps its default (all cores).
    """

    name = "jax"

    def __init__(self, configured_threads: int) -> None:
        super().__init__()
        self.configured_threads = configured_threads
        self.module = self._import("jax")
        if self.module is not None:
            self.module.config.update("jax_enable_x64", True)  # so that float64 stays float64

    def threads_note(self, threads: int) -> str:
        return "XLA_FLAGS single-threaded" if self.configured_threads == 1 else "XLA default thread pool"

    def runner(self, case: Case, pool: BufferPool) -> Runner:
        if case.threads != self.configured_threads:
            raise Unsupported(f"XLA's thread pool is fixed at import (set up for {self.configured_threads})")
        jax = self.module
        jnp = jax.numpy
        axis = case.shape.axis
        formulas = {
            "softmax": lambda x: jax.nn.softmax(x, axis=axis),
            "log_softmax": lambda x: jax.nn.log_softmax(x, axis=axis),
            "logsumexp": lambda x: jax.nn.logsumexp(x, axis=axis),
            "softmax_backward": lambda g, y: y * (g - jnp.sum(g * y, axis=axis, keepdims=True)),
            "log_softmax_backward": lambda g, y: g - jnp.exp(y) * jnp.sum(g, axis=axis, keepdims=True),
            "cross_entropy": lambda x, labels: jax.nn.logsumexp(x, axis=axis)
            - jnp.take_along_axis(x, jnp.expand_dims(labels, axis), axis=axis).squeeze(axis),
        }
        fn = jax.jit(formulas[case.function.name])
        ins = [[jax.device_put(a) for a in arrays] for arrays in _kind_sets(case, pool)]
        notes = ["jitted y * (g - sum(g * y))"] if case.function.name == "softmax_backward" else []
        return Runner(lambda i: fn(*(s[i] for s in ins)).block_until_ready(), notes=notes)


PEER_CLASSES = {
    "numpy": NumPyPeer,
    "scipy": SciPyPeer,
    "torch": TorchPeer,
    "onnxruntime": OnnxRuntimePeer,
    "jax": JaxPeer,
}
DEFAULT_PEERS = "numpy,scipy,torch,onnxruntime,jax"


def make_peers(names: List[str], jax_threads: int) -> List[Library]:
    peers = []
    for name in names:
        if name not in PEER_CLASSES:
            raise ValueError(f"unknown peer {name!r}: choose from {', '.join(PEER_CLASSES)}")
        cls = PEER_CLASSES[name]
        peers.append(cls(jax_threads) if cls is JaxPeer else cls())
    return peers
