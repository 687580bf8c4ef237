"""Timing: interleaved rounds over every library of a case, and the memory floor passes."""

from __future__ import annotations

import contextlib
import gc
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

import numpy as np


@dataclass
class Stats:
    """Seconds per call over the samples (each sample averages ``calls_per_sample`` calls)."""

    median: float
    q25: float
    q75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stats":
        a = np.asarray(samples, dtype=np.float64)
        q25, median, q75 = np.percentile(a, [25, 50, 75])
        return cls(float(median), float(q25), float(q75), float(a.min()), float(a.max()), int(a.size))

    @property
    def iqr_fraction(self) -> float:
        """Inter-quartile range relative to the median."""
        return (self.q75 - self.q25) / self.median if self.median > 0 else math.nan

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


@dataclass
class TimedEntry:
    """Something timed in the rounds: a library's runner or a floor pass."""

    name: str
    call: Callable[[int], Any]
    context: Callable[[], ContextManager] = contextlib.nullcontext


@dataclass
class TimingPlan:
    max_rounds: int
    min_rounds: int
    budget_seconds: float  # per case: rounds are cut down to about this (never under min_rounds)
    min_sample_seconds: float  # calls are batched until one sample takes this long
    warmup_calls: int


@dataclass
class Measurement:
    samples: Dict[str, List[float]]  # seconds per call, one value per round
    calls_per_sample: Dict[str, int]
    rounds: int


def measure_interleaved(entries: List[TimedEntry], n_sets: int, plan: TimingPlan) -> Measurement:
    """Warm every entry up, then time them round by round.

    Round ``r`` runs every entry once, starting at entry ``r mod len(entries)``, so that drift
    in the machine's speed hits all of them alike and none always follows the same neighbour.
    Every call moves on to the next buffer set, so rotated inputs are never cache-hot.
    """
    next_set = {e.name: 0 for e in entries}

    def run(entry: TimedEntry, calls: int) -> float:
        start = next_set[entry.name]
        indices = [(start + k) % n_sets for k in range(calls)]
        next_set[entry.name] = (start + calls) % n_sets
        call = entry.call
        with entry.context():
            t0 = time.perf_counter()
            for i in indices:
                call(i)
            t1 = time.perf_counter()
        return t1 - t0

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        per_call: Dict[str, float] = {}
        for entry in entries:
            times = [run(entry, 1) for _ in range(max(1, plan.warmup_calls))]
            per_call[entry.name] = max(min(times), 1e-9)
        calls = {name: max(1, math.ceil(plan.min_sample_seconds / t)) for name, t in per_call.items()}
        round_seconds = sum(calls[name] * per_call[name] for name in calls)
        rounds = int(min(plan.max_rounds, max(plan.min_rounds, plan.budget_seconds // max(round_seconds, 1e-9))))
        samples: Dict[str, List[float]] = {e.name: [] for e in entries}
        for r in range(rounds):
            k = r % len(entries)
            for entry in entries[k:] + entries[:k]:
                n = calls[entry.name]
                samples[entry.name].append(run(entry, n) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Measurement(samples, calls, rounds)


# ---------------------------------------------------------------------------------------
# The memory floor


class FloorPasses:
    """The two memory passes a softmax cannot avoid, timed on the case's own buffers.

    * read: one read of the input. NumPy's fastest streaming reads here are
      ``np.maximum.reduce`` on the float array (vectorised, quickest while the data sits in
      cache) and ``np.bitwise_or.reduce`` on a 64-bit integer view (quickest from DRAM);
      ``np.add.reduce`` is compute-bound in cache (pairwise summation). Both are timed; the
      faster median is the read floor.
    * copy: one read and one write, ``np.copyto(out, x)`` (a plain memcpy, the cheapest
      read-and-write NumPy has).

    For a case with several threads each pass is also run split into that many contiguous
    chunks on a thread pool (NumPy releases the GIL inside these loops); the floor is the
    fastest variant, one thread or several (the pool's hand-off can cost more than it saves).
    """

    READ_METHODS = ("maximum.reduce", "bitwise_or.reduce")

    def __init__(self, xs: List[np.ndarray], outs: List[np.ndarray], threads: int) -> None:
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.flat_x = [x.reshape(-1) for x in xs]
        self.flat_out = [o.reshape(-1) for o in outs]

    @staticmethod
    def _chunks(a: np.ndarray, parts: int) -> List[np.ndarray]:
        bounds = np.linspace(0, a.size, parts + 1).astype(int)
        step = max(1, 64 // a.itemsize)  # chunk edges on 64-byte boundaries
        bounds[1:-1] = (bounds[1:-1] // step) * step
        return [a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def _variant(self, parts: int) -> List[TimedEntry]:
        x_chunks = [self._chunks(a, parts) for a in self.flat_x]
        out_chunks = [self._chunks(a, parts) for a in self.flat_out]
        int_chunks = [[_integer_view(c) for c in chunks] for chunks in x_chunks]
        pool = self.pool if parts > 1 else None

        def on_chunks(fn: Callable[..., Any], *chunk_lists: List[np.ndarray]) -> None:
            if pool is None:
                fn(*(c[0] for c in chunk_lists))
            else:
                list(pool.map(fn, *chunk_lists))

        def read_max(i: int) -> None:
            on_chunks(lambda c: np.maximum.reduce(c, axis=None), x_chunks[i])

        def read_or(i: int) -> None:
            on_chunks(lambda c: np.bitwise_or.reduce(c, axis=None), int_chunks[i])

        def copy(i: int) -> None:
            on_chunks(np.copyto, out_chunks[i], x_chunks[i])

        suffix = f" x{parts} threads" if parts > 1 else ""
        return [
            TimedEntry(f"floor:read:maximum.reduce{suffix}", read_max),
            TimedEntry(f"floor:read:bitwise_or.reduce{suffix}", read_or),
            TimedEntry(f"floor:copy:copyto{suffix}", copy),
        ]

    def entries(self) -> List[TimedEntry]:
        return self._variant(1) + (self._variant(self.threads) if self.threads > 1 else [])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _integer_view(a: np.ndarray) -> np.ndarray:
    """The same bytes as unsigned integers (64-bit when the length allows)."""
    if a.nbytes % 8 == 0 and a.ctypes.data % 8 == 0:
        return a.view(np.uint64)
    return a.view(np.uint32 if a.itemsize == 4 else np.uint64)


@dataclass
class Floor:
    read: Stats
    read_method: str
    copy: Stats
    copy_method: str

    def seconds(self, read_passes: int, copy_passes: int) -> float:
        return read_passes * self.read.median + copy_passes * self.copy.median


def floor_from(measurement: Measurement) -> Optional[Floor]:
    """The fastest read and the fastest copy among the floor entries of the rounds."""
    def fastest(prefix: str):
        stats = {name[len(prefix):]: Stats.of(samples)
                 for name, samples in measurement.samples.items() if name.startswith(prefix)}
        if not stats:
            return None, ""
        method = min(stats, key=lambda m: stats[m].median)
        return stats[method], method

    read, read_method = fastest("floor:read:")
    copy, copy_method = fastest("floor:copy:")
    if read is None or copy is None:
        return None
    return Floor(read, read_method, copy, copy_method)
