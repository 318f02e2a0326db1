"""Needle in a haystack: every sparse method within the drop limit of dense, at every thresholded length."""

import pytest
from harness import check, run_benchmark, thresholds

CASES = thresholds("needle")


@pytest.fixture(scope="module")
def store():
    return run_benchmark("needle", [length for _, length, *_ in CASES])


@pytest.mark.eval
@pytest.mark.parametrize("task, length, min_score, max_drop, method", CASES)
def test_needle_within_threshold(store, task, length, min_score, max_drop, method):
    check(store, task, length, min_score, max_drop, method)
