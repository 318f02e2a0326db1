"""Decision measured: Dense heads of a mixed list through SDPA; loop_order(n) switches at 256K."""
# GPU probe: Dense heads of a mixed pattern list through SDPA (``enable_gqa``) against the window kernel at
# ``local = N``, timed as whole ``sparse_attention`` calls in one process, for docs/benchmarks.md. Also times a
# vertical-slash launch at 512K on the measured set with the loop order :func:`loop_order` picks against the other.
# Usage, on a CUDA machine: ``OUT=dir python bench/probes/dense_heads_probe.py`` (writes ``dir/denseprobe.json``).
import json
import os

import torch

import minference as mi
from minference import planning
from minference.bench.index_sets import load_head_stats, vertical_slash_indices
from minference.bench.timing import time_reps
from minference.index import build_vertical_slash_index
from minference.kernels import vertical_slash as sa


def llama_inputs(n: int):
    """Random bf16 q, k, v at Llama-3-8B head shapes (32 query heads, 8 K/V heads, head_dim 128)."""
    torch.manual_seed(0)
    q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)
    return q, k, torch.randn_like(k)


def mixed_list_row(n: int, dense_share: str) -> dict:
    q, k, v = llama_inputs(n)
    if dense_share == "half":
        patterns = [mi.AShape(128, 4096), mi.Dense()] * 16
    else:  # a quarter, not uniform over K/V heads: one SDPA call per K/V head that has Dense heads
        patterns = [mi.Dense() if h % 4 == 0 and h < 24 else mi.AShape(128, 4096) for h in range(32)]
    out = torch.empty_like(q)
    reps = 4 if n >= 1 << 17 else 10
    routed = time_reps(lambda: mi.sparse_attention(q, k, v, patterns, validate=False, out=out), reps).median_ms
    routed_out = out.clone()
    original = planning.dense_heads_to_sdpa
    planning.dense_heads_to_sdpa = lambda *args: False
    try:
        kernel = time_reps(lambda: mi.sparse_attention(q, k, v, patterns, validate=False, out=out), reps).median_ms
    finally:
        planning.dense_heads_to_sdpa = original
    dense = [h for h, p in enumerate(patterns) if isinstance(p, mi.Dense)]
    return dict(n=n, case=f"a_shape(128,4096) + dense heads ({dense_share})", dense_heads=len(dense),
                routed_ms=routed, kernel_ms=kernel, speedup=kernel / routed,
                max_diff=float((routed_out[:, dense].float() - out[:, dense].float()).abs().max()),
                other_heads_equal=bool(torch.equal(
                    routed_out[:, [h for h in range(32) if h not in dense]],
                    out[:, [h for h in range(32) if h not in dense]])))


def loop_order_row(n: int) -> dict:
    q, k, v = llama_inputs(n)
    vi, si = vertical_slash_indices("measured", n, 1, 32, mi.VerticalSlash(1000, 6096), device="cuda",
                                    stats=load_head_stats())
    index = build_vertical_slash_index(n, vi, si)
    heads = torch.arange(32, device="cuda", dtype=torch.int32)
    out = torch.empty_like(q)
    picked = time_reps(lambda: sa.vertical_slash_forward(q, k, v, index, heads, out), 3).median_ms
    other = {name: not value for name, value in sa.loop_order(n).items()}
    flipped = time_reps(lambda: sa.vertical_slash_forward(q, k, v, index, heads, out, launch=other), 3).median_ms
    return dict(n=n, case="vertical_slash measured, loop_order(n) vs the other order", picked=sa.loop_order(n),
                picked_ms=picked, other_ms=flipped, speedup=flipped / picked)


def main():
    rows = [mixed_list_row(n, share) for n in (32768, 131072) for share in ("half", "quarter")]
    rows += [loop_order_row(n) for n in (131072, 524288)]
    for row in rows:
        print(json.dumps(row), flush=True)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "denseprobe.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
