#!/usr/bin/env python
"""Benchmark fastsoftmax against its peers: ``python bench/run.py --quick``.

Every result is checked against a float64 reference before it is timed; the libraries of
a case are timed in interleaved rounds; the memory floor of each case is measured in the
same rounds on the same buffers. See bench/README.md for the method and the columns.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true",
                   help="a representative subset (fewer shapes, functions and rounds), under two minutes")
    p.add_argument("--shapes", help="comma-separated shapes, 'x' between dimensions, ':axis' to pick "
                   "an axis (default: the last), e.g. 65536x10,64x1000x49:1 "
                   "[default: the six ANCHORS.md shapes and 4x262144; --quick: five of them]")
    p.add_argument("--dtype", default="float32", help="comma-separated: float32,float64")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2")
    p.add_argument("--functions", help="comma-separated, from softmax,log_softmax,logsumexp,"
                   "softmax_backward,log_softmax_backward,cross_entropy [default: all; --quick: "
                   "all but log_softmax_backward]")
    p.add_argument("--peers", default=None, help="comma-separated, from numpy,scipy,torch,onnxruntime,jax "
                   "(missing ones are reported as skipped) [default: all]")
    p.add_argument("--isa", help="force fastsoftmax backends and compare them, e.g. avx2,avx512 "
                   "(ratios are taken against the first)")
    p.add_argument("--raw-kernel", action="store_true",
                   help="also time fastsoftmax's compiled kernels called directly (no argument checks)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write every figure and the machine here")
    p.add_argument("--plot", type=Path, metavar="PATH", help="write PNG plots here (needs matplotlib)")
    p.add_argument("--markdown", type=Path, metavar="PATH", help="write a README performance section here")
    p.add_argument("--rounds", type=int, help="most interleaved rounds per case [full 25, quick 9]")
    p.add_argument("--min-rounds", type=int, help="fewest rounds per case, whatever the budget [full 7, quick 5]")
    p.add_argument("--budget", type=float, help="seconds per case the rounds are fitted into [full 5, quick 1.5]")
    p.add_argument("--min-sample-ms", type=float, help="calls are batched until one sample lasts this long")
    p.add_argument("--hot-limit-mb", type=float, default=4.0,
                   help="inputs larger than this are rotated across buffers so they come from memory")
    p.add_argument("--rotate-mb", type=float, default=256.0,
                   help="rotated inputs get enough copies to cover this much memory (2 to 16 copies)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_threads(thread_counts: List[int]) -> int:
    """Thread settings that only work through the environment, before the imports.

    OMP/MKL/OpenBLAS get the largest count (NumPy's element-wise code never threads, so this
    only fences off BLAS); XLA gets one thread if 1 is among the counts. Returns the thread
    count jax runs with.
    """
    most = str(max(thread_counts))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, most)
    if max(thread_counts) > 1:
        # Libraries interleaved in one process each keep their own thread pool. OpenMP threads
        # spin for about 3 ms after a parallel region by default, taking the cores from the
        # next library's threads; with none at all (OMP_WAIT_POLICY=passive) every call must
        # wake them, which on a 2-core KVM guest costs more than a small call itself (our
        # softmax_backward (256, 1024) at two threads 0.42 ns/el against 0.23 at one, torch's
        # softmax (8, 100) 86 against 2.3). 10,000 spins (libgomp counts about 100,000 a ms)
        # keep a library's threads awake between the back-to-back calls of its own sample and
        # off the cores soon after. onnxruntime's pool does not spin at all: its spinning has
        # no such limit and slowed the next library's calls up to 3x (bench/README.md).
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    if 1 in thread_counts:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
        return 1
    return os.cpu_count() or 1


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        args.thread_counts = [int(t) for t in split(args.threads)]
    except ValueError:
        args.thread_counts = []
    if not args.thread_counts or min(args.thread_counts) < 1:
        sys.exit("--threads: positive integers, e.g. 1,2")
    args.jax_threads = configure_threads(args.thread_counts)
    args.command = "python bench/run.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    import harness  # imports NumPy and the peers: after configure_threads

    return harness.run(args)


if __name__ == "__main__":
    sys.exit(main())
