"""Thread-count control: the threads= keyword, set/get_num_threads, the environment, threadpoolctl."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _api, _core

FUNCTIONS = {
    "softmax": lambda x, **kw: fs.softmax(x, **kw),
    "log_softmax": lambda x, **kw: fs.log_softmax(x, **kw),
    "logsumexp": lambda x, **kw: fs.logsumexp(x, **kw),
    "softmax_backward": lambda x, **kw: fs.softmax_backward(x, fs.softmax(x), **kw),
    "log_softmax_backward": lambda x, **kw: fs.log_softmax_backward(x, fs.log_softmax(x), **kw),
    "cross_entropy": lambda x, **kw: fs.cross_entropy(x, np.zeros(x.shape[:-1], np.int64), **kw),
}


@pytest.fixture
def restore_threads():
    saved = _api._threads_override
    yield
    _api._threads_override = saved


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("bad", [0, -1])
def test_threads_below_one_raises_value_error_naming_threads(name, bad):
    with pytest.raises(ValueError, match="threads"):
        FUNCTIONS[name](np.zeros((2, 3)), threads=bad)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("bad", [1.5, "2", True])
def test_threads_not_an_integer_raises_type_error_naming_threads(name, bad):
    with pytest.raises(TypeError, match="threads"):
        FUNCTIONS[name](np.zeros((2, 3)), threads=bad)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (False, TypeError)])
def test_set_num_threads_rejects_bad_values(bad, error, restore_threads):
    with pytest.raises(error):
        fs.set_num_threads(bad)


def test_set_num_threads_sets_the_default_and_none_restores_it(restore_threads):
    fs.set_num_threads(3)
    assert fs.get_num_threads() == 3
    fs.set_num_threads(None)
    assert fs.get_num_threads() >= 1


def test_default_is_at_most_the_cpus_this_process_may_use(restore_threads):
    fs.set_num_threads(None)
    if "OMP_NUM_THREADS" not in os.environ and "FASTSOFTMAX_NUM_THREADS" not in os.environ:
        assert 1 <= fs.get_num_threads() <= len(os.sched_getaffinity(0))


def _threads_in_subprocess(env_update):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FASTSOFTMAX_NUM_THREADS")}
    env.update(env_update)
    out = subprocess.run(
        [sys.executable, "-c", "import fastsoftmax as fs; print(fs.get_num_threads())"],
        env=env, capture_output=True, text=True, check=True,
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not _core.openmp(), reason="built without OpenMP")
def test_environment_sets_the_default_fastsoftmax_first_then_omp():
    assert _threads_in_subprocess({"FASTSOFTMAX_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}) == 3
    assert _threads_in_subprocess({"OMP_NUM_THREADS": "5"}) == 5


@pytest.mark.skipif(not _core.openmp(), reason="built without OpenMP")
def test_threadpoolctl_limit_takes_effect(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fs.set_num_threads(None)
    with threadpoolctl.threadpool_limits(limits=1):
        assert fs.get_num_threads() == 1


@pytest.mark.skipif(not _core.openmp(), reason="built without OpenMP")
def test_plain_calls_default_is_get_num_threads(restore_threads):
    """Calls on plain arrays with threads=None resolve the default in _core (no Python round
    trip): the same number as get_num_threads, under threadpoolctl's limit too."""
    fs.set_num_threads(None)
    assert _core.default_threads() == fs.get_num_threads()
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1):
        assert _core.default_threads() == fs.get_num_threads() == 1


@pytest.mark.skipif(not _core.openmp() or not hasattr(os, "sched_setaffinity"), reason="OpenMP and affinity")
def test_affinity_set_after_import_caps_the_plain_calls_default():
    """The usable CPUs are read at first use, as get_num_threads reads them: a process pinned
    to one CPU after the import (a worker, say) gets one thread by default."""
    code = (
        "import os, numpy as np, fastsoftmax as fs\n"
        "from fastsoftmax import _core\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "fs.softmax(np.ones((2, 3), np.float32))\n"
        "print(fs.get_num_threads(), _core.default_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FASTSOFTMAX_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_threads_beyond_int_range_means_all():
    x = np.random.default_rng(3).normal(size=(4, 50)).astype(np.float32)
    # Exact: threads is an upper bound and results do not depend on it.
    np.testing.assert_array_equal(fs.softmax(x, threads=2**40), fs.softmax(x, threads=1))
    np.testing.assert_array_equal(fs.softmax_backward(x, x, threads=np.int64(2**40)), fs.softmax_backward(x, x, threads=1))


@pytest.mark.parametrize("shape, axis", [((1, 2**20 + 17), -1), ((512, 1024), -1), ((16, 300, 49), 1), ((65536, 10), -1)])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_results_are_bitwise_identical_whatever_the_thread_count(shape, axis, name):
    x = np.random.default_rng(7).normal(0, 3, shape).astype(np.float32)
    if name == "cross_entropy":
        if axis != -1:
            pytest.skip("class axis last")
        one = FUNCTIONS[name](x, threads=1, return_grad=True)
        two = FUNCTIONS[name](x, threads=2, return_grad=True)
        # Exact: the reductions are partitioned independently of the thread count.
        assert one[0] == two[0]
        np.testing.assert_array_equal(one[1], two[1])
        return
    kw = {"axis": axis}
    # Exact: the reductions are partitioned independently of the thread count.
    np.testing.assert_array_equal(FUNCTIONS[name](x, threads=1, **kw), FUNCTIONS[name](x, threads=2, **kw))
