"""Decision measured: vertical-slash diagonals on the 128-token grid (WIDE_GRID_MAX_COVER)."""
# GPU probe: what a vertical-slash kernel on a 128-token grid would gain or lose against the 64-token one.
#
# The 64 x 64 body tops out near 77 % of cuDNN on an H200 and the 128 x 128 one near 90 % (docs/benchmarks.md), but a
# diagonal on a 128-token grid covers four times the area per tile. This probe times the diagonal part of real index
# sets both ways, with kernels the library already has: the vertical-slash kernel over a head's block-diagonal offsets
# ``P`` on the 64-token grid (one column, so the column loop is negligible), against the 128 x 128 block-sparse kernel
# over the same diagonals on a 128-token grid (query block ``M`` walks key blocks ``M - q`` for ``q`` in
# ``{floor(p / 2), ceil(p / 2) : p in P}``, the smallest 128-grid cover). Their masks differ (the cover is a superset),
# so only times, areas and NaN-freedom are compared. Usage, on a CUDA machine:
# ``CASES=32768:local_heavy,131072:measured OUT=dir python bench/probes/vs_grid_probe.py`` (writes ``dir/vsgrid.json``).
import json

import torch
from probe_cases import inputs, run_cases, timed_row  # bench/probes/ is on sys.path when run as a script

from minference.bench.index_sets import vertical_slash_indices
from minference.index import build_block_sparse_index, build_vertical_slash_index
from minference.kernels.block_sparse import block_sparse_forward
from minference.kernels.vertical_slash import vertical_slash_forward
from minference.patterns import VerticalSlash


def grid128_blocks(index) -> torch.Tensor:
    """``(B, H, R128, K)`` key-block ids (``-1`` unused) covering the walked 64-grid offsets on the 128-token grid."""
    present = index.block_present.bool()
    batch, heads, blocks = present.shape
    blocks128 = -(-blocks // 2)
    offsets = torch.arange(blocks, device=present.device)
    cover = torch.zeros(batch, heads, blocks128 + 1, dtype=torch.bool, device=present.device)
    for q in (offsets // 2, (offsets + 1) // 2):
        cover.scatter_(2, torch.where(present, q, blocks128).expand(batch, heads, -1), present)  # only True lands
    cover = cover[..., :blocks128]
    ids = torch.arange(blocks128, device=present.device)
    q_sorted = torch.where(cover, ids, blocks128).sort(dim=-1).values[..., : int(cover.sum(-1).max())]
    rows = ids.view(1, 1, -1, 1)
    keys = rows - q_sorted.unsqueeze(2)
    return torch.where((q_sorted.unsqueeze(2) < blocks128) & (keys >= 0), keys, -1).to(torch.int32)


def run_case(n: int, name: str, stats) -> list:
    q, k, v, heads = inputs(n)
    dev = q.device
    _, slash = vertical_slash_indices(name, n, 1, 32, VerticalSlash(1000, 6096), device=dev, stats=stats)
    one_column = torch.zeros(1, 32, 1, dtype=torch.int32, device=dev)
    index = build_vertical_slash_index(n, one_column, slash)
    block_index = build_block_sparse_index(grid128_blocks(index))
    runs = {
        "64-token grid (vertical-slash kernel, 64 x 64)":
            (lambda out: vertical_slash_forward(q, k, v, index, heads, out), int(index.block_count.sum()) * 64 * 64),
        "128-token grid (block-sparse kernel, 128 x 128)":
            (lambda out: block_sparse_forward(q, k, v, block_index, 128, heads, out, wide=True),
             int(block_index.block_count.sum()) * 128 * 128),
    }
    rows = []
    for label, (run, area) in runs.items():
        rows.append(timed_row(q, run, n=n, index_set=name, variant=label, computed_elements=area))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    run_cases(run_case, "32768:local_heavy,32768:measured,131072:local_heavy,131072:measured", "vsgrid.json")


if __name__ == "__main__":
    main()
