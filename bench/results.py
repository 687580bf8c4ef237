"""The figures of one run, and the derived ones (ns/element, GB/s, ratios)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from cases import Case
from timing import Floor, Stats

OK, SKIPPED, WRONG, ERROR = "ok", "skipped", "wrong", "error"


@dataclass
class LibraryResult:
    name: str
    status: str
    reason: str = ""
    stats: Optional[Stats] = None
    calls_per_sample: int = 0
    max_error_eps: Optional[float] = None  # max error of the checked result, in machine epsilons
    paired_ratio: Optional[float] = None  # median over rounds of (this / fastsoftmax), same round
    inexact: str = ""  # set when the result missed the tolerance but was close enough to time
    notes: List[str] = field(default_factory=list)


@dataclass
class CaseResult:
    case: Case
    base: str  # the fastsoftmax entry the ratios are taken against
    buffer_sets: int
    rounds: int
    floor: Optional[Floor]
    libraries: Dict[str, LibraryResult]
    wall_seconds: float = 0.0  # the whole case: inputs, reference, checks, rounds

    # -- derived figures ---------------------------------------------------------------

    def seconds(self, name: str) -> Optional[float]:
        r = self.libraries.get(name)
        return r.stats.median if r is not None and r.status == OK and r.stats else None

    def ns_per_element(self, name: str) -> Optional[float]:
        s = self.seconds(name)
        return None if s is None else s * 1e9 / self.case.shape.elements

    def gb_per_s(self, name: str) -> Optional[float]:
        s = self.seconds(name)
        return None if not s else self.case.ideal_bytes / s / 1e9

    def ratio_to_base(self, name: str) -> Optional[float]:
        """Peer time / fastsoftmax time: above 1 means fastsoftmax is faster."""
        s, b = self.seconds(name), self.seconds(self.base)
        return None if s is None or not b else s / b

    def floor_seconds(self) -> Optional[float]:
        if self.floor is None:
            return None
        spec = self.case.function
        return self.floor.seconds(spec.read_passes, spec.copy_passes)

    def floor_ns_per_element(self) -> Optional[float]:
        f = self.floor_seconds()
        return None if f is None else f * 1e9 / self.case.shape.elements

    def one_pass_floor_ns_per_element(self) -> Optional[float]:
        """Each input read once and the output written once: the floor for rows that stay in
        cache between the two passes (short rows), which a kernel can beat the two-pass one."""
        if self.floor is None:
            return None
        return self.floor.seconds(*self.case.function.one_pass) * 1e9 / self.case.shape.elements

    def floor_gb_per_s(self) -> Optional[float]:
        f = self.floor_seconds()
        return None if not f else self.case.ideal_bytes / f / 1e9

    def ratio_to_floor(self, name: str) -> Optional[float]:
        """Library time / floor time: 1 would be as fast as the memory passes alone."""
        s, f = self.seconds(name), self.floor_seconds()
        return None if s is None or not f else s / f

    @property
    def regime(self) -> str:
        return "rotated" if self.buffer_sets > 1 else "hot"

    # -- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        case, shape = self.case, self.case.shape
        floor = None
        if self.floor is not None:
            floor = {
                "read_method": self.floor.read_method,
                "copy_method": self.floor.copy_method,
                "read_seconds": self.floor.read.as_dict(),
                "copy_seconds": self.floor.copy.as_dict(),
                "read_passes": case.function.read_passes,
                "copy_passes": case.function.copy_passes,
                "seconds": self.floor_seconds(),
                "one_pass_ns_per_element": self.one_pass_floor_ns_per_element(),
                "ns_per_element": self.floor_ns_per_element(),
                "gb_per_s": self.floor_gb_per_s(),
                "read_ns_per_element": self.floor.read.median * 1e9 / shape.elements,
                "copy_ns_per_element": self.floor.copy.median * 1e9 / shape.elements,
                "two_pass_ns_per_element": (self.floor.read.median + self.floor.copy.median)
                * 1e9 / shape.elements,
            }
        libraries = {}
        for name, r in self.libraries.items():
            entry: Dict[str, Any] = {"status": r.status}
            if r.reason:
                entry["reason"] = r.reason
            if r.notes:
                entry["notes"] = r.notes
            if r.max_error_eps is not None:
                entry["max_error_eps"] = _finite(r.max_error_eps)
            if r.inexact:
                entry["inexact"] = r.inexact
            if r.status == OK and r.stats is not None:
                entry.update({
                    "seconds_per_call": r.stats.as_dict(),
                    "iqr_fraction": _finite(r.stats.iqr_fraction),
                    "calls_per_sample": r.calls_per_sample,
                    "ns_per_element": self.ns_per_element(name),
                    "gb_per_s": self.gb_per_s(name),
                    "ratio_to_fastsoftmax": self.ratio_to_base(name),
                    "paired_ratio_to_fastsoftmax": r.paired_ratio,
                    "ratio_to_floor": self.ratio_to_floor(name),
                })
            libraries[name] = entry
        return {
            "function": case.function.name,
            "shape": list(shape.dims),
            "axis": shape.axis,
            "shape_key": shape.key(),
            "dtype": case.dtype.name,
            "threads": case.threads,
            "elements": shape.elements,
            "rows": shape.rows,
            "row_length": shape.row_length,
            "input_bytes": case.input_bytes,
            "ideal_bytes": case.ideal_bytes,
            "ideal_traffic": case.function.description,
            "buffer_sets": self.buffer_sets,
            "cache_regime": self.regime,
            "rounds": self.rounds,
            "wall_seconds": round(self.wall_seconds, 2),
            "baseline": self.base,
            "floor": floor,
            "libraries": libraries,
        }


def _finite(v: float) -> Optional[float]:
    return float(v) if math.isfinite(v) else None


def paired_ratio(samples: List[float], base_samples: List[float]) -> Optional[float]:
    if not samples or len(samples) != len(base_samples):
        return None
    return float(np.median(np.asarray(samples) / np.asarray(base_samples)))
