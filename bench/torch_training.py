"""Training-step comparison: cross-entropy loss forward + backward on a large logits tensor.

fastsoftmax.torch.cross_entropy against torch.nn.functional.cross_entropy, on the same
float32 logits (rows x classes) with random integer targets, one thread each
(``torch.set_num_threads(1)`` and ``fastsoftmax.set_num_threads(1)``). One sample is
``loss = f(logits, target); loss.backward()`` on a leaf tensor whose ``.grad`` was cleared, so
it includes allocating the gradient, as in training. The two are timed in interleaved
rounds (alternating which goes first), and the report gives the median of each, the spread
(inter-quartile range as a share of the median, and min..max), ns per logit element, and the
ratio. The forward and backward halves are also reported separately. Finally the two losses
and gradients are compared (max abs difference).

Usage::

    python bench/torch_training.py                 # (8192, 32000), 7 rounds
    python bench/torch_training.py --rows 1024 --classes 32000 --rounds 11
    python bench/torch_training.py --grad-scale 1024   # backward of loss * 1024

Each step allocates fresh gradient buffers (1 GiB each at the default size) in both
implementations, so on machines where first-touch page faults are expensive (VMs) part of
what is measured is the kernel zeroing pages; the "sys" CPU time of the run shows how much.
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def quartiles(xs):
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=32000)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per implementation")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--grad-scale",
        type=float,
        default=None,
        help="backpropagate loss * SCALE (as a gradient scaler would) instead of loss: the backward "
        "pass then scales the saved gradient instead of handing it out as is",
    )
    args = ap.parse_args()

    import numpy as np
    import torch

    import fastsoftmax as fs
    import fastsoftmax.torch as fst

    torch.set_num_threads(1)
    fs.set_num_threads(1)
    F = torch.nn.functional

    print(f"machine:     {cpu_model()} ({os.cpu_count()} logical CPUs visible), {platform.system()} {platform.release()}")
    print(
        f"versions:    python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"fastsoftmax {fs.__version__} (backend {fs.backend()})"
    )
    print(f"threads:     torch {torch.get_num_threads()}, fastsoftmax {fs.get_num_threads()}")
    rows, classes = args.rows, args.classes
    n = rows * classes
    print(f"case:        logits ({rows}, {classes}) float32 = {n * 4 / 2**20:.0f} MiB, int64 targets, reduction='mean'")
    print(f"step:        loss = f(logits, target); {'loss' if args.grad_scale is None else f'(loss * {args.grad_scale:g})'}.backward()")

    g = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(rows, classes, generator=g, dtype=torch.float32) * 2.0
    target = torch.randint(0, classes, (rows,), generator=g)

    impls = {
        "fastsoftmax": fst.cross_entropy,
        "torch": F.cross_entropy,
    }

    def step(fn):
        x = logits.detach().requires_grad_()
        t0 = time.perf_counter_ns()
        loss = fn(x, target)
        t1 = time.perf_counter_ns()
        (loss if args.grad_scale is None else loss * args.grad_scale).backward()
        t2 = time.perf_counter_ns()
        return loss.detach(), x.grad, t1 - t0, t2 - t1

    # Correctness first (also the warm-up): losses and gradients of the two, and a float64
    # reference computed in chunks of rows (to keep memory modest).
    results = {name: step(fn) for name, fn in impls.items()}
    (l_ours, g_ours, _, _), (l_ref, g_ref, _, _) = results["fastsoftmax"], results["torch"]
    with torch.no_grad():
        total64 = 0.0
        d_ours = d_ref = d_mutual = gmax = 0.0
        for lo in range(0, rows, 512):
            xs = logits[lo : lo + 512].double()
            ts = target[lo : lo + 512]
            total64 += F.cross_entropy(xs, ts, reduction="sum").item()
            g64 = torch.softmax(xs, 1)
            g64[torch.arange(len(ts)), ts] -= 1.0
            g64 *= (1.0 if args.grad_scale is None else args.grad_scale) / rows
            d_ours = max(d_ours, (g_ours[lo : lo + 512].double() - g64).abs().max().item())
            d_ref = max(d_ref, (g_ref[lo : lo + 512].double() - g64).abs().max().item())
            d_mutual = max(d_mutual, (g_ours[lo : lo + 512] - g_ref[lo : lo + 512]).abs().max().item())
            gmax = max(gmax, g64.abs().max().item())
        print(f"loss:        fastsoftmax {l_ours.item():.9g}, torch {l_ref.item():.9g}, float64 {total64 / rows:.12g}")
        print(
            f"grad diff:   max |fastsoftmax - torch| = {d_mutual:.3g}; against float64: "
            f"fastsoftmax {d_ours:.3g}, torch {d_ref:.3g} (max |grad| {gmax:.3g})"
        )
    del results, g_ours, g_ref
    gc.collect()
    for _ in range(args.warmup - 1):
        for fn in impls.values():
            step(fn)

    times = {name: {"total": [], "forward": [], "backward": []} for name in impls}
    names = list(impls)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            _, _, fwd, bwd = step(impls[name])
            times[name]["forward"].append(fwd)
            times[name]["backward"].append(bwd)
            times[name]["total"].append(fwd + bwd)

    print(f"\n{args.rounds} interleaved rounds; ns per logit element (median, IQR as % of median, min..max)")
    header = f"{'':12s} {'part':9s} {'median':>8s} {'IQR':>6s} {'min..max':>15s}"
    print(header)
    print("-" * len(header))
    med = {}
    for name in names:
        for part in ("total", "forward", "backward"):
            xs = [t / n for t in times[name][part]]
            m = statistics.median(xs)
            q1, q3 = quartiles(xs)
            med[(name, part)] = m
            print(f"{name:12s} {part:9s} {m:8.3f} {100 * (q3 - q1) / m:5.1f}% {min(xs):7.3f}..{max(xs):<7.3f}")
    print()
    for part in ("total", "forward", "backward"):
        if part == "backward" and med[("fastsoftmax", part)] < 0.01 * med[("torch", part)]:
            print("ratio torch / fastsoftmax (backward): n/a (fastsoftmax's backward hands out the "
                  "gradient its forward pass wrote; nothing left to compute)")
            continue
        ratio = med[("torch", part)] / med[("fastsoftmax", part)]
        print(f"ratio torch / fastsoftmax ({part}): {ratio:.2f}x")
    tot = statistics.median(t / 1e6 for t in times["fastsoftmax"]["total"])
    tot_ref = statistics.median(t / 1e6 for t in times["torch"]["total"])
    print(f"per step: fastsoftmax {tot:.0f} ms, torch {tot_ref:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
