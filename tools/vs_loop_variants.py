"""GPU probe: vertical-slash kernel variants in one call on the same inputs, for the notes in docs/benchmarks.md.

The library kernel's constexpr switches: the block walk loads its next offset one iteration ahead or not
(``OFFSETS_AHEAD``); the column loop loads its next chunk of columns ahead or inline (``COLUMNS_AHEAD``), with
masked K/V loads or unmasked ones whose scores are masked by key (``MASKED_COLUMNS``), and gathers a chunk's walked
flags from its columns loaded a chunk earlier or in the same iteration (``FLAGS_AHEAD``). Every variant computes
the same function (the output's largest difference from the library kernel is recorded). Usage, on a CUDA machine:
``CASES=131072:local_heavy,524288:measured OUT=dir python tools/vs_loop_variants.py`` (writes ``dir/vsprobe.json``);
``FIRST=2`` times only the first two variants.
"""
import json
import os

import torch
from probe_cases import inputs, run_cases  # tools/ is on sys.path when run as a script

from minference.kernels import sparse_attention as sa
from minference.index import build_vertical_slash_index
from minference.bench.index_sets import vertical_slash_indices
from minference.bench.timing import time_reps
from minference.patterns import VerticalSlash


def launch(q, k, v, index, heads, out, offsets_ahead, columns_ahead, masked_columns, flags_ahead=True):
    switches = dict(OFFSETS_AHEAD=offsets_ahead, COLUMNS_AHEAD=columns_ahead, MASKED_COLUMNS=masked_columns,
                    FLAGS_AHEAD=flags_ahead)
    sa.vertical_slash_forward(q, k, v, index, heads, out, launch=switches)


VARIANTS = {  # label: (OFFSETS_AHEAD, COLUMNS_AHEAD, MASKED_COLUMNS[, FLAGS_AHEAD])
    "current (ahead, chunk-ahead unmasked, flags from keys loaded a chunk earlier)": (True, True, False),
    "before FLAGS_AHEAD (flags gathered from keys loaded in the same iteration)": (True, True, False, False),
    "old (inline offsets, inline masked)": (False, False, True),
    "ahead + inline masked": (True, False, True),
    "ahead + inline unmasked": (True, False, False),
    "ahead + chunk-ahead masked": (True, True, True),
    "inline + chunk-ahead unmasked": (False, True, False),
}


def run_case(n: int, name: str, stats) -> list:
    q, k, v, heads = inputs(n)
    vi, si = vertical_slash_indices(name, n, 1, 32, VerticalSlash(1000, 6096), device=q.device, stats=stats)
    index = build_vertical_slash_index(n, vi, si)
    reference, rows = None, []
    reps = 3 if n >= 1 << 19 else 10
    for label, flags in list(VARIANTS.items())[:int(os.environ.get("FIRST", len(VARIANTS)))]:
        out = torch.full_like(q, float("nan"))
        timing = time_reps(lambda: launch(q, k, v, index, heads, out, *flags), reps)
        if reference is None:
            reference = out.clone()
        diff = float((out.float() - reference.float()).abs().max())
        row = dict(n=n, index_set=name, variant=label, ms=timing.median_ms, min_ms=timing.min_ms,
                   max_ms=timing.max_ms, reps=timing.reps, max_diff_vs_current=diff)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    run_cases(run_case, "131072:local_heavy,131072:measured,1048576:local_heavy,1048576:measured", "vsprobe.json")


if __name__ == "__main__":
    main()
