"""The 128-token cover that ``bench/probes/vs_grid_probe.py`` prices: for every pair of 64-token query blocks it lists
exactly the 128-token key blocks their walked diagonals touch (a superset of the 64-token mask, nothing more)."""
import sys
from pathlib import Path

import pytest
import torch

from minference.index import build_vertical_slash_index

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "probes"))
import vs_grid_probe  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_cover_lists_exactly_the_128_token_blocks_the_walked_diagonals_touch(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 64 * int(torch.randint(3, 40, (1,), generator=gen))
    slash = torch.randint(0, n, (2, 3, 7), generator=gen)
    index = build_vertical_slash_index(n, torch.zeros(2, 3, 1, dtype=torch.long), slash)
    cover = vs_grid_probe.grid128_blocks(index)
    blocks = index.block_present.shape[-1]
    assert cover.shape[2] == -(-blocks // 2)
    for b in range(2):
        for h in range(3):
            offsets = [p for p in range(blocks) if index.block_present[b, h, p]]
            for pair in range(cover.shape[2]):
                listed = {int(x) for x in cover[b, h, pair] if x >= 0}
                rows = [m for m in (2 * pair, 2 * pair + 1) if m < blocks]
                touched = {(m - p) // 2 for m in rows for p in offsets if p <= m}
                assert touched <= listed, (pair, offsets)
                if len(rows) == 2:  # a last, single 64-token block may list one block its absent partner would
                    assert listed == touched, (pair, offsets)
