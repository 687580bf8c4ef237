"""The examples in the docstrings run and print what they say."""

import doctest

import numpy as np
import pytest

from fastsoftmax import _api


@pytest.mark.parametrize("module", [_api], ids=lambda m: m.__name__)
def test_docstring_examples_print_what_they_show(module):
    saved = _api._threads_override  # an example sets the thread count
    try:
        with np.printoptions(legacy=False):
            result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    finally:
        _api._threads_override = saved
    assert result.attempted > 10, "the public functions should carry examples"
    assert result.failed == 0
