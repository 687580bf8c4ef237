"""Output: the terminal table, the progress bar, JSON, the markdown section and the plots."""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from machine import one_line
from results import ERROR, OK, SKIPPED, WRONG, CaseResult

STATUS_CELL = {SKIPPED: "skip", WRONG: "WRONG", ERROR: "error"}


# ---------------------------------------------------------------------------------------
# Progress


class Progress:
    """tqdm when installed, else one line per step on stderr."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():  # in a log, one plain line per case reads better
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="case", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def step(self, label: str) -> None:
        """Announce the case about to run."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(label)
        else:
            print(f"[{self.done + 1:>{len(str(self.total))}}/{self.total}] {label}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.enabled:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------
# Number formatting


def fmt_ns(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v:.3f}"
    if v < 10:
        return f"{v:.2f}"
    if v < 100:
        return f"{v:.1f}"
    return f"{v:.0f}"


def fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return "-"
    if r < 10:
        return f"{r:.2f}x"
    if r < 100:
        return f"{r:.1f}x"
    return f"{r:.0f}x"


def peer_cell(result: CaseResult, name: str) -> str:
    r = result.libraries.get(name)
    if r is None:
        return ""
    if r.status != OK:
        return STATUS_CELL[r.status]
    flag = "*" if r.inexact else ""
    return f"{fmt_ns(result.ns_per_element(name))}{flag} ({fmt_ratio(result.ratio_to_base(name))})"


def groups(results: Iterable[CaseResult]) -> "OrderedDict[Tuple[str, str, int], List[CaseResult]]":
    """Results by (function, dtype, threads), in the order they ran."""
    out: "OrderedDict[Tuple[str, str, int], List[CaseResult]]" = OrderedDict()
    for r in results:
        out.setdefault((r.case.function.name, r.case.dtype.name, r.case.threads), []).append(r)
    return out


def library_order(results: List[CaseResult]) -> List[str]:
    names: List[str] = []
    for r in results:
        for name in r.libraries:
            if name not in names:
                names.append(name)
    return names


def _reasons(results: List[CaseResult]) -> List[str]:
    """One line per distinct (library, status, reason) and per distinct note."""
    lines: List[str] = []
    for r in results:
        for name, lib in r.libraries.items():
            if lib.status != OK:
                text = f"{name}: {STATUS_CELL[lib.status]}: {lib.reason}"
                if lib.status == WRONG:
                    text = f"{name} on {r.case.shape.label()}: WRONG: {lib.reason}"
                if text not in lines:
                    lines.append(text)
            if lib.inexact:
                lines.append(f"{name}* on {r.case.shape.label()}: timed, but less accurate than the "
                             f"tolerance: {lib.inexact}")
            for note in lib.notes:
                text = f"{name}: {note}"
                if note and text not in lines:
                    lines.append(text)
    return lines


# ---------------------------------------------------------------------------------------
# Terminal table


def terminal_table(results: List[CaseResult]) -> str:
    out: List[str] = []
    for (function, dtype, threads), rows in groups(results).items():
        base = rows[0].base
        others = [n for n in library_order(rows) if n != base]
        thread_word = "thread" if threads == 1 else "threads"
        out.append("")
        out.append(f"{function} | {dtype} | {threads} {thread_word}   "
                   f"(ns/element, median; in brackets: time / {base} time, >1 = {base} faster)")
        header = [("shape (axis)", "<"), ("cache", "<"), ("1p floor", ">"), ("floor", ">"), (base, ">"), ("IQR", ">"),
                  ("GB/s", ">"), ("/floor", ">")] + [(n, ">") for n in others]
        table_rows = []
        for r in rows:
            base_result = r.libraries.get(base)
            if base_result is not None and base_result.status == OK:
                base_cells = [fmt_ns(r.ns_per_element(base)), f"{100 * base_result.stats.iqr_fraction:.0f}%",
                              f"{r.gb_per_s(base):.1f}", fmt_ratio(r.ratio_to_floor(base))]
            else:
                status = STATUS_CELL.get(base_result.status, "-") if base_result else "-"
                base_cells = [status, "", "", ""]
            table_rows.append([r.case.shape.label(), f"{r.regime}", fmt_ns(r.one_pass_floor_ns_per_element()),
                               fmt_ns(r.floor_ns_per_element())]
                              + base_cells + [peer_cell(r, n) for n in others])
        out.extend(_aligned(header, table_rows))
        for line in _reasons(rows):
            out.append(f"  - {line}")
    return "\n".join(out)


def _aligned(header: List[Tuple[str, str]], rows: List[List[str]]) -> List[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _) in enumerate(header)]

    def line(cells: List[str]) -> str:
        parts = []
        for (_, align), width, cell in zip(header, widths, cells):
            parts.append(cell.ljust(width) if align == "<" else cell.rjust(width))
        return "  ".join(parts).rstrip()

    return [line([h for h, _ in header]), line(["-" * w for w in widths])] + [line(r) for r in rows]


# ---------------------------------------------------------------------------------------
# JSON


def write_json(path: Path, machine: Dict[str, Any], settings: Dict[str, Any],
               libraries: Dict[str, Any], results: List[CaseResult]) -> None:
    doc = {
        "schema": "fastsoftmax-bench/1",
        "machine": machine,
        "settings": settings,
        "libraries": libraries,
        "results": [r.to_dict() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False, default=_json_default) + "\n")


def _json_default(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


# ---------------------------------------------------------------------------------------
# Markdown


def markdown(results: List[CaseResult], machine: Dict[str, Any], settings: Dict[str, Any],
             libraries: Dict[str, Any]) -> str:
    fs = machine.get("fastsoftmax", {})
    versions = ", ".join(f"{name} {info['version']}" for name, info in libraries.items()
                         if info.get("available") and info.get("version") and not name.startswith("fastsoftmax"))
    lines = [
        "## Performance",
        "",
        f"Measured on {machine['date']}: {one_line(machine)}.",
        f"fastsoftmax {fs.get('version', '')} (backend `{fs.get('backend', '')}`); peers: {versions}.",
        f"Median of {settings['rounds_note']} interleaved rounds; inputs over "
        f"{settings['hot_limit_mb']:g} MB rotated across buffers (out of cache). Command: "
        f"`{settings['command']}`.",
        "",
        "Figures are nanoseconds per input element (lower is better). *floor*: the time of the memory "
        "passes of the ideal two-pass algorithm (a read pass, then a read-and-write pass), measured in "
        "the same run on the same buffers; *1-pass floor*: every input read once and the output written "
        "once, the floor for rows short enough to stay in cache between the passes. GB/s: bytes of the "
        "two-pass algorithm per second. Peer cells: ns/element (peer time / fastsoftmax time, above 1 "
        "means fastsoftmax is faster); * marks a result less accurate than the check's tolerance.",
    ]
    for (function, dtype, threads), rows in groups(results).items():
        base = rows[0].base
        others = [n for n in library_order(rows) if n != base]
        lines += ["", f"### {function}, {dtype}, {threads} thread{'s' if threads > 1 else ''}", ""]
        header = ["shape (axis)", "1-pass floor", "floor", base, "GB/s", "/ floor"] + others
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for r in rows:
            ok = r.libraries.get(base) is not None and r.libraries[base].status == OK
            cells = [f"{r.case.shape.label()}", fmt_ns(r.one_pass_floor_ns_per_element()), fmt_ns(r.floor_ns_per_element()),
                     f"**{fmt_ns(r.ns_per_element(base))}**" if ok else STATUS_CELL.get(r.libraries[base].status, "-"),
                     f"{r.gb_per_s(base):.1f}" if ok else "-", fmt_ratio(r.ratio_to_floor(base)) if ok else "-"]
            cells += [peer_cell(r, n) for n in others]
            lines.append("| " + " | ".join(cells) + " |")
        reasons = _reasons(rows)
        if reasons:
            lines.append("")
            lines += [f"- {line}" for line in reasons]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Plots


def write_plots(path: Path, results: List[CaseResult], machine: Dict[str, Any]) -> List[Path]:
    """One PNG per (dtype, threads): per function, ns/element against row length (log-log,
    the floor dashed) and the speed-up of fastsoftmax over each peer per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter

    names = library_order(results)
    palette = plt.get_cmap("tab10").colors
    colours = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    # minor ticks of a log axis: label the 2s and 5s only
    sparse = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")

    by_setting: "OrderedDict[Tuple[str, int], List[CaseResult]]" = OrderedDict()
    for r in results:
        by_setting.setdefault((r.case.dtype.name, r.case.threads), []).append(r)
    written = []
    for (dtype, threads), subset in by_setting.items():
        target = path if len(by_setting) == 1 else path.with_name(f"{path.stem}_{dtype}_t{threads}{path.suffix}")
        by_function = OrderedDict()
        for r in subset:
            by_function.setdefault(r.case.function.name, []).append(r)
        fig, axes = plt.subplots(len(by_function), 2, figsize=(15, 4.6 * len(by_function)), squeeze=False)
        for row, (function, rows) in enumerate(by_function.items()):
            _plot_times(axes[row][0], function, rows, colours)
            _plot_speedups(axes[row][1], function, rows, colours)
            for ax in axes[row]:
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(sparse)
        fig.suptitle(f"fastsoftmax vs peers, {dtype}, {threads} thread{'s' if threads > 1 else ''} - "
                     f"{machine['cpu_model']}, {machine['date']}", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.98))
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written


def _plot_times(ax, function: str, rows: List[CaseResult], colours: Dict[str, Any]) -> None:
    """Markers, not lines: several shapes share a row length (1000 rows of 1000, 64 x 49 rows
    of 1000 along axis 1), so lines would zigzag. Libraries are nudged apart sideways; the
    marker tells the cache regime, the black bar is the two-pass floor of the shape."""
    rows = sorted(rows, key=lambda r: (r.case.shape.row_length, r.case.shape.key()))
    base = rows[0].base
    names = [n for n in library_order(rows) if any(r.ns_per_element(n) for r in rows)]
    markers = {"hot": "o", "rotated": "s", "strided": "^"}

    def regime(r: CaseResult) -> str:
        return "strided" if not r.case.shape.last_axis else r.regime

    for k, name in enumerate(names):
        nudge = 1.07 ** (k - (len(names) - 1) / 2)
        for r in rows:
            y = r.ns_per_element(name)
            if y:
                ax.scatter(r.case.shape.row_length * nudge, y, color=colours[name], marker=markers[regime(r)],
                           s=55 if name == base else 30, edgecolors="k" if name == base else "none",
                           zorder=3 if name == base else 2)
    for r in rows:
        f = r.floor_ns_per_element()
        if f:
            ax.scatter(r.case.shape.row_length, f, color="k", marker="_", s=500, linewidths=2, zorder=1)
    for name in names:  # legend entries: colour per library
        ax.scatter([], [], color=colours[name], marker="o", label=name)
    ax.scatter([], [], color="k", marker="_", s=200, linewidths=2, label="two-pass memory floor")
    for kind, marker in markers.items():
        ax.scatter([], [], facecolors="none", edgecolors="grey", marker=marker,
                   label={"hot": "in cache", "rotated": "from memory", "strided": "axis not last"}[kind])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("row length (elements along the axis)")
    ax.set_ylabel("ns / element (lower is better)")
    ax.set_title(f"{function}: time per element")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _plot_speedups(ax, function: str, rows: List[CaseResult], colours: Dict[str, Any]) -> None:
    base = rows[0].base
    peers = [n for n in library_order(rows) if n != base and any(r.ratio_to_base(n) for r in rows)]
    labels = [r.case.shape.label().replace(" ax ", "\nax ") for r in rows]
    width = 0.8 / max(1, len(peers))
    for k, name in enumerate(peers):
        offset = (k - (len(peers) - 1) / 2) * width
        bars = [(i + offset, r.ratio_to_base(name)) for i, r in enumerate(rows) if r.ratio_to_base(name)]
        xs, ys = zip(*bars)
        # bars start at 1: up where fastsoftmax is faster, down where the peer is
        ax.bar(xs, [y - 1 for y in ys], width, bottom=1.0, label=name, color=colours[name])
    ax.axhline(1.0, color="k", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel(f"peer time / {base} time (>1: {base} faster)")
    ax.set_title(f"{function}: speed-up of {base} over each peer")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if peers:
        ax.legend(fontsize=8)
