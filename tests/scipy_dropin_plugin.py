"""pytest plugin: run SciPy's own tests with fastsoftmax.scipy in place of scipy.special.

Load it with ``-p scipy_dropin_plugin`` (its folder on PYTHONPATH). pytest imports a ``-p``
plugin before it reads any conftest.py or collects a test module, so the swap below is in
place when a SciPy test module runs ``from scipy.special import softmax, ...``:

- ``scipy.special.softmax``, ``log_softmax`` and ``logsumexp`` become call-counting wrappers
  of ``fastsoftmax.scipy``'s functions;
- SciPy's array-API test machinery looks each tested function up in
  ``scipy._lib._array_api.xp_capabilities_table`` (``@make_xp_test_case(logsumexp)``, keyed
  by the function object), so each wrapper is registered there under the entry of the SciPy
  function it replaces;
- after collection, every collected module that has one of the three names must hold our
  wrapper under it (else the run stops with a usage error: the swap came too late);
- at the end the call counts are printed, written as JSON to ``--dropin-report=PATH`` if
  given (with the tests' outcome counts and the modules checked), and, with ``--dropin-require-calls``, a run in which any of the three functions was
  never called fails (exit status 1).
"""

from __future__ import annotations

import collections
import functools
import json

import pytest
import scipy.special

import fastsoftmax.scipy as fss

NAMES = ("softmax", "log_softmax", "logsumexp")
ORIGINALS = {name: getattr(scipy.special, name) for name in NAMES}
CALLS: collections.Counter = collections.Counter({name: 0 for name in NAMES})
OUTCOMES: collections.Counter = collections.Counter()
REPLACEMENTS = {}
_checked_modules = set()


def _counting(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        CALLS[name] += 1
        return fn(*args, **kwargs)

    return wrapper


def _install():
    try:
        from scipy._lib._array_api import xp_capabilities_table
    except ImportError:  # older SciPy: no capabilities table
        xp_capabilities_table = None
    for name in NAMES:
        ours = _counting(name, getattr(fss, name))
        if xp_capabilities_table is not None and ORIGINALS[name] in xp_capabilities_table:
            xp_capabilities_table[ours] = xp_capabilities_table[ORIGINALS[name]]
        setattr(scipy.special, name, ours)
        REPLACEMENTS[name] = ours


_install()


def pytest_addoption(parser):
    group = parser.getgroup("fastsoftmax drop-in")
    group.addoption("--dropin-report", default=None, help="write the call counts as JSON to this file")
    group.addoption(
        "--dropin-require-calls",
        action="store_true",
        help="fail the run if softmax, log_softmax or logsumexp was never called",
    )


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ in _checked_modules:
            continue
        for name in NAMES:
            bound = module.__dict__.get(name)
            if bound is not None and bound is not REPLACEMENTS[name]:
                raise pytest.UsageError(
                    f"{module.__name__}.{name} is {bound!r}, not fastsoftmax's drop-in: "
                    "the module was imported before the plugin swapped the functions"
                )
        _checked_modules.add(module.__name__)


def pytest_runtest_logreport(report):
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            OUTCOMES["xpassed" if report.passed else "xfailed"] += 1
        else:
            OUTCOMES[report.outcome] += 1
    elif report.failed:
        OUTCOMES["error"] += 1
    elif report.skipped:
        OUTCOMES["xfailed" if hasattr(report, "wasxfail") else "skipped"] += 1


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    path = config.getoption("--dropin-report")
    if path:
        with open(path, "w") as f:
            json.dump(
                {"calls": dict(CALLS), "outcomes": dict(OUTCOMES), "modules_checked": sorted(_checked_modules)}, f
            )
    if config.getoption("--dropin-require-calls") and session.testscollected and min(CALLS.values()) == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = ", ".join(f"{name}={CALLS[name]}" for name in NAMES)
    terminalreporter.write_line(f"fastsoftmax.scipy drop-in calls: {counts}")
    if config.getoption("--dropin-require-calls") and min(CALLS.values()) == 0:
        terminalreporter.write_line("fastsoftmax.scipy drop-in: a function was never called", red=True)
