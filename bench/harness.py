"""The run: cases built from the options, each checked then timed, then the reports."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np

import cases as cs
import peers as pr
import report
from machine import describe, one_line
from results import ERROR, OK, SKIPPED, WRONG, CaseResult, LibraryResult, paired_ratio
from timing import FloorPasses, Stats, TimedEntry, TimingPlan, floor_from, measure_interleaved

QUICK = dict(max_rounds=9, min_rounds=5, budget=1.5, min_sample_ms=1.0, warmup=1)
FULL = dict(max_rounds=25, min_rounds=7, budget=5.0, min_sample_ms=2.0, warmup=2)


def split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def make_plan(args: argparse.Namespace) -> TimingPlan:
    mode = QUICK if args.quick else FULL
    max_rounds = args.rounds or mode["max_rounds"]
    return TimingPlan(
        max_rounds=max_rounds,
        min_rounds=min(args.min_rounds or mode["min_rounds"], max_rounds),
        budget_seconds=args.budget if args.budget is not None else mode["budget"],
        min_sample_seconds=(args.min_sample_ms if args.min_sample_ms is not None else mode["min_sample_ms"]) / 1e3,
        warmup_calls=mode["warmup"],
    )


class Benchmark:
    """The options turned into libraries and cases, and the results as they come."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = make_plan(args)
        # a library whose checked call already took the whole budget is not repeated
        self.slow_call_seconds = self.plan.budget_seconds
        self.threads: List[int] = args.thread_counts
        self.shapes = cs.parse_shapes(args.shapes or (cs.QUICK_SHAPES if args.quick else cs.DEFAULT_SHAPES))
        self.dtypes = [np.dtype(d) for d in split(args.dtype)]
        if any(d not in cs.BASE_RTOL for d in self.dtypes):
            raise ValueError("--dtype: float32 and/or float64")
        self.function_names = split(args.functions or (cs.QUICK_FUNCTIONS if args.quick else cs.DEFAULT_FUNCTIONS))
        unknown = [f for f in self.function_names if f not in cs.FUNCTIONS]
        if unknown:
            raise ValueError(f"--functions: unknown {unknown}; choose from {', '.join(cs.FUNCTIONS)}")

        isas = split(args.isa) if args.isa else [None]
        self.ours: List[pr.FastSoftmax] = [pr.FastSoftmax(isa) for isa in isas]
        if args.raw_kernel:
            self.ours.append(pr.FastSoftmax(isas[0], raw_kernel=True))
        self.base = self.ours[0]  # the ratios are taken against it
        if self.base.unavailable:
            raise ValueError(f"fastsoftmax cannot be measured: {self.base.unavailable}")
        self.peers = pr.make_peers(split(args.peers or pr.DEFAULT_PEERS), args.jax_threads)
        self.libraries: List[pr.Library] = [*self.ours, *self.peers]

        self.skipped_functions = {name: f"fastsoftmax has no {name} yet"
                                  for name in self.function_names if not hasattr(self.base.module, name)}
        self.functions = [cs.FUNCTIONS[f] for f in self.function_names if f not in self.skipped_functions]
        self.results: List[CaseResult] = []
        self.progress: report.Progress

    # -- description -----------------------------------------------------------------

    def library_info(self) -> Dict[str, Any]:
        return {
            lib.name: {
                "available": lib.unavailable is None,
                "version": lib.version,
                **({"reason": lib.unavailable} if lib.unavailable else
                   {"threads": {str(t): lib.threads_note(t) for t in self.threads}}),
            }
            for lib in self.libraries
        }

    def machine(self) -> Dict[str, Any]:
        fs = self.base.module
        fs_info = {
            "version": fs.__version__,
            "backend": self.base.backend,
            "available_backends": fs._api.available_backends(),
            "threads": self.base.threads_note(max(self.threads)) or "single-threaded",
        }
        try:
            fs_info["build"] = fs._core.build_info()
        except Exception:  # the NumPy fallback has no compiled core
            pass
        versions = {n: i["version"] for n, i in self.library_info().items() if i["available"]}
        return describe(versions, fs_info)

    def print_header(self, machine: Dict[str, Any]) -> None:
        fs = self.base.module
        print(f"machine: {one_line(machine)}")
        print(f"fastsoftmax {fs.__version__}, backend {self.base.backend}"
              + (f", comparing {', '.join(lib.name for lib in self.ours)}" if len(self.ours) > 1 else ""))
        for lib in self.peers:
            print(f"  peer {lib.name:<12} " + (f"skipped: {lib.unavailable}" if lib.unavailable else lib.version))
        for name, reason in self.skipped_functions.items():
            print(f"  {name}: skipped ({reason})")
        if max(self.threads) > 1 and not self.base._accepts_threads("softmax") and not hasattr(fs, "set_num_threads"):
            print("  note: fastsoftmax runs single-threaded (no threads= yet); peers get the thread counts")
        sys.stdout.flush()

    def settings(self) -> Dict[str, Any]:
        args, plan = self.args, self.plan
        rounds = sorted({r.rounds for r in self.results}) or [0]
        return {
            "command": args.command,
            "quick": args.quick,
            "shapes": [s.key() for s in self.shapes],
            "dtypes": [d.name for d in self.dtypes],
            "threads": self.threads,
            "functions": self.function_names,
            "skipped_functions": self.skipped_functions,
            "peers": [lib.name for lib in self.peers],
            "baseline": self.base.name,
            "timing": {
                "max_rounds": plan.max_rounds,
                "min_rounds": plan.min_rounds,
                "budget_seconds_per_case": plan.budget_seconds,
                "min_sample_seconds": plan.min_sample_seconds,
                "warmup_calls": plan.warmup_calls,
                "slow_call_seconds": self.slow_call_seconds,
                "statistic": "median over rounds of the per-call time of each sample; spread as IQR, min, max",
                "interleaving": "round r runs every library once, starting from library r mod n",
            },
            "rounds_note": f"{rounds[0]}" if len(rounds) == 1 else f"{rounds[0]}-{rounds[-1]}",
            "hot_limit_mb": args.hot_limit_mb,
            "rotate_mb": args.rotate_mb,
            "check": {
                "base_rtol": {d.name: r for d, r in cs.BASE_RTOL.items()},
                "widening": "rtol * max(1, sqrt(row_length / 65536))",
                "inexact_factor": cs.INEXACT_FACTOR,
                "rule": "within the tolerance: ok; within inexact_factor times it: timed and flagged "
                        "inexact; beyond: WRONG, not timed",
            },
            "floor": " ".join(FloorPasses.__doc__.split()),
            "seed": args.seed,
            "env": {v: os.environ.get(v, "") for v in
                    ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
                     "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")},
        }

    # -- running -----------------------------------------------------------------------

    def run_all(self) -> None:
        hot_limit = int(self.args.hot_limit_mb * 2**20)
        rotate_bytes = int(self.args.rotate_mb * 2**20)
        total = len(self.dtypes) * len(self.shapes) * len(self.functions) * len(self.threads)
        self.progress = report.Progress(total, enabled=not self.args.no_progress)
        try:
            for dtype in self.dtypes:
                for shape in self.shapes:
                    n_sets = cs.buffer_sets(shape.elements * dtype.itemsize, hot_limit, rotate_bytes)
                    pool = cs.BufferPool(shape, dtype, n_sets, self.args.seed)
                    for spec in self.functions:
                        for threads in self.threads:
                            case = cs.Case(spec, shape, dtype, threads)
                            self.progress.step(case.label())
                            self.results.append(self.run_case(case, pool))
                            self.progress.advance()
                    pool.release()
        except KeyboardInterrupt:
            self.progress.write("interrupted: reporting the cases finished so far")
        finally:
            self.progress.close()

    def run_case(self, case: cs.Case, pool: cs.BufferPool) -> CaseResult:
        """Check every library against the reference, then time the good ones and the floor."""
        started = time.perf_counter()
        ref = cs.reference(case, pool)
        outcomes: Dict[str, LibraryResult] = {}
        entries: List[TimedEntry] = []
        for lib in self.libraries:
            outcome, entry = self.check_library(lib, case, pool, ref)
            outcomes[lib.name] = outcome
            if entry is not None:
                entries.append(entry)
        del ref
        floor_passes = FloorPasses(pool.get("x"), pool.get("out"), case.threads)
        entries += floor_passes.entries()
        try:
            measurement = measure_interleaved(entries, pool.n_sets, self.plan)
        finally:
            floor_passes.close()
        base_samples = measurement.samples.get(self.base.name, [])
        for name, outcome in outcomes.items():
            if outcome.status == OK and name in measurement.samples:
                samples = measurement.samples[name]
                outcome.stats = Stats.of(samples)
                outcome.calls_per_sample = measurement.calls_per_sample[name]
                outcome.paired_ratio = 1.0 if name == self.base.name else paired_ratio(samples, base_samples)
        return CaseResult(case, self.base.name, pool.n_sets, measurement.rounds, floor_from(measurement),
                          outcomes, wall_seconds=time.perf_counter() - started)

    def check_library(self, lib: pr.Library, case: cs.Case, pool: cs.BufferPool, ref: np.ndarray):
        """(outcome, entry to time or None): prepares the library, runs it once, checks it."""
        if lib.unavailable:
            return LibraryResult(lib.name, SKIPPED, lib.unavailable), None
        try:
            runner = lib.runner(case, pool)
            with runner.context():
                t0 = time.perf_counter()
                result = runner.call(0)
                first_call = time.perf_counter() - t0
            got = runner.to_numpy(result)
        except pr.Unsupported as exc:
            return LibraryResult(lib.name, SKIPPED, str(exc)), None
        except Exception as exc:  # a peer failing must not stop the run
            return LibraryResult(lib.name, ERROR, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]), None
        verdict = cs.check(case, got, ref)
        outcome = LibraryResult(lib.name, OK, max_error_eps=verdict.error_in_eps,
                                notes=[n for n in runner.notes if n])
        if not verdict.timed:
            outcome.status, outcome.reason = WRONG, verdict.message
            self.progress.write(f"WRONG: {lib.name} on {case.label()}: {verdict.message}")
            return outcome, None
        if verdict.verdict == "inexact":
            outcome.inexact = verdict.message
        if first_call > self.slow_call_seconds:
            # Too slow to repeat: the checked call is the one sample (for a jit library it
            # includes compiling, negligible at this length).
            outcome.stats, outcome.calls_per_sample = Stats.of([first_call]), 1
            outcome.notes.append(f"one call timed on {case.shape.label()} "
                                 f"(slower than {self.slow_call_seconds:g} s, not repeated)")
            return outcome, None
        return outcome, TimedEntry(lib.name, runner.call, runner.context)

    # -- output ------------------------------------------------------------------------

    def write_outputs(self, machine: Dict[str, Any]) -> None:
        args = self.args
        print(report.terminal_table(self.results))
        settings, libraries = self.settings(), self.library_info()
        if args.json:
            report.write_json(args.json, machine, settings, libraries, self.results)
            print(f"\nwrote {args.json}")
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(report.markdown(self.results, machine, settings, libraries))
            print(f"wrote {args.markdown}")
        if args.plot:
            try:
                for path in report.write_plots(args.plot, self.results, machine):
                    print(f"wrote {path}")
            except ImportError:
                print("plot skipped: matplotlib is not installed (pip install matplotlib)")


def run(args: argparse.Namespace) -> int:
    try:
        bench = Benchmark(args)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    machine = bench.machine()
    bench.print_header(machine)
    bench.run_all()
    bench.write_outputs(machine)
    return 0
