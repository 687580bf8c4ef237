"""fastsoftmax.cross_entropy against torch.nn.functional.cross_entropy (#3).

Values and gradients are compared with torch (autograd) on the same inputs: in float64
within 1e-10 relative, and the float32 kernels against torch's float64 result within 1e-5
relative.  Tests taking the ``backend`` fixture (tests/conftest.py) run once per entry of
``fs._api.available_backends()``.
"""

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, C, D = 7, 5, 3

# layout -> (logits shape, package axis, permutation taking the logits to torch's
# (N, C, ...) layout, or None when the logits already are in it)
LAYOUTS = {
    "NC_axis_last": ((N, C), -1, None),
    "NCd_axis_1": ((N, C, D), 1, None),
    "NdC_axis_last": ((N, D, C), -1, (0, 2, 1)),
    "CN_axis_0": ((C, N), 0, (1, 0)),
    "C_unbatched": ((C,), -1, None),
}
TARGET_KINDS = ["class", "class_ignore", "probabilities"]
REDUCTIONS = ["mean", "sum", "none"]


def _case(layout, kind, weighted, rng, dtype=np.float64, ignore_index=-100):
    """Random logits, targets and weights for a layout; the class axis is `axis`."""
    shape, axis, _ = LAYOUTS[layout]
    logits = rng.normal(0, 2, size=shape).astype(dtype)
    sample_shape = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    if kind == "probabilities":
        raw = rng.random(shape) + 0.05
        target = (raw / raw.sum(axis=axis, keepdims=True)).astype(dtype)
    else:
        target = rng.integers(0, C, size=sample_shape).astype(np.int64)
        if kind == "class_ignore":
            flat = target.reshape(-1)
            flat[rng.choice(flat.size, size=max(1, flat.size // 3), replace=False)] = ignore_index
            target = flat.reshape(sample_shape)
    weight = rng.uniform(0.5, 2.0, size=C).astype(dtype) if weighted else None
    return logits, target, weight


def _to_torch_layout(a, layout):
    perm = LAYOUTS[layout][2]
    return a if perm is None else np.transpose(a, perm)


def _from_torch_layout(a, layout):
    perm = LAYOUTS[layout][2]
    return a if perm is None else np.transpose(a, np.argsort(perm))


def torch_reference(logits, target, layout, reduction, smoothing, weight, ignore_index=-100):
    """Loss and d(loss)/d(logits) from torch in float64 (for "none": d(sum of losses))."""
    x = torch.tensor(_to_torch_layout(logits.astype(np.float64), layout), requires_grad=True)
    if target.dtype.kind == "f":
        t = torch.tensor(_to_torch_layout(target.astype(np.float64), layout))
    else:
        # Sample-shaped class targets: the permutations above only move the class axis,
        # so the remaining axes keep their order.
        t = torch.tensor(target.astype(np.int64))
    w = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    loss = F.cross_entropy(
        x, t, weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing
    )
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().numpy(), _from_torch_layout(x.grad.numpy(), layout)


def _matrix():
    for layout in LAYOUTS:
        for kind in TARGET_KINDS:
            if layout == "C_unbatched" and kind == "class_ignore":
                continue  # the single target ignored is the all-ignored case, tested below
            for reduction in REDUCTIONS:
                for smoothing in (0.0, 0.1):
                    for weighted in (False, True):
                        yield pytest.param(
                            layout, kind, reduction, smoothing, weighted,
                            id=f"{layout}-{kind}-{reduction}-ls{smoothing}-{'w' if weighted else 'now'}",
                        )


@pytest.mark.parametrize("layout, kind, reduction, smoothing, weighted", list(_matrix()))
def test_float64_loss_and_gradient_match_torch_within_1e_10(backend, layout, kind, reduction, smoothing, weighted, rng):
    # An in-range class can be the ignored one (torch allows ignore_index only with class targets).
    ignore_index = 2 if layout == "NCd_axis_1" and kind != "probabilities" else -100
    logits, target, weight = _case(layout, kind, weighted, rng, ignore_index=ignore_index)
    axis = LAYOUTS[layout][1]
    loss, grad = fs.cross_entropy(
        logits, target, axis=axis, reduction=reduction, ignore_index=ignore_index,
        label_smoothing=smoothing, weight=weight, return_grad=True,
    )
    ref_loss, ref_grad = torch_reference(logits, target, layout, reduction, smoothing, weight, ignore_index)
    assert np.asarray(loss).dtype == np.float64
    assert np.shape(loss) == ref_loss.shape
    assert grad.shape == logits.shape and grad.dtype == np.float64
    # Tolerance: 1e-10 relative (elementwise); ignored samples' losses and gradients are exactly 0.
    npt.assert_allclose(loss, ref_loss, rtol=1e-10, atol=0)
    npt.assert_allclose(grad, ref_grad, rtol=1e-10, atol=0)
    # Without return_grad the same loss comes back alone: exact.
    loss_only = fs.cross_entropy(
        logits, target, axis=axis, reduction=reduction, ignore_index=ignore_index,
        label_smoothing=smoothing, weight=weight,
    )
    npt.assert_array_equal(loss_only, loss)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float32_loss_and_gradient_match_torch_float64_within_1e_5(backend, layout, kind, reduction, rng):
    if layout == "C_unbatched" and kind == "class_ignore":
        kind = "class"
    logits, target, weight = _case(layout, kind, True, rng, dtype=np.float32)
    axis = LAYOUTS[layout][1]
    loss, grad = fs.cross_entropy(
        logits, target, axis=axis, reduction=reduction, label_smoothing=0.1, weight=weight, return_grad=True
    )
    assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.float32
    # Reference: torch in float64 on the same (float32) inputs.
    ref_loss, ref_grad = torch_reference(logits, target, layout, reduction, 0.1, weight)
    # Tolerance: 1e-5 relative, plus 1e-6 x the largest gradient entry for entries that
    # nearly cancel (w_t (p - 1) + smoothing terms).
    npt.assert_allclose(loss, ref_loss, rtol=1e-5, atol=0)
    npt.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6 * np.abs(ref_grad).max())


@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_mean_divides_by_summed_weights_of_non_ignored_targets(backend, weighted):
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [2.0, -1.0, 0.0], [0.3, 0.1, 0.2]])
    target = np.array([1, 2, -100, 0])
    weight = np.array([0.5, 2.0, 4.0]) if weighted else None
    w = np.ones(3) if weight is None else weight
    # Independent reference in longdouble: -sum_i w[t_i] log p_i[t_i] / sum_i w[t_i].
    z = logits.astype(np.longdouble)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    keep = target != -100
    idx = np.nonzero(keep)[0]
    num = -(w[target[idx]] * logp[idx, target[idx]]).sum()
    den = w[target[idx]].sum()
    # Tolerance: 1e-14 relative (three rows, longdouble reference).
    npt.assert_allclose(fs.cross_entropy(logits, target, weight=weight), float(num / den), rtol=1e-14)
    npt.assert_allclose(fs.cross_entropy(logits, target, weight=weight, reduction="sum"), float(num), rtol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_mean_over_all_ignored_targets_is_nan_like_torch(backend, weighted, rng):
    logits = rng.normal(size=(4, C))
    target = np.full(4, -100)
    weight = rng.uniform(0.5, 2, size=C) if weighted else None
    loss = fs.cross_entropy(logits, target, weight=weight)
    ref_loss, _ = torch_reference(logits, target, "NC_axis_last", "mean", 0.0, weight)
    # Exact: 0 / 0 -> NaN, as torch gives.
    assert np.isnan(ref_loss) and np.isnan(loss)
    # "sum" and "none" are exactly 0 with a zero gradient.
    total, grad = fs.cross_entropy(logits, target, weight=weight, reduction="sum", return_grad=True)
    assert total == 0.0
    npt.assert_array_equal(grad, 0.0)
    npt.assert_array_equal(fs.cross_entropy(logits, target, weight=weight, reduction="none"), np.zeros(4))
    # The unbatched single ignored target: NaN for "mean" too.
    assert np.isnan(fs.cross_entropy(logits[0], np.array(-100)))


@pytest.mark.parametrize("tdtype", [np.int8, np.uint8, np.int16, np.int32, np.uint64])
def test_any_integer_target_dtype_gives_the_torch_result(backend, tdtype, rng):
    logits, target, _ = _case("NC_axis_last", "class", False, rng)
    loss, grad = fs.cross_entropy(logits, target.astype(tdtype), return_grad=True)
    ref_loss, ref_grad = torch_reference(logits, target, "NC_axis_last", "mean", 0.0, None)
    # Tolerance: 1e-10 relative.
    npt.assert_allclose(loss, ref_loss, rtol=1e-10)
    npt.assert_allclose(grad, ref_grad, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["class", "probabilities"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weight", [None, 2.5])
def test_single_class_has_zero_loss_and_exactly_zero_gradient_like_torch(backend, dtype, kind, smoothing, weight, rng):
    # p = 1 exactly: every term of the gradient cancels, as in torch (exact 0, not a rounding
    # residual of the smoothing or weight factors).
    logits = rng.normal(0, 3, size=(21, 1)).astype(dtype)
    target = np.zeros(21, np.int64) if kind == "class" else np.ones((21, 1), dtype)
    w = None if weight is None else np.array([weight], dtype)
    for reduction in ("mean", "sum", "none"):
        loss, grad = fs.cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing, weight=w,
                                      return_grad=True)
        npt.assert_array_equal(loss, 0.0)  # exact
        npt.assert_array_equal(grad, 0.0)  # exact


def test_one_hot_probability_rows_sum_their_gradient_to_zero(backend, rng):
    # Rows whose other entries underflow (p one-hot to the last bit): the gradient at the
    # maximum is the sum of the others' terms, so each row sums to 0 within the rounding of
    # that sum in float64 (the terms are float32); torch float64 gives the same values.
    logits = rng.normal(0, 1, size=(16, 6)).astype(np.float32)
    logits[np.arange(16), rng.integers(0, 6, 16)] = 200.0
    target = rng.random((16, 6)).astype(np.float32)
    target /= target.sum(axis=1, keepdims=True)
    loss, grad = fs.cross_entropy(logits, target, reduction="sum", label_smoothing=0.1, return_grad=True)
    ref_loss, ref_grad = torch_reference(logits.astype(np.float64), target.astype(np.float64), "NC_axis_last",
                                         "sum", 0.1, None)
    # Tolerance: 1e-5 relative (float32 against torch float64), atol 1e-7 for the entries
    # that cancel to near 0.
    npt.assert_allclose(loss, ref_loss, rtol=1e-5)
    npt.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
    # Each row's gradient sums to 0 within 4 ULP of its largest entry (float32).
    assert np.all(np.abs(grad.astype(np.float64).sum(axis=1)) <= 4 * np.spacing(np.abs(grad).max(axis=1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [300, 8200, 20000])
@pytest.mark.parametrize("kind", ["class", "probabilities"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_long_rows_loss_and_gradient_match_torch_and_the_loss_alone(backend, dtype, classes, kind, smoothing, rng):
    # Rows of more than 1 KB take their gradient from the exponentials the loss's pass kept
    # (one block, and several: 8192 float32 entries a block, 4096 float64), but peaked rows,
    # rows with a block of -inf only and rows whose gradient factor exceeds 1 (weights above 1
    # with reduction="sum"), which take them again; ignored rows, every weight and smoothing.
    logits = rng.normal(0, 3, size=(6, classes)).astype(dtype)
    logits[1, 7] = 80.0  # peaked: p near 1
    if kind == "class" and smoothing == 0.0:
        logits[2, : min(classes - 1, 8192)] = -np.inf
    if kind == "class":
        target = rng.integers(0, classes, 6)
        target[1], target[2], target[4] = 7, classes - 1, -100
    else:
        target = rng.random((6, classes)).astype(dtype)
        target /= target.sum(axis=1, keepdims=True)
    weight = rng.uniform(0.5, 2.0, classes).astype(dtype)
    for reduction in ("mean", "sum", "none"):
        loss, grad = fs.cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing, weight=weight,
                                      return_grad=True)
        alone = fs.cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing, weight=weight)
        npt.assert_array_equal(alone, loss)  # exact: the same losses without the gradient
        two = fs.cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing, weight=weight,
                               return_grad=True, threads=2)
        npt.assert_array_equal(two[1], grad)  # exact on two threads
        ref_loss, ref_grad = torch_reference(logits, target, "NC_axis_last", reduction, smoothing, weight)
        # Tolerance: float64 1e-10 relative; float32 against torch float64 1e-5 relative, plus
        # 1e-6 x the largest gradient entry for entries that nearly cancel (as above); the
        # peaked row's loss, about 1e-31, within 1e-20 of torch's 0 (x - logsumexp(x) cancels
        # there; ours is log1p(S - 1)).
        rtol = 1e-10 if dtype == np.float64 else 1e-5
        npt.assert_allclose(loss, ref_loss, rtol=rtol, atol=1e-20)
        npt.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol / 10 * np.abs(ref_grad).max())


def test_long_rows_tiny_gradient_entries_keep_their_digits(backend):
    # Gradient entries near the smallest normal number, in a block whose own maximum is far
    # below the row's (its factor e^(m_b - m) alone would be subnormal) and next to the
    # maximum: each within 2 ULP of the float64 softmax, none flushed while it is normal.
    classes = 16384
    x = np.full((1, classes), -300.0, np.float32)
    x[0, :8192] = np.float32(np.log(12971 / 8192))
    x[0, 9000:9200] = np.linspace(-77.85, -77.65, 200, dtype=np.float32)
    x[0, 100:300] = np.linspace(-70.0, -60.0, 200, dtype=np.float32)
    _, grad = fs.cross_entropy(x, np.array([0]), reduction="sum", return_grad=True)
    z = x[0].astype(np.longdouble)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    for sl in (slice(9000, 9200), slice(100, 300)):
        want = p[sl].astype(np.float32)
        assert (want >= np.finfo(np.float32).tiny).all()
        # Tolerance: 2 ULP of the float32 result (float64 reference, rounded).
        npt.assert_array_max_ulp(grad[0, sl], want, maxulp=2)


def test_large_logits_do_not_overflow_like_torch(backend):
    logits = np.array([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 4999.0]])
    target = np.array([2, 2])
    loss, grad = fs.cross_entropy(logits, target, reduction="none", return_grad=True)
    ref_loss, ref_grad = torch_reference(logits, target, "NC_axis_last", "none", 0.0, None)
    # Tolerance: 1e-10 relative (losses are 2000 and 1 + log(1 + e^-1)).
    npt.assert_allclose(loss, ref_loss, rtol=1e-10)
    npt.assert_allclose(grad, ref_grad, rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [C, C + 7, -1, -101])
def test_target_out_of_range_raises_value_error_naming_target(bad):
    logits = np.zeros((3, C))
    target = np.array([0, bad, 1])
    with pytest.raises(ValueError, match="target"):
        fs.cross_entropy(logits, target)


@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("bad", [C, -1, -101])
def test_target_out_of_range_beside_ignored_ones_raises_value_error(backend, ignore_index, bad):
    # Ignored targets in the same array (outside the classes or a class) excuse only themselves.
    logits = np.zeros((4, C))
    with pytest.raises(ValueError, match=f"got {bad}"):
        fs.cross_entropy(logits, np.array([0, ignore_index, bad, 1]), ignore_index=ignore_index)
    loss = fs.cross_entropy(logits, np.array([0, ignore_index, 3, 1]), ignore_index=ignore_index, reduction="none")
    # Exact: uniform logits give log(C) per counted sample, 0 for the ignored one.
    npt.assert_allclose(loss, [np.log(C), 0.0, np.log(C), np.log(C)], rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "target",
    [
        np.zeros(4, np.int64),  # one sample too many
        np.zeros((3, 1), np.int64),  # an extra axis
        np.zeros((3, C + 1)),  # probabilities with the wrong number of classes
        np.zeros((3,), np.float64),  # probabilities with the class axis missing
    ],
    ids=["class_len", "class_ndim", "prob_classes", "prob_no_class_axis"],
)
def test_wrong_target_shape_raises_value_error(target):
    with pytest.raises(ValueError):
        fs.cross_entropy(np.zeros((3, C)), target)


@pytest.mark.parametrize("target", [np.array([True, False, True]), np.array([0, 1, 2], np.complex128)], ids=["bool", "complex"])
def test_bool_or_complex_target_raises_type_error(target):
    with pytest.raises(TypeError):
        fs.cross_entropy(np.zeros((3, C)), target)


@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", "batchmean"])
def test_unknown_reduction_raises_value_error(reduction):
    with pytest.raises(ValueError):
        fs.cross_entropy(np.zeros((3, C)), np.array([0, 1, 2]), reduction=reduction)


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, -1e-12, 2.0])
def test_label_smoothing_outside_0_1_raises_value_error(smoothing):
    with pytest.raises(ValueError):
        fs.cross_entropy(np.zeros((3, C)), np.array([0, 1, 2]), label_smoothing=smoothing)


@pytest.mark.parametrize("length", [C - 1, C + 1, 1])
def test_weight_of_wrong_length_raises_value_error(length):
    with pytest.raises(ValueError):
        fs.cross_entropy(np.zeros((3, C)), np.array([0, 1, 2]), weight=np.ones(length))


@pytest.mark.parametrize("kind", ["class", "probabilities"])
def test_minus_inf_logit_with_label_smoothing_gives_inf_loss_like_torch(backend, kind, request):
    # A masked-out class (logit -inf): smoothing puts mass eps/C on it, so -log p = +inf there.
    logits = np.array([[0.5, -np.inf, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
    if kind == "class":
        target = np.array([2, 0])
    else:
        target = np.array([[0.2, 0.0, 0.3, 0.5], [0.25, 0.25, 0.25, 0.25]])
    loss, grad = fs.cross_entropy(logits, target, reduction="none", label_smoothing=0.1, return_grad=True)
    ref_loss, ref_grad = torch_reference(logits, target, "NC_axis_last", "none", 0.1, None)
    assert np.isposinf(ref_loss[0])
    # Exact for the +inf; tolerance 1e-10 relative for the finite row and the gradient.
    npt.assert_allclose(loss, ref_loss, rtol=1e-10)
    npt.assert_allclose(grad, ref_grad, rtol=1e-10, atol=0)


# ---------------------------------------------------------------------------------------
# A class axis other than the last, read in place (class targets without smoothing): the
# same losses and gradients as with the class axis moved last (the row kernels), which the
# tests above hold to torch.


def _moved_call(logits, target, axis, **kw):
    res = fs.cross_entropy(np.ascontiguousarray(np.moveaxis(logits, axis, -1)), target, -1, **kw)
    if not kw.get("return_grad"):
        return res, None
    return res[0], np.moveaxis(res[1], -1, axis)


@pytest.fixture
def in_place_calls(monkeypatch):
    """Counts the calls that took the class axis in place (fastsoftmax._api._cross_entropy_along
    returning a result), so that the tests below know they exercise that path."""
    from fastsoftmax import _api

    taken = []
    along = _api._cross_entropy_along

    def counted(*args, **kwargs):
        res = along(*args, **kwargs)
        taken.append(res is not None)
        return res

    monkeypatch.setattr(_api, "_cross_entropy_along", counted)
    return taken


# Shapes of at least 2^18 entries with more than 64 classes (and for the gradient 512, or 1024
# positions): the calls taken in place (see _reads_in_place).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, axis, grad",
    [
        ((4, 100, 700), 1, False),
        ((2, 600, 220), 1, True),
        ((600, 2, 220), 0, True),
        ((2, 150, 1100), 1, True),
        ((1, 300, 1024), 1, True),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_class_axis_in_place_matches_the_moved_axis(backend, in_place_calls, dtype, shape, axis, grad, weighted, rng):
    logits = (rng.normal(0, 3, size=shape) + rng.normal(0, 20)).astype(dtype)
    classes = shape[axis]
    sample = shape[:axis] + shape[axis + 1 :]
    target = rng.integers(0, classes, size=sample)
    target.reshape(-1)[::5] = -100  # some ignored
    weight = rng.uniform(0.5, 2.0, classes).astype(dtype) if weighted else None
    eps = np.finfo(dtype).eps
    for reduction in ("none", "mean"):
        kw = dict(reduction=reduction, weight=weight, return_grad=grad, threads=1)
        got = fs.cross_entropy(logits, target, axis, **kw)
        loss, g = got if grad else (got, None)
        want_loss, want_grad = _moved_call(logits, target, axis, **kw)
        # Tolerance: losses 4 eps relative (both from the same parts: x_t - m and log S
        # rounded to the dtype); gradients 2 eps relative plus 2 eps of the largest entry
        # (the target's entry head * (p_t - 1) cancels alike in both).
        npt.assert_allclose(loss, want_loss, rtol=4 * eps, atol=0)
        if grad:
            assert g.shape == logits.shape and g.dtype == logits.dtype
            npt.assert_allclose(g, want_grad, rtol=2 * eps, atol=2 * eps * np.abs(want_grad).max())
            ignored = np.broadcast_to(np.expand_dims(target == -100, axis), g.shape)
            assert (g[ignored] == 0).all()  # exactly 0 there
            loss_only = fs.cross_entropy(logits, target, axis, reduction=reduction, weight=weight, threads=1)
            npt.assert_array_equal(loss_only, loss)  # exact: the same losses without the gradient
    if backend != "numpy":
        assert in_place_calls and all(in_place_calls)


@pytest.mark.parametrize("special", ["nan", "inf", "minus_inf_column", "negative_weight", "all_ignored"])
def test_class_axis_in_place_special_cases_match_the_moved_axis(backend, special, rng):
    logits = rng.normal(0, 2, size=(3, 600, 150)).astype(np.float32)
    target = rng.integers(0, 600, size=(3, 150))
    weight = None
    if special == "nan":
        logits[1, 4, 2] = np.nan
    elif special == "inf":
        logits[2, 3, 5] = np.inf
    elif special == "minus_inf_column":
        logits[0, :, 1] = -np.inf
    elif special == "negative_weight":
        weight = rng.uniform(-1.0, 2.0, 600).astype(np.float32)
    else:
        target[...] = -100
    for reduction in ("none", "sum"):
        with np.errstate(all="ignore"):
            loss, grad = fs.cross_entropy(logits, target, 1, reduction=reduction, weight=weight, return_grad=True)
            want_loss, want_grad = _moved_call(logits, target, 1, reduction=reduction, weight=weight, return_grad=True)
        # Tolerance: as above (4 eps, 2 eps); NaN and infinities where the row kernels have them.
        npt.assert_allclose(loss, want_loss, rtol=4e-7, atol=0, equal_nan=True)
        npt.assert_allclose(grad, want_grad, rtol=2.4e-7, atol=2.4e-7 * np.nanmax(np.abs(want_grad), initial=0),
                            equal_nan=True)


@pytest.mark.parametrize(
    "shape, axis", [((1, 300, 1024), 1), ((2, 150, 1100), 1), ((4, 100, 700), 1), ((3, 600, 150), 1), ((2000, 640), 0)]
)
def test_class_axis_bitwise_identical_on_one_and_two_threads(backend, shape, axis, rng):
    logits = rng.normal(0, 3, size=shape).astype(np.float32)
    target = rng.integers(0, shape[axis], size=shape[:axis] + shape[axis + 1 :])
    one = fs.cross_entropy(logits, target, axis, reduction="none", return_grad=True, threads=1)
    two = fs.cross_entropy(logits, target, axis, reduction="none", return_grad=True, threads=2)
    # Exact: the route (in place or moved) and the kernels' results do not depend on the threads.
    npt.assert_array_equal(one[0], two[0])
    npt.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, axis",
    [((4096, 10), -1), ((3000, 40), -1), ((512, 1000), -1), ((16, 1000, 8), 1), ((16, 600, 8), 1)],
)  # rows grouped by lanes, rows one by one, and a class axis other than the last (read in place)
@pytest.mark.parametrize("weighted", [False, True])
def test_target_gradient_keeps_its_digits_where_p_t_is_near_1(backend, dtype, shape, axis, weighted, rng):
    # The target holds the maximum by a wide margin, so that p_t - 1 is as small as 1e-17:
    # formed as p_t - 1 it would keep only p_t's rounding (0, or one unit of 1, for -1.7e-9).
    x = rng.normal(0, 3, size=shape)
    t = x.argmax(axis=axis)
    xm = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
    rows = np.arange(xm.shape[0])
    xm[rows, t.reshape(-1)] += rng.uniform(0, 40, size=xm.shape[0])
    x = np.moveaxis(xm.reshape(np.moveaxis(x, axis, -1).shape), -1, axis).astype(dtype)
    w = rng.uniform(0.5, 2, size=shape[axis]) if weighted else None
    _, g = fs.cross_entropy(x, t, axis=axis, reduction="none", weight=w, return_grad=True)
    z = np.moveaxis(x, axis, -1).reshape(-1, shape[axis]).astype(np.longdouble)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    others = np.ones(e.shape, bool)
    others[rows, t.reshape(-1)] = False
    w_t = 1 if w is None else w[t.reshape(-1)]
    ref = -w_t * (e * others).sum(axis=1) / e.sum(axis=1)  # w_t (p_t - 1), the other terms summed
    got = np.moveaxis(g, axis, -1).reshape(-1, shape[axis])[rows, t.reshape(-1)].astype(np.longdouble)
    # Tolerance: 8 ULP of the reference (the sum of the other terms is good to a few units), or
    # 1e-14 w_t absolutely (where the sums, in double, hardly tell S from e(max): rows grouped
    # by lanes); before, the error reached a unit of w_t (6e-8 w_t for float32).
    tol = 8 * np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble) + 1e-14 * w_t
    assert (np.abs(got - ref) <= tol).all()


def _confident_case(rng, dtype, shape, axis):
    """Logits whose class 0 holds the only maximum by a margin of 8 to 16 (losses of 1e-5 to
    1e-2, S - 1 that small), targets 0 except every seventh sample (another class)."""
    logits = rng.normal(0, 1, size=shape)
    lead = [slice(None)] * len(shape)
    lead[axis] = 0
    logits[tuple(lead)] += rng.uniform(8, 16, size=logits[tuple(lead)].shape)
    sample = shape[:axis] + shape[axis + 1 :]
    target = np.zeros(sample, np.int64)
    target.reshape(-1)[::7] = 3
    return logits.astype(dtype), target


def _longdouble_losses(logits, target, axis):
    """-log softmax(x)[t] in long double, with S - 1 summed over the other entries (not S - 1
    after rounding S) so that losses near 0 keep their digits."""
    z = np.moveaxis(logits.astype(np.longdouble), axis, -1)
    m = z.max(axis=-1, keepdims=True)
    at_max = z == m
    rest = np.where(at_max, 0, np.exp(z - m)).sum(axis=-1) + (at_max.sum(axis=-1) - 1)
    z_t = np.take_along_axis(z, target[..., None], -1)[..., 0]
    return (m[..., 0] - z_t) + np.log1p(rest)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((1, 100, 2700), 1), ((3, 130, 700), 1), ((200, 2, 700), 0)])
@pytest.mark.parametrize("weighted", [False, True])
def test_class_axis_in_place_losses_near_0_keep_their_digits(backend, in_place_calls, dtype, shape, axis, weighted, rng):
    logits, target = _confident_case(rng, dtype, shape, axis)
    classes = shape[axis]
    weight = rng.uniform(0.5, 2.0, classes).astype(dtype) if weighted else None
    ref = _longdouble_losses(logits, target, axis)
    if weighted:
        ref = ref * weight.astype(np.longdouble)[target]
    eps = np.finfo(dtype).eps
    for grad in (False, True):
        got = fs.cross_entropy(logits, target, axis, reduction="none", weight=weight, return_grad=grad, threads=1)
        loss = got[0] if grad else got
        # Tolerance: 1 ULP of the long double loss for float64 (the losses go down to 1e-7),
        # 2 for float32 (its exponentials' 2^-28); one more with weights (w[t] times the loss).
        maxulp = (1.0 if dtype == np.float64 else 2.0) + (1.0 if weighted else 0.0)
        sp = np.spacing(np.abs(ref).astype(dtype)).astype(np.longdouble)
        err = np.abs(loss.astype(np.longdouble) - ref) / sp
        assert err.max() <= maxulp, f"max error {float(err.max()):.2f} ULP"
        want, want_grad = _moved_call(logits, target, axis, reduction="none", weight=weight, return_grad=grad, threads=1)
        # Tolerance: 2 eps relative to the moved axis; for float64, exact below 1/64, where
        # both come from the row kernel's statistics (ties and the rest apart).
        npt.assert_allclose(loss, want, rtol=2 * eps, atol=0)
        if dtype == np.float64:
            small = want < 1 / 64
            npt.assert_array_equal(loss[small], want[small])
        if grad:
            # Tolerance: 2 eps relative plus 2 eps of the largest entry, as the test above.
            npt.assert_allclose(got[1], want_grad, rtol=2 * eps, atol=2 * eps * np.abs(want_grad).max())
    if backend != "numpy":
        assert in_place_calls and all(in_place_calls)


@pytest.mark.parametrize("dtype, value", [(np.float32, 1e10), (np.float32, 3e38), (np.float64, 1e17)])
def test_loss_of_k_equal_large_logits_is_log_k(backend, dtype, value):
    logits = np.full((3, 4), value, dtype)
    loss, grad = fs.cross_entropy(logits, np.array([0, 1, 3]), reduction="none", return_grad=True)
    # Tolerance: 1 ULP of log(4) (the logits' size must not enter: x_t - m = 0).
    npt.assert_array_max_ulp(loss, np.full(3, np.log(np.longdouble(4))).astype(dtype), maxulp=1)
    # Exact: 1/4 - [c == t].
    npt.assert_array_equal(grad, np.full((3, 4), 0.25, dtype) - np.eye(4, dtype=dtype)[[0, 1, 3]])


@pytest.mark.parametrize("bad", [2**64 - 100, 2**63 + 5, 2**63])
def test_uint64_target_beyond_int64_raises_value_error_with_the_value_as_given(backend, bad):
    logits = np.zeros((4, C), np.float32)
    with pytest.raises(ValueError, match=rf"target values .* got {bad}$"):
        fs.cross_entropy(logits, np.array([0, 1, 2, bad], np.uint64))
    # And where another target is out of range first, that one is named.
    with pytest.raises(ValueError, match=rf"got {C + 1}$"):
        fs.cross_entropy(logits, np.array([0, C + 1, 2, bad], np.uint64))
    loss = fs.cross_entropy(logits, np.array([0, 1, 2, C - 1], np.uint64), reduction="none")
    # Tolerance: 1 ULP of log(C) (uniform logits), the in-range uint64 targets read as such.
    npt.assert_array_max_ulp(loss, np.full(4, np.log(C), np.float32), maxulp=1)
