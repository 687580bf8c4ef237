"""fastsoftmax.torch: the PyTorch operators against torch.nn.functional (#7).

Tolerances:

- softmax / log_softmax, float32: within 2 ULP (float32 spacing of the exact value) of a
  float64 reference computed from the same float32 input (softmax values below 1e-30: within
  1e-37 absolute, as in tests/conftest.py, since subnormal results may be flushed); for log_softmax plus an absolute
  2**-50 * (max|x| of the row + 1): results near 0 (the row's dominant entry) are
  x - logsumexp, and the normaliser is carried in a wider type, not exactly, so their error
  is bounded relative to the row's scale, not to the (tiny) result. torch's own float32
  results are not the reference: they are up to ~60 ULP off for softmax on these inputs and
  drop the tiny terms near 0 altogether.
- softmax / log_softmax, float64: torch's float64 result within rtol 1e-12.
- cross_entropy, float64: torch's loss and gradient within 1e-10 relative.

The optional inductor test runs only with FASTSOFTMAX_TEST_INDUCTOR=1 (it needs a C++
compiler and ~30 s on two cores); aot_eager is always tested.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastsoftmax as fs  # noqa: E402
import fastsoftmax.torch as fst  # noqa: E402

F = torch.nn.functional


@pytest.fixture
def gen(request):
    """A torch generator seeded from the test id (independent of order)."""
    import zlib

    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randn(*shape, dtype=torch.float64, gen=None, scale=1.0, requires_grad=False):
    n = int(np.prod(shape))  # torch.randn((), generator=...) is rejected
    x = torch.randn(n, generator=gen, dtype=torch.float64).reshape(shape) * scale
    return x.to(dtype).requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------
# Importing


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_fastsoftmax_does_not_import_torch():
    r = _run(
        """
        import sys, fastsoftmax, fastsoftmax.scipy
        assert "torch" not in sys.modules, "fastsoftmax imported torch"
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_import_without_torch_raises_helpful_importerror():
    r = _run(
        """
        import sys
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
        import fastsoftmax
        try:
            import fastsoftmax.torch
        except ImportError as e:
            print("MSG:", e)
        else:
            raise SystemExit("no ImportError")
        """
    )
    assert r.returncode == 0, r.stderr
    assert "pip install torch==2.13.0" in r.stdout
    assert "compatible version" in r.stdout


def test_registered_as_torch_ops():
    for name in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "cross_entropy"):
        assert hasattr(torch.ops.fastsoftmax, name)


# ---------------------------------------------------------------------------------------
# softmax / log_softmax values


def _ref_log_softmax(x, dim):
    """float64 log_softmax as (x - m) - log1p(sum of the other terms): accurate near 0 too."""
    x = x.double()
    m, i = x.max(dim, keepdim=True)
    e = (x - m).exp().scatter(dim, i, 0.0)
    return (x - m) - torch.log1p(e.sum(dim, keepdim=True))


def _ulp32(a):
    return torch.from_numpy(np.asarray(np.spacing(np.abs(a.float().numpy())))).double()


SHAPES_DIMS = [((64, 1000), 1), ((64, 1000), 0), ((3, 5, 7), 1), ((3, 5, 7), -1), ((3, 5, 7), 0), ((17,), 0), ((), 0)]


@pytest.mark.parametrize("shape,dim", SHAPES_DIMS)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_float32_within_2ulp(shape, dim, scale, gen):
    x = randn(*shape, dtype=torch.float32, gen=gen, scale=scale)
    ref_log = _ref_log_softmax(x, dim)
    ref_sm = ref_log.exp()
    ours_sm = fst.softmax(x, dim)
    ours_log = fst.log_softmax(x, dim)
    assert ours_sm.dtype == ours_log.dtype == torch.float32
    assert ours_sm.shape == ours_log.shape == x.shape
    err = (ours_sm.double() - ref_sm).abs()
    tiny = ref_sm < 1e-30  # subnormal-range results may be flushed (as in tests/conftest.py)
    assert (err[tiny] <= 1e-37).all()
    assert (err[~tiny] <= 2 * _ulp32(ref_sm[~tiny])).all(), f"softmax: max {(err / _ulp32(ref_sm))[~tiny].max():.2f} ulp"
    row_max = x.double().abs().amax(dim, keepdim=True) if x.dim() else x.double().abs()
    err = (ours_log.double() - ref_log).abs()
    tol = 2 * _ulp32(ref_log) + 2.0**-50 * (row_max + 1)
    assert (err <= tol).all(), f"log_softmax: max {(err / _ulp32(ref_log)).max():.2f} ulp"


@pytest.mark.parametrize("shape,dim", SHAPES_DIMS + [((0, 4), 1), ((4, 0), 1)])
def test_float64_matches_torch(shape, dim, gen):
    x = randn(*shape, gen=gen, scale=5.0)
    torch.testing.assert_close(fst.softmax(x, dim), F.softmax(x, dim), rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(fst.log_softmax(x, dim), F.log_softmax(x, dim), rtol=1e-12, atol=1e-14)


def test_non_contiguous_and_special_values(gen):
    x = randn(40, 30, gen=gen).t()  # Fortran-ordered view
    assert not x.is_contiguous()
    torch.testing.assert_close(fst.softmax(x, 1), F.softmax(x, 1), rtol=1e-12, atol=0)
    y = randn(10, 40, gen=gen)[:, ::3]
    torch.testing.assert_close(fst.log_softmax(y, -1), F.log_softmax(y, -1), rtol=1e-12, atol=1e-14)
    z = torch.tensor([[1000.0, 0.0, -1000.0], [-torch.inf, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(fst.softmax(z, 1), F.softmax(z, 1), rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(fst.log_softmax(z, 1), F.log_softmax(z, 1), rtol=1e-12, atol=1e-14)


def test_dtype_argument(gen):
    x = randn(6, 9, dtype=torch.float32, gen=gen)
    for fn, ref in ((fst.softmax, F.softmax), (fst.log_softmax, F.log_softmax)):
        out = fn(x, 1, dtype=torch.float64)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, ref(x, 1, dtype=torch.float64), rtol=1e-12, atol=1e-14)
        ints = torch.arange(12).reshape(3, 4)
        torch.testing.assert_close(fn(ints, 1, dtype=torch.float64), ref(ints, 1, dtype=torch.float64), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, gen):
    x = randn(8, 100, dtype=dtype, gen=gen, scale=3.0, requires_grad=True)
    for fn, ref in ((fst.softmax, F.softmax), (fst.log_softmax, F.log_softmax)):
        y = fn(x, 1)
        assert y.dtype == dtype
        exact = ref(x.detach().double(), 1)
        torch.testing.assert_close(y.double(), exact, rtol=torch.finfo(dtype).eps, atol=1e-6)
        g = randn(8, 100, dtype=dtype, gen=gen)
        (gx,) = torch.autograd.grad(y, x, g)
        xd = x.detach().double().requires_grad_()
        (gref,) = torch.autograd.grad(ref(xd, 1), xd, g.double())
        assert gx.dtype == dtype
        torch.testing.assert_close(gx.double(), gref, rtol=0.05, atol=0.02 * gref.abs().max().item())


# ---------------------------------------------------------------------------------------
# Zero-copy


def _addr(a):
    return a.__array_interface__["data"][0]


def test_zero_copy_softmax_forward_and_backward(monkeypatch, gen):
    seen = {}

    def spy(name):
        real = getattr(fs._api, name)

        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            seen[name] = ([_addr(a) for a in args if isinstance(a, np.ndarray)], _addr(out))
            return out

        monkeypatch.setattr(fs._api, name, wrapped)

    for name in ("softmax", "softmax_backward", "log_softmax", "log_softmax_backward"):
        spy(name)
    for dtype in (torch.float32, torch.float64):
        for fn, bwd in ((fst.softmax, "softmax_backward"), (fst.log_softmax, "log_softmax_backward")):
            x = randn(16, 33, dtype=dtype, gen=gen, requires_grad=True)
            y = fn(x, 1)
            ins, out = seen[fn.__name__]
            assert ins == [x.data_ptr()], "input was copied"
            assert out == y.data_ptr(), "output was copied"
            g = randn(16, 33, dtype=dtype, gen=gen)
            (gx,) = torch.autograd.grad(y, x, g)
            ins, out = seen[bwd]
            assert ins == [g.data_ptr(), y.data_ptr()]
            assert out == gx.data_ptr()


def test_zero_copy_cross_entropy(monkeypatch, gen):
    seen = {}
    real = fs._api.cross_entropy

    def wrapped(logits, target, *args, **kwargs):
        res = real(logits, target, *args, **kwargs)
        loss = res[0] if isinstance(res, tuple) else res
        seen["in"] = (_addr(logits), _addr(target))
        seen["loss"] = _addr(np.asarray(loss)) if np.ndim(loss) else None
        seen["grad"] = _addr(res[1]) if isinstance(res, tuple) else None
        return res

    monkeypatch.setattr(fs._api, "cross_entropy", wrapped)
    x = randn(12, 10, dtype=torch.float32, gen=gen, requires_grad=True)
    t = torch.randint(0, 10, (12,), generator=gen)
    loss = fst.cross_entropy(x, t, reduction="none")
    assert seen["in"] == (x.data_ptr(), t.data_ptr())
    assert seen["loss"] == loss.data_ptr()
    # loss.backward(): the gradient the kernel wrote in the forward pass becomes x.grad as is.
    fst.cross_entropy(x, t).backward()
    assert seen["in"] == (x.data_ptr(), t.data_ptr())
    assert x.grad.data_ptr() == seen["grad"]


def test_zero_copy_cross_entropy_over_a_middle_class_dim(monkeypatch, gen):
    # (N, C, d...) logits reach the package as they are, the classes along axis 1 (no copy
    # with them moved last), and the loss per sample comes back in its (N, d...) shape.
    seen = {}
    real = fs._api.cross_entropy

    def wrapped(logits, target, *args, **kwargs):
        seen["in"] = (_addr(logits), _addr(target), logits.shape, kwargs.get("axis"))
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(fs._api, "cross_entropy", wrapped)
    x = randn(4, 7, 3, 5, dtype=torch.float32, gen=gen, requires_grad=True)
    t = torch.randint(0, 7, (4, 3, 5), generator=gen)
    loss = fst.cross_entropy(x, t, reduction="none")
    assert seen["in"] == (x.data_ptr(), t.data_ptr(), (4, 7, 3, 5), 1)
    assert loss.shape == (4, 3, 5)
    # Against torch (float32: 1e-5 relative, 1e-7 absolute), loss and gradient through a
    # weighted sum of the per-sample losses.
    ref = F.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)
    w = torch.rand(loss.shape, generator=gen)
    (g,) = torch.autograd.grad((loss * w).sum(), x)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    torch.testing.assert_close(g, gr, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Errors


def test_errors_name_the_argument():
    ints = torch.arange(6).reshape(2, 3)
    cplx = torch.randn(2, 3, dtype=torch.complex64)
    for fn in (fst.softmax, fst.log_softmax):
        with pytest.raises(TypeError, match="input.*int64"):
            fn(ints, 1)
        with pytest.raises(TypeError, match="input.*complex"):
            fn(cplx, 1)
        with pytest.raises(TypeError, match="input must be a torch.Tensor"):
            fn(np.zeros(3), 0)
        with pytest.raises(TypeError, match="dtype"):
            fn(torch.zeros(3), 0, dtype=torch.int32)
        with pytest.raises(IndexError, match="Dimension out of range"):
            fn(torch.zeros(2, 3), 2)
        with pytest.raises(TypeError, match="dim must be an integer"):
            fn(torch.zeros(2, 3), None)
    x = torch.randn(3, 4)
    t = torch.tensor([0, 1, 2])
    with pytest.raises(TypeError, match="input.*int64"):
        fst.cross_entropy(ints, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="input.*complex"):
        fst.cross_entropy(cplx, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="target"):
        fst.cross_entropy(x, torch.tensor([True, False, True]))
    with pytest.raises(TypeError, match="target"):
        fst.cross_entropy(x, torch.zeros(3, 4, dtype=torch.complex64))
    with pytest.raises(TypeError, match="weight"):
        fst.cross_entropy(x, t, weight=torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="weight must have shape"):
        fst.cross_entropy(x, t, weight=torch.ones(3))
    with pytest.raises(ValueError, match="class targets must have shape"):
        fst.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="probability targets must have shape"):
        fst.cross_entropy(x, torch.rand(3, 5))
    with pytest.raises(ValueError, match="reduction"):
        fst.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        fst.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(TypeError, match="label_smoothing"):
        fst.cross_entropy(x, t, label_smoothing="0.1")
    with pytest.raises(TypeError, match="ignore_index"):
        fst.cross_entropy(x, t, ignore_index=1.0)
    with pytest.raises(ValueError, match="target values must be in"):
        fst.cross_entropy(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="at least one dimension"):
        fst.cross_entropy(torch.tensor(1.0), torch.tensor(0))


def test_other_devices_rejected_meta_traced():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # a CUDA tensor without CUDA: only its metadata exists
        xc = torch.empty(2, 3, device="cuda")
        tc = torch.zeros(2, dtype=torch.int64, device="cuda")
        for fn in (fst.softmax, fst.log_softmax):
            with pytest.raises(ValueError, match="input is on device 'cuda.*CPU only"):
                fn(xc, 1)
        with pytest.raises(ValueError, match="input is on device 'cuda"):
            fst.cross_entropy(xc, tc)
    xm = torch.empty(2, 3, device="meta")
    assert fst.softmax(xm, 1).device.type == "meta"
    assert fst.log_softmax(xm, 0).shape == (2, 3)
    loss = fst.cross_entropy(xm, torch.zeros(2, dtype=torch.int64, device="meta"), reduction="none")
    assert loss.device.type == "meta" and loss.shape == (2,)


def test_cross_entropy_refuses_unsupported_derivatives(gen):
    x = randn(4, 5, gen=gen, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    (g,) = torch.autograd.grad(fst.cross_entropy(x, t), x)  # first order is fine
    loss = fst.cross_entropy(x, t)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(NotImplementedError, match="probability targets"):
        fst.cross_entropy(x, torch.rand(4, 5, dtype=torch.float64, requires_grad=True))
    with pytest.raises(NotImplementedError, match="weight"):
        fst.cross_entropy(x, t, weight=torch.ones(5, dtype=torch.float64, requires_grad=True))
    with torch.no_grad():  # no gradient needed: the forward pass skips computing it
        torch.testing.assert_close(fst.cross_entropy(x, t), F.cross_entropy(x, t), rtol=1e-12, atol=0)


def test_cross_entropy_backward_paths(gen):
    """The saved gradient is handed out as is for loss.backward(); other uses stay correct."""
    x0 = randn(6, 5, gen=gen)
    t = torch.tensor([0, 1, 2, 3, 4, 0])

    def both(body):
        res = []
        for fn in (fst.cross_entropy, F.cross_entropy):
            x = x0.clone().requires_grad_()
            body(fn, x)
            res.append(x.grad)
        torch.testing.assert_close(res[0], res[1], rtol=1e-12, atol=1e-15)

    def retain_twice(fn, x):
        loss = fn(x, t)
        loss.backward(retain_graph=True)
        loss.backward()

    def accumulate(fn, x):
        for _ in range(3):
            fn(x, t).backward()

    def scaled(fn, x):
        (fn(x, t) * 2.5).backward()

    def shared_logits(fn, x):
        h = x * 1.0  # non-leaf logits also used elsewhere
        (fn(h, t) + fn(h, t, reduction="sum") + h.square().sum()).backward()

    def grad_of_other_output(fn, x):
        loss = fn(x, t, label_smoothing=0.1)
        (g,) = torch.autograd.grad(loss, x, retain_graph=True)
        x.grad = g.clone()
        loss.backward()

    for body in (retain_twice, accumulate, scaled, shared_logits, grad_of_other_output):
        both(body)


# ---------------------------------------------------------------------------------------
# cross_entropy values and gradients against torch, float64


def _ce_case(layout, kind, weighted, ignore, gen, dtype=torch.float64):
    C = 6
    shape = {"NC": (9, C), "NCdd": (3, C, 4, 2), "C": (C,)}[layout]
    x = randn(*shape, gen=gen, scale=2.0, dtype=dtype, requires_grad=True)
    sample_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if kind == "probabilities":
        raw = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.05
        target = (raw / raw.sum(1 if len(shape) > 1 else 0, keepdim=True)).to(dtype)
    else:
        target = torch.randint(0, C, sample_shape, generator=gen)
        if ignore is not None and layout != "C":  # one target only: ignoring it gives NaN (tested apart)
            flat = target.reshape(-1)
            flat[:: max(1, flat.numel() // 3)] = ignore
    weight = (torch.rand(C, generator=gen, dtype=torch.float64) * 1.5 + 0.5).to(dtype) if weighted else None
    return x, target, weight


def _ce_kwargs(weight, reduction, smoothing, ignore):
    """The keyword arguments of a cross_entropy case (ignore_index only when given)."""
    kw = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
    if ignore is not None:
        kw["ignore_index"] = ignore
    return kw


@pytest.mark.parametrize("layout", ["NC", "NCdd", "C"])
@pytest.mark.parametrize("kind,ignore", [("class", None), ("class", -100), ("class", 2), ("probabilities", None)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(layout, kind, ignore, weighted, smoothing, reduction, gen):
    x, target, weight = _ce_case(layout, kind, weighted, ignore, gen)
    kw = _ce_kwargs(weight, reduction, smoothing, ignore)
    ours = fst.cross_entropy(x, target, **kw)
    ref = F.cross_entropy(x, target, **kw)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=0)
    up = randn(*ref.shape, gen=gen)  # a per-sample upstream gradient for "none"
    (g_ours,) = torch.autograd.grad(ours, x, up)
    (g_ref,) = torch.autograd.grad(ref, x, up)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-10 * g_ref.abs().max().item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_float32(reduction, gen):
    x = randn(64, 1000, dtype=torch.float32, gen=gen, scale=3.0, requires_grad=True)
    t = torch.randint(0, 1000, (64,), generator=gen)
    xd = x.detach().double().requires_grad_()
    ours, ref = fst.cross_entropy(x, t, reduction=reduction), F.cross_entropy(xd, t, reduction=reduction)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=0)
    up = torch.ones_like(ref)
    (g,) = torch.autograd.grad(ours, x, up.float())
    (gr,) = torch.autograd.grad(ref, xd, up)
    torch.testing.assert_close(g.double(), gr, rtol=1e-5, atol=1e-7 * gr.abs().max().item())


def test_cross_entropy_edge_cases(gen):
    x1 = randn(5, gen=gen, requires_grad=True)  # unbatched, its only target ignored
    for reduction in ("mean", "sum", "none"):
        ours = fst.cross_entropy(x1, torch.tensor(-100), reduction=reduction)
        torch.testing.assert_close(ours, F.cross_entropy(x1, torch.tensor(-100), reduction=reduction), equal_nan=True)
    x = randn(4, 5, gen=gen, requires_grad=True)
    everything_ignored = torch.full((4,), -100)
    for reduction in ("mean", "sum", "none"):
        ours = fst.cross_entropy(x, everything_ignored, reduction=reduction)
        ref = F.cross_entropy(x, everything_ignored, reduction=reduction)
        torch.testing.assert_close(ours, ref, equal_nan=True)
        (g,) = torch.autograd.grad(ours.sum(), x)
        (gr,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(g, gr, equal_nan=True)
    empty = randn(0, 5, gen=gen, requires_grad=True)
    t0 = torch.zeros(0, dtype=torch.int64)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            fst.cross_entropy(empty, t0, reduction=reduction), F.cross_entropy(empty, t0, reduction=reduction), equal_nan=True
        )
    t32 = torch.tensor([0, 1, 2, 3], dtype=torch.int32)  # any integer dtype holds classes
    torch.testing.assert_close(fst.cross_entropy(x, t32), F.cross_entropy(x, t32.long()), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["class", "probabilities"])
def test_cross_entropy_half_precision(dtype, kind, gen):
    x = randn(6, 9, dtype=dtype, gen=gen, scale=2.0, requires_grad=True)
    if kind == "class":
        target = torch.randint(0, 9, (6,), generator=gen)
    else:
        target = F.softmax(randn(6, 9, gen=gen), 1).to(dtype)
    w = (torch.rand(9, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    eps = torch.finfo(dtype).eps
    for reduction in ("mean", "none"):
        kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
        loss = fst.cross_entropy(x, target, **kw)
        assert loss.dtype == dtype
        xd = x.detach().double().requires_grad_()
        td = target if kind == "class" else target.double()
        ref = F.cross_entropy(xd, td, **dict(kw, weight=w.double()))
        torch.testing.assert_close(loss.double(), ref, rtol=2 * eps, atol=0)
        up = torch.ones_like(ref)
        (g,) = torch.autograd.grad(loss, x, up.to(dtype))
        (gr,) = torch.autograd.grad(ref, xd, up)
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), gr, rtol=2 * eps, atol=eps * gr.abs().max().item())


# ---------------------------------------------------------------------------------------
# gradcheck (float64)


@pytest.mark.parametrize("shape,dim", [((3, 7), 1), ((3, 7), 0), ((2, 3, 4), 1), ((5,), 0), ((), 0)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_gradcheck_and_gradgradcheck(name, shape, dim, gen):
    fn = getattr(fst, name)
    x = randn(*shape, gen=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fn(x, dim), (x,))
    assert torch.autograd.gradgradcheck(lambda x: fn(x, dim), (x,))


@pytest.mark.parametrize("layout", ["NC", "NCdd", "C"])
@pytest.mark.parametrize(
    "kind,ignore,weighted,smoothing",
    [("class", None, False, 0.0), ("class", -100, True, 0.1), ("class", 1, True, 0.0), ("probabilities", None, True, 0.2)],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_cross_entropy(layout, kind, ignore, weighted, smoothing, reduction, gen):
    x, target, weight = _ce_case(layout, kind, weighted, ignore, gen)
    kw = _ce_kwargs(weight, reduction, smoothing, ignore)
    assert torch.autograd.gradcheck(lambda x: fst.cross_entropy(x, target, **kw), (x,))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "cross_entropy"])
def test_opcheck(name, gen):
    """torch.library.opcheck: schema, fake tensor, autograd registration, AOT dispatch."""
    op = getattr(torch.ops.fastsoftmax, name).default
    x = randn(4, 7, gen=gen, requires_grad=True)
    if name in ("softmax", "log_softmax"):
        argsets = [(x, 1), (x, 0)]
    elif name.endswith("backward"):
        y = (F.softmax if name == "softmax_backward" else F.log_softmax)(randn(4, 7, gen=gen), 1)
        argsets = [(randn(4, 7, gen=gen, requires_grad=True), y.requires_grad_(), 1)]
    else:
        t = torch.tensor([0, 3, -100, 6])
        w = torch.rand(7, generator=gen, dtype=torch.float64)
        t3 = torch.tensor([0, 3, 5, 6])
        p = F.softmax(randn(4, 7, gen=gen), 1)
        argsets = [
            (x, t, None, -100, "mean", 0.0, True),
            (x, t, w, -100, "none", 0.1, True),
            (x.detach(), t3, w, 3, "sum", 0.0, False),  # no gradient wanted
            (x, p, w, -100, "mean", 0.2, True),
        ]
        # (N, C, d...) with the classes along dim 1, and one large enough for the kernels to
        # read the classes in place.
        x4 = randn(3, 7, 4, 2, gen=gen, requires_grad=True)
        t4 = torch.randint(0, 7, (3, 4, 2), generator=gen)
        p4 = F.softmax(randn(3, 7, 4, 2, gen=gen), 1)
        x3 = randn(2, 600, 300, gen=gen, dtype=torch.float32, requires_grad=True)
        t3b = torch.randint(0, 600, (2, 300), generator=gen)
        argsets += [
            (x4, t4, w, -100, "none", 0.0, True),
            (x4, p4, None, -100, "sum", 0.1, True),
            (x3, t3b, None, -100, "mean", 0.0, True),
        ]
    for args in argsets:
        torch.library.opcheck(op, args)


# ---------------------------------------------------------------------------------------
# torch.compile


def _compiled_matches_eager(fn, args, backend, dynamic=None):
    torch._dynamo.reset()
    cfn = torch.compile(fn, backend=backend, fullgraph=True, dynamic=dynamic)
    outs = []
    for f in (cfn, fn):
        xs = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
        out = f(*xs)
        grads = torch.autograd.grad(out, [a for a in xs if a.requires_grad])
        outs.append((out, grads))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-14)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _loss_fns():
    w = torch.rand(10, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    return {
        "softmax": lambda x, t: (fst.softmax(x, 1) * torch.arange(10.0, dtype=x.dtype)).sum(),
        "log_softmax": lambda x, t: fst.log_softmax(x, -1).sin().sum(),
        "cross_entropy": lambda x, t: fst.cross_entropy(x, t, weight=w, label_smoothing=0.1),
        "cross_entropy_none": lambda x, t: (fst.cross_entropy(x, t, reduction="none") * torch.arange(8.0, dtype=x.dtype)).sum(),
        "all_three": lambda x, t: fst.cross_entropy(fst.log_softmax(x, 1) * 2, t) + fst.softmax(x, 0).square().sum(),
    }


@pytest.mark.parametrize("name", list(_loss_fns()))
def test_compile_aot_eager_fullgraph(name, gen):
    fn = _loss_fns()[name]
    x = randn(8, 10, gen=gen, requires_grad=True)
    t = torch.randint(0, 10, (8,), generator=gen)
    _compiled_matches_eager(fn, (x, t), "aot_eager")


def test_compile_dynamic_shapes(gen):
    fn = _loss_fns()["all_three"]
    torch._dynamo.reset()
    cfn = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (5, 9, 13):
        x = randn(n, 10, gen=gen, requires_grad=True)
        t = torch.randint(0, 10, (n,), generator=gen)
        torch.testing.assert_close(cfn(x, t), fn(x, t), rtol=1e-12, atol=1e-14)
        with torch.no_grad():  # inference: the fused pass skips the gradient
            torch.testing.assert_close(cfn(x, t), fn(x, t), rtol=1e-12, atol=1e-14)


def test_compile_graph_holds_the_custom_ops(gen):
    """A recording dynamo backend sees one graph containing torch.ops.fastsoftmax.*."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    fn = _loss_fns()["all_three"]
    cfn = torch.compile(fn, backend=record, fullgraph=True)
    x = randn(8, 10, gen=gen, requires_grad=True)
    t = torch.randint(0, 10, (8,), generator=gen)
    cfn(x, t).backward()
    assert len(graphs) == 1
    targets = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    for op in ("fastsoftmax.softmax.default", "fastsoftmax.log_softmax.default", "fastsoftmax.cross_entropy.default"):
        assert op in targets, targets


@pytest.mark.skipif(os.environ.get("FASTSOFTMAX_TEST_INDUCTOR") != "1", reason="set FASTSOFTMAX_TEST_INDUCTOR=1 (slow)")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from inductor's own imports
def test_compile_inductor(gen):
    x = randn(8, 10, gen=gen, requires_grad=True)
    t = torch.randint(0, 10, (8,), generator=gen)
    _compiled_matches_eager(_loss_fns()["all_three"], (x, t), "inductor")


# ---------------------------------------------------------------------------------------
# Training a small classifier


def _train(loss_fn, steps=300):
    g = torch.Generator().manual_seed(1234)
    n, d, h, c = 256, 20, 32, 5
    centers = torch.randn(c, d, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,), generator=g)
    X = centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, c)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = F.cross_entropy(model(X), y).item()
    return final, losses


def test_mlp_training_matches_torch():
    ours, ours_curve = _train(fst.cross_entropy)
    ref, ref_curve = _train(F.cross_entropy)
    assert ref < 0.5 * ref_curve[0], "the reference model did not learn"
    assert abs(ours - ref) <= 1e-4, (ours, ref)
    np.testing.assert_allclose(ours_curve, ref_curve, rtol=1e-6, atol=1e-8)
