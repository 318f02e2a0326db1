"""Tile counts behind the benchmark's density column, checked on hand-worked examples."""

from __future__ import annotations

import pytest
import torch

from minference.bench.density import (
    a_shape_density,
    a_shape_tiles,
    block_sparse_density,
    causal_tiles,
    vertical_slash_density,
    vertical_slash_tiles,
)
from minference.index import build_block_sparse_index, build_vertical_slash_index


def test_causal_tiles_is_the_lower_triangle_with_diagonal():
    assert causal_tiles(512) == 8 * 9 // 2
    assert causal_tiles(130) == 6  # 3 row blocks, the last one partial
    assert causal_tiles(256, tile=128) == 3
    with pytest.raises(ValueError, match="n and tile"):
        causal_tiles(0)


def test_vertical_slash_density_hand_worked():
    # n = 512: 8 row blocks, 36 causal tiles.
    # Slashes 0 and 70 -> block-diagonal offsets {0} and {1, 2}:
    #   row blocks 0..7 walk 1, 2, 3, 3, 3, 3, 3, 3 = 21 tiles.
    # Columns 5 and 130: row block m gathers those < 64 m: 0, 1, 1, 2, 2, 2, 2, 2
    #   -> one column tile from m = 1 on: 7 tiles.
    index = build_vertical_slash_index(512, torch.tensor([[[5, 130]]]), torch.tensor([[[0, 70]]]))
    assert vertical_slash_tiles(index).tolist() == [[28]]
    assert vertical_slash_density(index, 512).item() == pytest.approx(28 / 36)


def test_vertical_slash_counts_a_column_tile_per_64_columns():
    columns = torch.arange(0, 130).view(
        1, 1, -1
    )  # 130 columns: row block 3 (rows 192..) gathers 130 -> 3 tiles
    index = build_vertical_slash_index(256, columns, torch.tensor([[[0]]]))
    # walked: 4 diagonal tiles; gathered per row block: 0, 64 -> 1, 128 -> 2, 130 -> 3
    assert vertical_slash_tiles(index).tolist() == [[4 + 0 + 1 + 2 + 3]]


def test_vertical_slash_density_on_the_128_token_grid_hand_worked():
    # n = 512: 4 row blocks of 128, 10 causal 128 x 128 tiles.
    # Slashes 0 and 70 -> block-diagonal offsets {0} and {0, 1}: row blocks 0..3 walk 1, 2, 2, 2 = 7 tiles.
    # Columns 5 and 130: row block m gathers those < 128 m: 0, 1, 1, 2 -> one column chunk from m = 1 on: 3.
    index = build_vertical_slash_index(512, torch.tensor([[[5, 130]]]), torch.tensor([[[0, 70]]]), 128)
    assert vertical_slash_tiles(index).tolist() == [[10]]
    assert vertical_slash_density(index, 512).item() == pytest.approx(10 / 10)


def test_block_sparse_density_hand_worked():
    # n = 256, 64-blocks: rows list [-1], [0], [0, 0], [1]; the diagonal block is always added -> 1, 2, 2, 2.
    block_idx = torch.tensor([[[[-1, -1], [0, -1], [0, 0], [1, -1]]]])
    index = build_block_sparse_index(block_idx)
    assert block_sparse_density(index, 256).item() == pytest.approx(7 / 10)


def test_a_shape_tiles_hand_worked():
    # n = 256, sink 64, local 64: row block m walks the sink block plus window blocks max(1, (64m-63)//64)..m:
    # m=0: 1; m=1: 1+1; m=2: 1+2; m=3: 1+2 -> 9 of 10.
    assert a_shape_tiles(256, 64, 64) == 9
    assert a_shape_density(256, 64, 64) == pytest.approx(0.9)
    assert a_shape_density(4096, 0, 4096) == pytest.approx(1.0)  # a window covering everything is dense
    with pytest.raises(ValueError, match="sink"):
        a_shape_tiles(256, -1, 64)
