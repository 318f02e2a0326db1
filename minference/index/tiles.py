"""How much work each kernel does: executed tiles, as a fraction of the causal tiles of dense attention.

The counts mirror the kernels' loops (``minference/kernels/``), not the masks: a tile is
counted when the kernel loads it, even if most of its lanes are masked out, because that is what costs time.
The result can therefore exceed 1 (e.g. a vertical-slash index whose column tiles mostly fall in blocks it
also walks).
"""

from __future__ import annotations

import functools

import torch

from typing import Optional

from ..patterns import AShape, Dense
from .block_sparse import BlockSparseIndex
from .vertical_slash import TILE, VerticalSlashIndex


def causal_tiles(n: int, tile: int = TILE) -> int:
    """Tiles dense causal attention computes with ``tile x tile`` tiles: ``R (R + 1) / 2``, ``R = ceil(n /
    tile)``."""
    if n < 1 or tile < 1:
        raise ValueError(f"n and tile must be >= 1, got n={n}, tile={tile}")
    rows = -(-n // tile)
    return rows * (rows + 1) // 2


def walked_tiles(index: VerticalSlashIndex) -> torch.Tensor:
    """``(B, H)`` int64 diagonal tiles of the index's grid (``T x T``, ``T = index.tile``) the kernel walks: per
    query block, ``block_count`` blocks."""
    return index.block_count.long().sum(dim=-1)


def gathered_tiles(index: VerticalSlashIndex) -> torch.Tensor:
    """``(B, H)`` int64 column chunks the vertical-slash kernel gathers: per query block ``ceil(column_count / T)``
    chunks of ``T`` columns, ``T = index.tile``."""
    return ((index.column_count.long() + index.tile - 1) // index.tile).sum(dim=-1)


def vertical_slash_tiles(index: VerticalSlashIndex) -> torch.Tensor:
    """``(B, H)`` int64 tiles of the index's grid: walked blocks plus gathered column chunks."""
    return walked_tiles(index) + gathered_tiles(index)


def block_sparse_tiles(index: BlockSparseIndex) -> torch.Tensor:
    """``(B, H)`` int64 key blocks a block-sparse index lists, over all its query blocks."""
    return index.block_count.long().sum(dim=-1)


def vertical_slash_density(index: VerticalSlashIndex, n: int) -> torch.Tensor:
    """``(B, H)`` float64 density of a vertical-slash index built for length ``n``: its tiles over the causal tiles
    of dense attention on the same grid."""
    return vertical_slash_tiles(index).double() / causal_tiles(n, index.tile)


def block_sparse_density(index: BlockSparseIndex, n: int, block_size: int = 64) -> torch.Tensor:
    """``(B, H)`` float64 density of a block-sparse index (``block_size`` tiles) built for length ``n``."""
    return block_sparse_tiles(index).double() / causal_tiles(n, block_size)


@functools.lru_cache(maxsize=256)
def a_shape_tiles(n: int, sink: int, local: int, tile: int = TILE) -> int:
    """Tiles the A-shape kernel walks: per query block ``m``, the sink blocks then the window blocks up to
    ``m`` (cached: a layer asks for the same few ``(n, sink, local)`` every call)."""
    if sink < 0 or local < 1:
        raise ValueError(f"sink must be >= 0 and local >= 1, got sink={sink}, local={local}")
    total = 0
    sink_blocks = -(-sink // tile)
    for m in range(-(-n // tile)):
        window_start = max(max(m * tile - local + 1, 0) // tile, sink_blocks)
        total += min(sink_blocks, m + 1) + max(0, m - window_start + 1)
    return total


def a_shape_density(n: int, sink: int, local: int) -> float:
    """Density of an A-shape head at length ``n`` (``local`` clipped to ``n`` as the op does)."""
    return a_shape_tiles(n, sink, min(local, n)) / causal_tiles(n)


def executed_tiles(n: int, per_head: list, vertical_slash_index: Optional[VerticalSlashIndex], block_indexes: dict,
                   batch: Optional[int] = None) -> torch.Tensor:
    """Tiles the launches would execute, summed over batch and heads, in units of 64 x 64 tiles (a 0-d tensor on
    the index's device; A-shape and dense heads among ``per_head`` are counted on the host, exactly as their kernel
    walks them, for ``batch`` rows: by default the indexes' batch). ``block_indexes`` maps block sizes to indexes."""
    total = 0
    if vertical_slash_index is not None:
        scale = (vertical_slash_index.tile // TILE) ** 2  # a 128 x 128 tile costs four of 64 x 64
        total = total + vertical_slash_tiles(vertical_slash_index).sum() * scale
        batch = batch or vertical_slash_index.block_count.shape[0]
    for block_size, index in block_indexes.items():
        # a block of block_size^2 scores costs (block_size / 64)^2 tiles of 64 x 64
        total = total + block_sparse_tiles(index).sum() * block_size * block_size / (TILE * TILE)
        batch = batch or index.block_count.shape[0]
    host = 0
    for pattern in per_head:
        if isinstance(pattern, AShape):
            host += a_shape_tiles(n, pattern.sink, min(pattern.local, n))
        elif isinstance(pattern, Dense):
            host += causal_tiles(n)
    return total + host * (batch or 1)
