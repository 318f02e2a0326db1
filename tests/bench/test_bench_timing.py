"""The timing loop: how many calls it makes and what it reports (CPU clock)."""
import time

import pytest

from minference.bench.timing import TimingConfig, input_copies, time_call, time_reps


def counting(sleep_s: float = 0.0):
    calls = []

    def fn(rep):
        calls.append(rep)
        if sleep_s:
            time.sleep(sleep_s)
    return fn, calls


def test_warmup_then_reps_sized_by_the_target_within_bounds():
    fn, calls = counting()
    timing = time_call(fn, "cpu", TimingConfig(warmup=2, min_reps=3, max_reps=7, target_s=10.0))
    # a near-instant call wants many reps: capped at max_reps, after two untimed warm-up calls
    assert calls == list(range(2 + 7)) and timing.reps == 7
    assert timing.min_ms <= timing.median_ms <= timing.max_ms


def test_a_call_slower_than_long_call_s_is_timed_once():
    fn, calls = counting(0.02)
    timing = time_call(fn, "cpu", TimingConfig(warmup=1, min_reps=3, max_reps=5, long_call_s=0.01))
    assert len(calls) == 2 and timing.reps == 1 and timing.median_ms >= 20


def test_time_reps_times_exactly_reps_calls_however_slow():
    fn, calls = counting(0.005)
    timing = time_reps(lambda: fn(None), 4, device="cpu")
    assert len(calls) == 1 + 4 and timing.reps == 4 and timing.min_ms >= 5


@pytest.mark.parametrize("config", [dict(warmup=-1), dict(min_reps=0), dict(min_reps=3, max_reps=2), dict(target_s=0),
                                    dict(long_call_s=0)])
def test_bad_timing_configs_are_refused(config):
    with pytest.raises(ValueError):
        TimingConfig(**config)


def test_input_copies_reach_the_rotation_size_within_the_limit():
    config = TimingConfig(rotate_bytes=100)
    assert input_copies(30, config) == 4 and input_copies(50, config) == 2 and input_copies(1000, config) == 1
    with pytest.raises(ValueError):
        input_copies(0, config)
