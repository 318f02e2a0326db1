"""Vertical-slash choices -> tile index, on a grid of ``T``-token tiles (``T`` = 64, or 128: see :data:`TILES`).

A diagonal at offset ``o = i - j`` crosses the ``T``-row query block ``m`` in key blocks ``m - o // T`` and
``m - ceil(o / T)``. Both are a fixed *block-diagonal offset* ``p`` from the query block, the same for every query
block, so a head's slashes become one short sorted list of offsets ``p`` (always including ``p = 0``, the block that
holds each row's own diagonal) instead of a per-row-block list. Query block ``m`` walks key blocks ``m - p`` for the
``block_count[m]`` offsets with ``p <= m``.

Vertical columns are sorted and de-duplicated once per head. Query block ``m`` gathers the first
``column_count[m]`` of them (those left of its first row); the kernel skips a column whose key block it already
walks (``block_present``), so nothing is counted twice.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import check_positive_int
from ..patterns.vertical_slash import TILE, TILES


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


def vertical_slash_index_mask_rows(index: VerticalSlashIndex, n: int, row_start: int, row_end: int) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of the ``(B, H, rows, N)`` mask the kernel computes, read off the index.

    Mirrors the kernel's walk: the first ``block_count[m]`` offsets, then the first ``column_count[m]`` columns.
    """
    batch, heads, blocks = index.block_count.shape
    device = index.block_count.device
    tile = index.tile
    rows = torch.arange(row_start, row_end, device=device)
    first_block, last_block = row_start // tile, (row_end - 1) // tile
    query_blocks = torch.arange(first_block, last_block + 1, device=device)
    nq = query_blocks.numel()

    slot = torch.arange(blocks, device=device)
    counts = index.block_count[..., first_block : last_block + 1]  # [B, H, nq]
    walked_slot = slot.view(1, 1, 1, -1) < counts.unsqueeze(-1)  # [B, H, nq, R]
    key_block = query_blocks.view(1, 1, -1, 1) - index.block_offsets.long().unsqueeze(2)  # [B, H, nq, R]
    walked = torch.zeros(batch, heads, nq, blocks + 1, dtype=torch.bool, device=device)
    walked.scatter_(3, torch.where(walked_slot, key_block, blocks), walked_slot)
    walked = walked[..., :blocks]

    nv = index.columns.shape[-1]
    col_slot = torch.arange(nv, device=device)
    gathered = col_slot.view(1, 1, 1, -1) < index.column_count[..., first_block : last_block + 1].unsqueeze(-1)
    hits = torch.zeros(batch, heads, nq, n + 1, dtype=torch.bool, device=device)
    hits.scatter_(3, torch.where(gathered, index.columns.long().unsqueeze(2), n).expand(-1, -1, nq, -1), gathered)
    hits = hits[..., :n]

    cols = torch.arange(n, device=device)
    local_block = rows // tile - first_block
    keep = walked[:, :, local_block][..., cols // tile]  # [B, H, rows, N]
    keep |= hits[:, :, local_block]
    keep &= cols.view(1, -1) <= rows.view(-1, 1)
    return keep
