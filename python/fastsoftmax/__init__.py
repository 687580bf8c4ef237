"""fastsoftmax: fast and accurate softmax, log_softmax and logsumexp on the CPU.

The kernels are C++ with AVX2 and AVX-512 paths chosen at run time; see :func:`show_config`.
"""

from ._api import (
    backend,
    cross_entropy,
    get_num_threads,
    log_softmax,
    log_softmax_backward,
    logsumexp,
    set_num_threads,
    show_config,
    softmax,
    softmax_backward,
    softmin,
)
from . import _api

__version__ = "0.1.0"

__all__ = [
    "backend",
    "cross_entropy",
    "get_num_threads",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "set_num_threads",
    "show_config",
    "softmax",
    "softmax_backward",
    "softmin",
    "__version__",
]
