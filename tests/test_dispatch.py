"""Backend selection: FASTSOFTMAX_ISA at import, use_backend, introspection.

Import-time selection is tested in fresh interpreters (sys.executable -c ...)
so that the test process's own backend state is never affected.
"""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import numpy as np
import numpy.testing as npt
import pytest

import fastsoftmax as fs
from conftest import (
    AVAILABLE_BACKENDS,
    KNOWN_BACKENDS,
    PREFERENCE_ORDER,
    WORKED_EXAMPLE_X,
    WORKED_EXAMPLE_Y,
    assert_softmax_matches_reference,
    best_backend,
)

# Child script: records every warning raised while importing and using the
# package, and reports the active backend and two softmax results as JSON.
CHILD_SCRIPT = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    import fastsoftmax as fs
    backend = fs.backend()
    x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0]
    y64 = fs.softmax(np.array(x, dtype=np.float64))
    y32 = fs.softmax(np.array(x, dtype=np.float32))
    available = list(fs._api.available_backends())
print(json.dumps({
    "backend": backend,
    "available": available,
    "y64": [float(v) for v in y64],
    "y32": [float(v) for v in y32],
    "y32_dtype": str(y32.dtype),
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
}))
"""


def run_child(tmp_path, isa=None):
    """Run CHILD_SCRIPT in a fresh interpreter with FASTSOFTMAX_ISA=isa
    (unset when isa is None) and return the decoded JSON report."""
    env = dict(os.environ)
    env.pop("FASTSOFTMAX_ISA", None)
    env.pop("PYTHONWARNINGS", None)
    if isa is not None:
        env["FASTSOFTMAX_ISA"] = isa
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT],
        env=env,
        cwd=str(tmp_path),  # never pick up a source tree from the cwd
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"child failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def runtime_warnings(report):
    return [msg for cat, msg in report["warnings"] if cat == "RuntimeWarning"]


def assert_worked_example(report):
    # Tolerance: rtol 1e-6 (published values have 7 significant digits).
    npt.assert_allclose(report["y64"], WORKED_EXAMPLE_Y, rtol=1e-6)
    npt.assert_allclose(report["y32"], WORKED_EXAMPLE_Y, rtol=1e-6)
    assert report["y32_dtype"] == "float32"


# ----------------------------------------------------------------------------
# Introspection
# ----------------------------------------------------------------------------


def test_available_backends_are_known_names_without_duplicates():
    assert len(AVAILABLE_BACKENDS) >= 1
    assert set(AVAILABLE_BACKENDS) <= KNOWN_BACKENDS
    assert len(set(AVAILABLE_BACKENDS)) == len(AVAILABLE_BACKENDS)


def test_numpy_and_scalar_backends_are_always_available():
    assert "numpy" in AVAILABLE_BACKENDS
    assert "scalar" in AVAILABLE_BACKENDS


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_simd_backends_offered_match_cpu_flags():
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this platform")
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        assert "avx512" in AVAILABLE_BACKENDS
    if "avx512f" not in flags:
        assert "avx512" not in AVAILABLE_BACKENDS
    if {"avx2", "fma"} <= flags:
        assert "avx2" in AVAILABLE_BACKENDS
    if "avx2" not in flags:
        assert "avx2" not in AVAILABLE_BACKENDS


def test_version_is_a_release_string_matching_installed_metadata():
    assert isinstance(fs.__version__, str)
    # PEP 440-style release segment, e.g. "0.1.0" or "1.2.3.dev4".
    assert re.match(r"^\d+(\.\d+)+", fs.__version__), fs.__version__
    try:
        installed = importlib.metadata.version("fastsoftmax")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastsoftmax is importable but not installed (no metadata)")
    assert fs.__version__ == installed


def test_active_backend_is_one_of_the_available_ones():
    assert fs.backend() in AVAILABLE_BACKENDS


def test_show_config_prints_version_and_isas(capsys):
    fs.show_config()
    printed = capsys.readouterr().out
    assert fs.__version__ in printed
    assert fs.backend() in printed
    for name in AVAILABLE_BACKENDS:
        assert name in printed, name


# ----------------------------------------------------------------------------
# use_backend context manager
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AVAILABLE_BACKENDS)
def test_use_backend_forces_then_restores_previous_backend(name):
    before = fs.backend()
    with fs._api.use_backend(name):
        assert fs.backend() == name
        y = fs.softmax(np.array(WORKED_EXAMPLE_X))
    assert fs.backend() == before
    # Tolerance: rtol 1e-6 (published values have 7 significant digits).
    npt.assert_allclose(y, WORKED_EXAMPLE_Y, rtol=1e-6)


@pytest.mark.parametrize("name", AVAILABLE_BACKENDS)
def test_use_backend_restores_previous_backend_after_exception(name):
    before = fs.backend()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with fs._api.use_backend(name):
            assert fs.backend() == name
            raise Boom
    assert fs.backend() == before


def test_nested_use_backend_restores_each_level():
    names = list(AVAILABLE_BACKENDS)
    outer, inner = names[0], names[-1]
    before = fs.backend()
    with fs._api.use_backend(outer):
        assert fs.backend() == outer
        with fs._api.use_backend(inner):
            assert fs.backend() == inner
        assert fs.backend() == outer
    assert fs.backend() == before


@pytest.mark.parametrize("name", AVAILABLE_BACKENDS)
def test_each_forced_backend_computes_reference_softmax(name):
    rng = np.random.default_rng(12345)
    x64 = rng.normal(0, 3, size=(6, 77))
    x32 = x64.astype(np.float32)
    with fs._api.use_backend(name):
        y64 = fs.softmax(x64)
        y32 = fs.softmax(x32, axis=0)
    # Tolerance: 4 ULP (dtype-specific, see assert_softmax_matches_reference).
    assert_softmax_matches_reference(y64, x64, axis=-1)
    assert_softmax_matches_reference(y32, x32, axis=0)


# ----------------------------------------------------------------------------
# FASTSOFTMAX_ISA at import (fresh interpreters)
# ----------------------------------------------------------------------------


def test_default_import_selects_best_available_backend_without_warning(tmp_path):
    report = run_child(tmp_path, isa=None)
    assert report["backend"] == best_backend(report["available"])
    assert runtime_warnings(report) == []
    assert_worked_example(report)


@pytest.mark.parametrize("isa", list(PREFERENCE_ORDER))
def test_env_var_forces_named_backend_at_import(tmp_path, isa):
    if isa not in AVAILABLE_BACKENDS:
        pytest.skip(f"{isa} is not available on this machine")
    report = run_child(tmp_path, isa=isa)
    assert report["backend"] == isa
    assert runtime_warnings(report) == []
    assert_worked_example(report)


def test_env_var_with_unknown_name_warns_and_falls_back_to_best(tmp_path):
    report = run_child(tmp_path, isa="neon")
    expected = best_backend(report["available"])
    assert report["backend"] == expected
    if "avx512" in report["available"]:
        assert report["backend"] == "avx512"
    msgs = runtime_warnings(report)
    # A RuntimeWarning naming both the requested and the chosen backend.
    assert any("neon" in m and expected in m for m in msgs), report["warnings"]
    assert_worked_example(report)


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_env_var_requesting_isa_the_cpu_lacks_warns_and_falls_back(tmp_path, isa):
    if isa in AVAILABLE_BACKENDS:
        pytest.skip(f"this CPU supports {isa}; cannot test the missing-ISA fallback")
    report = run_child(tmp_path, isa=isa)
    expected = best_backend(report["available"])
    assert report["backend"] == expected
    msgs = runtime_warnings(report)
    assert any(isa in m and expected in m for m in msgs), report["warnings"]
    assert_worked_example(report)


def test_child_interpreter_reports_same_available_backends(tmp_path):
    report = run_child(tmp_path, isa=None)
    assert sorted(report["available"]) == sorted(AVAILABLE_BACKENDS)
