"""What the figures were measured on: CPU, caches, memory, software versions."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any, Dict, List

# The instruction-set flags that matter for a softmax kernel, in the order shown.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
             "avx512_bf16", "avx512_fp16", "amx_tile")


def _cpuinfo() -> Dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    info = {}
    for line in first.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _caches() -> Dict[str, str]:
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind != "Instruction":
            caches[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    return caches


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def describe(library_versions: Dict[str, str], fastsoftmax_info: Dict[str, Any]) -> Dict[str, Any]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count() or 1
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu.get("model name", platform.processor() or platform.machine()),
        "cpu_mhz": cpu.get("cpu MHz", ""),
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
        "hypervisor": "hypervisor" in flags,
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores,
        "caches": _caches(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions,
        "fastsoftmax": fastsoftmax_info,
    }


def one_line(machine: Dict[str, Any]) -> str:
    caches = ", ".join(f"{k} {v}" for k, v in machine["caches"].items())
    flags: List[str] = machine["isa_flags"]
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    return (f"{machine['cpu_model']}, {machine['usable_cores']} cores, {isa}"
            + (f" ({caches})" if caches else "")
            + f", {machine['memory_gib']} GiB, {machine['os']}, Python {machine['python']}")
