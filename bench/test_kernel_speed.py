"""Kernel micro-benchmarks (pytest-benchmark): every pattern × index set, FlexAttention on the same mask, and
the dense SDPA baselines, over the sweep chosen by ``MINFERENCE_BENCH_SWEEP`` (default ``quick``).

    pytest bench/test_kernel_speed.py -m bench --benchmark-autosave pytest bench/test_kernel_speed.py -m bench
    --benchmark-compare

Every benchmark's ``extra_info`` holds the full row (pattern, budget, index set, N, batch, density, ms,
dense-equivalent and kept TFLOP/s, speedups vs FA2/cuDNN/Flex, estimation ms, GPU and versions).
"""

from __future__ import annotations

import dataclasses

import pytest

from minference.bench import flex as flex_masks
from minference.bench.kernels import budget_label, dense_call, estimate_call, pattern_cases
from minference.bench.shapes import DENSE_METHODS
from minference.bench.suite import SWEEP, make_row, record, run_benchmark
from minference.patterns import AShape, BlockSparse

pytestmark = pytest.mark.bench


def _pattern_id(pattern) -> str:
    """The pattern's name, plus the block size of block-sparse patterns other than the 64-token default, so the ids
    of earlier saved runs still match (``--benchmark-compare``)."""
    if isinstance(pattern, BlockSparse) and pattern.block_size != 64:
        return f"{pattern.name}{pattern.block_size}"
    return pattern.name


def _pattern_cases():
    for shape in SWEEP.shapes:
        for pattern in SWEEP.patterns:
            sets = ["static"] if isinstance(pattern, AShape) else list(SWEEP.index_sets)
            for index_set in sets:
                if index_set == "random" and SWEEP.random_max_n and shape.n > SWEEP.random_max_n:
                    continue
                methods = ("flex", "minference") if SWEEP.flex else ("minference",)
                for method in methods:  # Flex first, so the minference row can report its speedup over it
                    if method == "flex" and SWEEP.flex_max_n and shape.n > SWEEP.flex_max_n:
                        continue
                    yield pytest.param(
                        shape,
                        pattern,
                        index_set,
                        method,
                        id=f"{shape.label}-{method}-{_pattern_id(pattern)}-{index_set}",
                    )


def _dense_cases():
    for shape in SWEEP.shapes:
        if SWEEP.dense_max_n and shape.n > SWEEP.dense_max_n:
            continue
        for method in DENSE_METHODS:
            yield pytest.param(shape, method, id=f"{shape.label}-{method}")


@pytest.mark.parametrize("shape, method", list(_dense_cases()))
def test_dense(benchmark, suite_state, shape, method):
    benchmark.group = f"attention {shape.label}"
    try:
        call = dense_call(method, suite_state.inputs_for(shape), "cuda")
    except RuntimeError as error:
        pytest.skip(f"{method} unavailable here: {error}")
    ms = run_benchmark(benchmark, call)
    suite_state.baselines.setdefault((shape, method), ms)
    record(
        benchmark,
        make_row(
            method,
            "dense",
            "",
            "–",
            shape,
            density=1.0,
            ms=ms,
            backend="sdpa",
            note=getattr(call, "note", ""),
        ),
        suite_state,
        shape,
    )


@pytest.mark.parametrize("shape, pattern, index_set, method", list(_pattern_cases()))
def test_sparse(benchmark, suite_state, shape, pattern, index_set, method):
    benchmark.group = f"attention {shape.label}"
    inputs = suite_state.inputs_for(shape)
    one_set = dataclasses.replace(
        SWEEP, index_sets=(index_set,) if index_set != "static" else SWEEP.index_sets
    )
    label, density, ours, make_flex = next(
        pattern_cases(pattern, one_set, shape, "cuda", suite_state.stats)
    )
    budget = budget_label(pattern)
    if method == "flex":
        block_mask, density = make_flex()
        flex = flex_masks.flex_attention_compiled()
        ms = run_benchmark(benchmark, lambda rep: flex(*inputs(rep), block_mask=block_mask, enable_gqa=True))
        suite_state.baselines[("flex", shape, pattern.name, budget, label)] = ms
        record(
            benchmark,
            make_row(
                "flex", pattern.name, budget, label, shape, density=density, ms=ms, backend="flex_attention"
            ),
            suite_state,
            shape,
        )
        return
    estimate_ms = 0.0
    if not isinstance(pattern, AShape):
        estimate_ms = suite_state.baseline_ms(
            ("estimate", shape, pattern), estimate_call(pattern, inputs, shape.n)
        )
    ms = run_benchmark(benchmark, lambda rep: ours(inputs, rep))
    record(
        benchmark,
        make_row(
            "minference",
            pattern.name,
            budget,
            label,
            shape,
            density=density,
            ms=ms,
            estimate_ms=estimate_ms,
            backend="triton",
        ),
        suite_state,
        shape,
    )
