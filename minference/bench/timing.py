"""Timing one call: a warm-up that covers JIT compilation and autotuning, then repetitions timed with CUDA
events.

The callable receives the repetition number so the caller can rotate between input copies (a small problem
otherwise runs from a warm L2 cache). On the CPU the same loop uses ``time.perf_counter``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class TimingConfig:
    """How hard to time.

    Attributes:
        warmup: untimed calls first (the first one compiles, autotunes, builds cuDNN plans).
        min_reps, max_reps: timed calls, chosen so that the repetitions take about ``target_s`` seconds.
        target_s: time budget for the repetitions of one measurement.
        long_call_s: a call slower than this is timed once (dense attention at 1M tokens takes many seconds).
        rotate_bytes: rotate input copies until their total size reaches this (see :func:`input_copies`).
    """

    warmup: int = 1
    min_reps: int = 3
    max_reps: int = 25
    target_s: float = 1.0
    long_call_s: float = 3.0
    rotate_bytes: int = 256 << 20

    def __post_init__(self):
        if self.warmup < 0 or self.min_reps < 1 or self.max_reps < self.min_reps:
            raise ValueError(f"need warmup >= 0 and 1 <= min_reps <= max_reps, got {self}")
        if self.target_s <= 0 or self.long_call_s <= 0:
            raise ValueError("target_s and long_call_s must be > 0")


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``reps`` timed calls."""

    median_ms: float
    min_ms: float
    max_ms: float
    reps: int


def input_copies(bytes_per_copy: int, config: TimingConfig, limit: int = 4) -> int:
    """How many input copies to rotate through: enough to exceed ``config.rotate_bytes``, at most
    ``limit``."""
    if bytes_per_copy < 1:
        raise ValueError(f"bytes_per_copy must be >= 1, got {bytes_per_copy}")
    return max(1, min(limit, -(-config.rotate_bytes // bytes_per_copy)))


def time_call(fn: Callable[[int], object], device, config: Optional[TimingConfig] = None) -> Timing:
    """Time ``fn(rep)`` on ``device`` ("cuda"/"cpu" or a torch.device).

    Runs ``config.warmup`` untimed calls, one timed call to size the run, then repetitions until about
    ``config.target_s`` seconds (between ``min_reps`` and ``max_reps``; a single call if it is slower than
    ``long_call_s``). Returns the median over all timed calls.
    """
    config = config or TimingConfig()
    cuda = torch.device(device).type == "cuda"
    for i in range(config.warmup):
        fn(i)
    clock = _cuda_clock if cuda else _cpu_clock
    first = clock(fn, [config.warmup])[0]
    if first / 1e3 >= config.long_call_s:
        return Timing(first, first, first, 1)
    wanted = int(config.target_s / max(first / 1e3, 1e-6))
    reps = max(config.min_reps, min(config.max_reps, wanted))
    times = [first] + clock(fn, range(config.warmup + 1, config.warmup + reps))
    return Timing(statistics.median(times), min(times), max(times), len(times))


def time_reps(fn: Callable[[], object], reps: int, device="cuda") -> Timing:
    """``reps`` timed calls of ``fn()`` after one untimed call, however slow each call is: the GPU probes in
    ``bench/probes/`` compare variants at a fixed repetition count."""
    config = TimingConfig(warmup=1, min_reps=reps, max_reps=reps, long_call_s=math.inf)
    return time_call(lambda rep: fn(), device, config)


def _cuda_clock(fn, reps) -> list[float]:
    reps = list(reps)
    if not reps:
        return []
    starts = [torch.cuda.Event(enable_timing=True) for _ in reps]
    ends = [torch.cuda.Event(enable_timing=True) for _ in reps]
    torch.cuda.synchronize()
    for rep, start, end in zip(reps, starts, ends):
        start.record()
        fn(rep)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in zip(starts, ends)]


def _cpu_clock(fn, reps) -> list[float]:
    times = []
    for rep in reps:
        start = time.perf_counter()
        fn(rep)
        times.append((time.perf_counter() - start) * 1e3)
    return times
