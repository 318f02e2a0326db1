"""What the pytest-benchmark kernel suite (``bench/test_kernel_speed.py``) shares: the sweep, one shape's inputs
at a time, baselines timed once, and turning a benchmark into a full row in ``extra_info``.

``MINFERENCE_BENCH_SWEEP`` picks the sweep (default ``quick``; ``full`` is the 8K-1M grid of the targets). Nothing here
touches the GPU at import time, and pytest is not imported: ``benchmark`` is pytest-benchmark's fixture
object.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable, Optional

import torch

from .index_sets import load_head_stats
from .kernels import Inputs, Row, add_derived, dense_call
from .report import machine_info
from .shapes import DENSE_METHODS, SWEEPS, Shape
from .timing import TimingConfig, input_copies, time_call

SWEEP = SWEEPS[os.environ.get("MINFERENCE_BENCH_SWEEP", "quick")]
"""The sweep the suite is parametrised over."""
DTYPE = torch.bfloat16
TIMING = TimingConfig()


class SuiteState:
    """Inputs of the current shape (one shape in memory at a time) and per-shape baseline times."""

    def __init__(self):
        self.shape: Optional[Shape] = None
        self.inputs: Optional[Inputs] = None
        self.baselines: dict = {}
        self.stats = load_head_stats()
        self._machine: Optional[dict] = None

    @property
    def machine(self) -> dict:
        if self._machine is None:
            self._machine = machine_info("cuda", DTYPE)
        return self._machine

    def inputs_for(self, shape: Shape) -> Inputs:
        if shape != self.shape:
            self.inputs = None
            torch.cuda.empty_cache()
            self.inputs = Inputs(shape, "cuda", DTYPE, input_copies(shape.io_bytes(DTYPE.itemsize), TIMING))
            self.shape = shape
        return self.inputs

    def baseline_ms(self, key: tuple, fn: Callable[[int], object]) -> float:
        """Median ms of ``fn`` timed once per run under ``key`` (dense baselines, estimation)."""
        if key not in self.baselines:
            self.baselines[key] = time_call(fn, "cuda", TIMING).median_ms
        return self.baselines[key]

    def dense_rows(self, shape: Shape) -> list[Row]:
        """The dense baselines of ``shape`` as rows (timed on first use), for the speedups."""
        rows = []
        for method in ("sdpa_flash", "sdpa_cudnn"):
            try:
                ms = self.baseline_ms((shape, method), dense_call(method, self.inputs_for(shape), "cuda"))
            except RuntimeError:
                continue
            rows.append(make_row(method, "dense", "", "–", shape, density=1.0, ms=ms))
        return rows


def make_row(method, pattern, budget, index_set, shape: Shape, **fields) -> Row:
    """A :class:`~minference.bench.kernels.Row` for ``shape`` in the suite's dtype."""
    return Row(
        method,
        pattern,
        budget,
        index_set,
        shape.n,
        shape.batch,
        shape.heads,
        shape.kv_heads,
        shape.head_dim,
        str(DTYPE).replace("torch.", ""),
        **fields,
    )


def run_benchmark(benchmark, call: Callable[[int], object]) -> float:
    """Benchmark ``call(rep)`` (rotating inputs) with a CUDA sync per round; returns the median in ms.

    One untimed call compiles/autotunes, one more sizes the run to about ``TIMING.target_s`` seconds.
    """
    counter = itertools.count()

    def run():
        call(next(counter))
        torch.cuda.synchronize()

    sizing = time_call(call, "cuda", TimingConfig(warmup=TIMING.warmup, min_reps=1, max_reps=1))
    rounds = max(1, min(TIMING.max_reps, int(TIMING.target_s / max(sizing.median_ms / 1e3, 1e-6))))
    if sizing.median_ms / 1e3 < TIMING.long_call_s:
        rounds = max(TIMING.min_reps, rounds)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)
    return benchmark.stats.stats.median * 1e3


def record(benchmark, row: Row, state: SuiteState, shape: Shape) -> None:
    """Fill the row's derived fields against this shape's baselines and store every field in
    ``extra_info``."""
    row.machine = state.machine
    others = state.dense_rows(shape) if row.method not in DENSE_METHODS else []
    flex_ms = state.baselines.get(("flex", shape, row.pattern, row.budget, row.index_set))
    if flex_ms is not None and row.method == "minference":
        others.append(
            make_row("flex", row.pattern, row.budget, row.index_set, shape, density=None, ms=flex_ms)
        )
    add_derived([row, *others])
    benchmark.extra_info.update(row.as_dict())
