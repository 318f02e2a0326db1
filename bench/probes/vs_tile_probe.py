"""Decision measured: the 128-token vertical-slash grid up to WIDE_GRID_MAX_TOKENS."""
# GPU probe: the vertical-slash kernel on a 128-token grid (128-row programs on 8 warps over 128 x 128 tiles and
# 128-column chunks) against the 64-token one, both against cuDNN in the same process.
#
# The 64 x 64 body tops out near 77 % of cuDNN on an H200 and the 128 x 128 one near 90 % (docs/benchmarks.md). On a
# 128-token grid each diagonal block covers four times the area, so the kernel computes a little more of the matrix
# (the cover of the same slashes) in fewer, faster tiles. Rows report each grid's density (executed tiles over the
# causal tiles of that grid), its time, and its kept share of cuDNN (density x speedup): the kernels' efficiency target.
# Usage, on a CUDA machine: ``CASES=131072:local_heavy OUT=dir python bench/probes/vs_tile_probe.py`` (writes
# ``dir/vstile.json``); ``FLIP=1`` also times the 128-token grid in the other loop order
# (:func:`~minference.kernels.vertical_slash.loop_order`), ``LAUNCH='{"num_stages": 2}'`` with other launch options.
import json
import os

import torch.nn.functional as F
from probe_cases import inputs, reps_for, run_cases, timed_row  # bench/probes/ is on sys.path when run as a script
from torch.nn.attention import SDPBackend, sdpa_kernel

from minference.bench.index_sets import vertical_slash_indices
from minference.bench.timing import time_reps
from minference.index import build_vertical_slash_index
from minference.index.tiles import vertical_slash_density
from minference.kernels import vertical_slash as sa
from minference.patterns import VerticalSlash


def run_case(n: int, name: str, stats) -> list:
    q, k, v, heads = inputs(n)
    vertical, slash = vertical_slash_indices(name, n, 1, 32, VerticalSlash(1000, 6096), device=q.device, stats=stats)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn = time_reps(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                          reps_for(n))
    rows = [dict(n=n, index_set=name, variant="cudnn", ms=cudnn.median_ms, min_ms=cudnn.min_ms)]
    print(json.dumps(rows[-1]), flush=True)
    variants = [(64, None), (128, None)]
    if os.environ.get("FLIP") == "1":
        variants.append((128, {switch: not on for switch, on in sa.loop_order(n).items()}))
    if os.environ.get("LAUNCH"):
        variants.append((128, json.loads(os.environ["LAUNCH"])))
    for tile, launch in variants:
        index = build_vertical_slash_index(n, vertical, slash, tile)
        row = timed_row(q, lambda out: sa.vertical_slash_forward(q, k, v, index, heads, out, launch=launch),
                        n=n, index_set=name, variant=f"vertical_slash tile {tile}", launch=launch)
        density = float(vertical_slash_density(index, n).mean())
        speedup = cudnn.median_ms / row["ms"]
        rows.append(dict(row, density=density, speedup_vs_cudnn=speedup, kept_share_of_cudnn=density * speedup))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    run_cases(run_case, "32768:local_heavy,32768:measured,131072:local_heavy,131072:measured", "vstile.json")


if __name__ == "__main__":
    main()
