"""Vertical-slash choices -> tile index, on a grid of ``T``-token tiles (``T`` = 64, or 128: see :data:`TILES`).

A diagonal at offset ``o = i - j`` crosses the ``T``-row query block ``m`` in key blocks ``m - o // T`` and
``m - ceil(o / T)``. Both are a fixed *block-diagonal offset* ``p`` from the query block, the same for every query
block, so a head's slashes become one short sorted list of offsets ``p`` (always including ``p = 0``, the block that
holds each row's own diagonal) instead of a per-row-block list. Query block ``m`` walks key blocks ``m - p`` for the
``block_count[m]`` offsets with ``p <= m``.

Vertical columns are sorted and de-duplicated once per head. Query block ``m`` gathers the first
``column_count[m]`` of them (those left of its first row); the kernel skips a column whose key block it already
walks (``block_present``), so nothing is counted twice.

Which keys a query keeps is stated once, by :func:`vertical_slash_keeps` on tables derived from the index
(:func:`vertical_slash_keep`); the torch backend's rows and the Flex baseline evaluate it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import check_positive_int
from ..patterns.vertical_slash import TILE, TILES
from ._rows import batch_heads, tile_rows


class VerticalSlashIndex(NamedTuple):
    block_offsets: torch.Tensor
    """``(B, H, R)`` int32: walked block-diagonal offsets ``p``, ascending, padded with ``R``."""
    block_count: torch.Tensor
    """``(B, H, R)`` int32: how many offsets query block ``m`` walks (those ``<= m``)."""
    block_present: torch.Tensor
    """``(B, H, R)`` int8: 1 where offset ``p`` is walked."""
    columns: torch.Tensor
    """``(B, H, NV)`` int32: vertical columns, ascending and unique, padded with ``N``."""
    column_count: torch.Tensor
    """``(B, H, R)`` int32: how many columns query block ``m`` gathers (those ``< T m``)."""
    tile: int = TILE
    """``T``: the grid's tile side in tokens (query blocks, walked key blocks and column chunks)."""


def build_vertical_slash_index(n: int, vertical_idx: torch.Tensor, slash_idx: torch.Tensor,
                               tile: int = TILE) -> VerticalSlashIndex:
    """Build the tile index for key columns ``vertical_idx (B, H, NV)`` and diagonal offsets ``slash_idx (B, H, NS)``
    on the ``tile``-token grid (one of :data:`TILES`).

    Values must already lie in ``[0, n)`` (the public ops check it); any order, duplicates allowed. Runs on the
    tensors' device with no host synchronisation.
    """
    check_tile(tile)
    batch, heads = slash_idx.shape[:2]
    device = slash_idx.device
    blocks = -(-n // tile)
    offsets = slash_idx.long()
    present = torch.zeros(batch, heads, blocks + 1, dtype=torch.bool, device=device)
    present.scatter_(2, (offsets // tile).clamp_max(blocks), True)
    present.scatter_(2, ((offsets + tile - 1) // tile).clamp_max(blocks), True)
    present = present[..., :blocks]
    present[..., 0] = True
    block_ids = torch.arange(blocks, device=device)
    block_offsets = torch.where(present, block_ids, blocks).sort(dim=-1).values.to(torch.int32)
    block_count = present.cumsum(dim=-1, dtype=torch.int32)

    columns = vertical_idx.long().sort(dim=-1).values
    repeated = torch.zeros_like(columns, dtype=torch.bool)
    repeated[..., 1:] = columns[..., 1:] == columns[..., :-1]
    columns = torch.where(repeated, n, columns).sort(dim=-1).values.contiguous()
    block_starts = (block_ids * tile).expand(batch, heads, blocks).contiguous()
    column_count = torch.searchsorted(columns, block_starts).to(torch.int32)
    return VerticalSlashIndex(
        block_offsets.contiguous(),
        block_count.contiguous(),
        present.to(torch.int8).contiguous(),
        columns.to(torch.int32),
        column_count.contiguous(),
        tile,
    )


def check_tile(tile) -> None:
    """``tile`` must be one of :data:`TILES` (ValueError/TypeError naming it otherwise)."""
    check_positive_int("tile", tile)
    if tile not in TILES:
        raise ValueError(f"tile must be one of {TILES}, got {tile}")


class VerticalSlashKeep(NamedTuple):
    """The two tables the vertical-slash predicate reads, derived once from an index
    (:func:`vertical_slash_keep`)."""

    walked: torch.Tensor
    """``(B, H, R)`` bool: block-diagonal offset ``p`` is walked, by every query block ``m >= p``."""
    column: torch.Tensor
    """``(B, H, N)`` bool: key ``j`` is a vertical column."""
    tile: int = TILE
    """``T``, the index's grid."""


def vertical_slash_keep(index: VerticalSlashIndex, n: int) -> VerticalSlashKeep:
    """The tables :func:`vertical_slash_keeps` reads, for an index built for length ``n``."""
    batch, heads = index.columns.shape[:2]
    column = torch.zeros(batch, heads, n + 1, dtype=torch.bool, device=index.columns.device)
    column.scatter_(2, index.columns.long().clamp_max(n), True)
    return VerticalSlashKeep(index.block_present.bool(), column[..., :n].contiguous(), index.tile)


def vertical_slash_walks(keep: VerticalSlashKeep, b, h, q_block, k_block) -> torch.Tensor:
    """The tile rule, on broadcastable integer tensors of batch rows ``b``, heads ``h`` and tile coordinates: query
    block ``q_block`` walks key block ``k_block`` (the whole tile; only the diagonal one is cut causally).

    The kernel walks the first ``block_count[m]`` offsets, which the builder makes exactly the walked ``p <= m``.
    """
    return (k_block <= q_block) & keep.walked[b, h, (q_block - k_block).clamp(min=0)]


def vertical_slash_gathers(keep: VerticalSlashKeep, b, h, q_block, kv) -> torch.Tensor:
    """The column rule: query block ``q_block`` gathers key ``kv`` when it is a vertical column strictly left of
    the block's diagonal tile (the first ``column_count[m]`` columns; those inside the diagonal tile are walked)."""
    return keep.column[b, h, kv] & (kv < q_block * keep.tile)


def vertical_slash_keeps(keep: VerticalSlashKeep, b, h, q, kv) -> torch.Tensor:
    """The vertical-slash predicate on broadcastable integer tensors of batch rows, heads, query positions ``q``
    and key positions ``kv``: causal, and the tile is walked or the key is a gathered column. The torch backend's
    rows, the ops' masks and the Flex block mask all follow it; the Triton kernel applies it per tile."""
    q_block = q // keep.tile
    walked = vertical_slash_walks(keep, b, h, q_block, kv // keep.tile)
    return (kv <= q) & (walked | vertical_slash_gathers(keep, b, h, q_block, kv))


def vertical_slash_kept_tiles(keep: VerticalSlashKeep,
                              query_blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(walked, gathered)``, each ``(B, H, len(query_blocks), R)`` bool: the tiles the predicate keeps whole
    (up to the causal cut of the diagonal one), and the tiles holding a column the query block gathers."""
    batch, heads, blocks = keep.walked.shape
    b, h = batch_heads(keep.walked)
    q_block = query_blocks.view(1, 1, -1, 1)
    k_block = torch.arange(blocks, device=keep.walked.device)
    walked = vertical_slash_walks(keep, b, h, q_block, k_block.view(1, 1, 1, -1))
    # the column rule sees a key only as "a column or not" and through its tile, so a tile's first column (or,
    # without one, its first key, which is no column) answers for the whole tile
    n = keep.column.shape[-1]
    by_tile = torch.nn.functional.pad(keep.column, (0, blocks * keep.tile - n))
    by_tile = by_tile.view(batch, heads, blocks, keep.tile)
    first = (k_block * keep.tile).view(1, 1, -1) + by_tile.to(torch.int8).argmax(dim=-1)
    gathered = vertical_slash_gathers(keep, b, h, q_block, first.unsqueeze(2))
    return walked, gathered


def vertical_slash_index_mask_rows(index: VerticalSlashIndex, n: int, row_start: int, row_end: int) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of the ``(B, H, rows, N)`` mask the kernel computes, read off the index.

    :func:`vertical_slash_keeps`, with its tile rule evaluated once per tile of the rows' query blocks: per entry,
    the tile offsets alone would cost more memory than the mask.
    """
    keep = vertical_slash_keep(index, n)
    device = keep.walked.device
    tile = index.tile
    first_block, last_block = row_start // tile, (row_end - 1) // tile
    b, h = batch_heads(keep.walked)
    query_blocks = torch.arange(first_block, last_block + 1, device=device).view(1, 1, -1, 1)
    key_blocks = torch.arange(keep.walked.shape[-1], device=device).view(1, 1, 1, -1)
    walked = vertical_slash_walks(keep, b, h, query_blocks, key_blocks)  # [B, H, nq, R]
    out = tile_rows(walked, tile, first_block, row_start, row_end, n)  # [B, H, rows, N]
    rows = torch.arange(row_start, row_end, device=device).view(1, 1, -1, 1)
    cols = torch.arange(n, device=device).view(1, 1, 1, -1)
    out |= vertical_slash_gathers(keep, b, h, rows // tile, cols)
    out &= cols <= rows
    return out
