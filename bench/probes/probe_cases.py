"""Shared by the vertical-slash probes: inputs, the CASES loop and the timing of one variant."""
# What the vertical-slash probes share: their inputs (Llama-3-8B head shapes, bf16, seed 0), the ``CASES``
# loop (``N:index_set`` pairs from the environment, one row list per case, the JSON rewritten after each case so a
# probe cut short by its time limit still leaves what it measured) and the timing of one variant.
import json
import os

import torch

from minference.bench.index_sets import load_head_stats
from minference.bench.timing import time_reps
from minference.kernels.launch import tma_wanted


def inputs(n: int):
    """``q (1, 32, n, 128)``, ``k``, ``v (1, 8, n, 128)`` standard normal in bf16 on the GPU, and every query head."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
    return q, k, torch.randn_like(k), torch.arange(32, device=dev, dtype=torch.int32)


def reps_for(n: int) -> int:
    """Timed calls per variant: 10 up to 128K tokens, 3 beyond."""
    return 10 if n <= 1 << 17 else 3


def timed_row(q: torch.Tensor, run, **fields) -> dict:
    """``fields`` plus the timing of ``run(out)`` into an output shaped like ``q`` and poisoned with NaN: one
    untimed call (which must write every element: ``nan`` says whether it did), then :func:`reps_for` timed ones."""
    out = torch.full_like(q, float("nan"))
    run(out)
    nan = bool(out.isnan().any())
    timing = time_reps(lambda: run(out), reps_for(q.shape[2]))
    return dict(fields, ms=timing.median_ms, min_ms=timing.min_ms, reps=timing.reps, nan=nan,
                kv_loads="TMA" if tma_wanted(q.device) else "pointers")


def run_cases(run_case, default_cases: str, filename: str) -> list:
    """``run_case(n, index_set, stats) -> rows`` for each case of ``CASES`` (default ``default_cases``), written
    to ``$OUT/filename``."""
    out_dir = os.environ.get("OUT", "/tmp")
    stats = load_head_stats()
    results = []
    for case in os.environ.get("CASES", default_cases).split(","):
        n, name = case.split(":")
        results += run_case(int(n), name, stats)
        torch.cuda.empty_cache()
        with open(os.path.join(out_dir, filename), "w") as f:
            json.dump(results, f, indent=1)
    return results
