"""Fixtures of the pytest-benchmark suites. Without CUDA every benchmark skips itself (collection never
touches
the GPU); ``MINFERENCE_BENCH_SWEEP`` picks the sweep (see :mod:`minference.bench.suite`)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def suite_state():
    """One :class:`minference.bench.suite.SuiteState` for the whole run (inputs and baselines are
    shared)."""
    if not torch.cuda.is_available():
        pytest.skip("kernel benchmarks need a CUDA GPU")
    from minference.bench.suite import SuiteState

    return SuiteState()
