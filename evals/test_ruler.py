"""ruler: every sparse method within the drop limit of dense, per task and thresholded length."""

import pytest
from harness import check, run_benchmark, thresholds

CASES = thresholds("ruler")
TASKS = sorted({task for task, *_ in CASES if task not in ("average", "ppl")}) or None


@pytest.fixture(scope="module")
def store():
    return run_benchmark("ruler", [length for _, length, *_ in CASES], TASKS)


@pytest.mark.eval
@pytest.mark.parametrize("task, length, min_score, max_drop, method", CASES)
def test_ruler_within_threshold(store, task, length, min_score, max_drop, method):
    check(store, task, length, min_score, max_drop, method)
