"""Block-sparse choices -> tile index: per query block, the sorted unique key blocks it walks.

Unused slots (``-1``) and key blocks right of the query block (causally empty) are dropped, duplicates removed,
and the query block's own diagonal block always added, so no row is empty.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class BlockSparseIndex(NamedTuple):
    blocks: torch.Tensor
    """``(B, H, R, K + 1)`` int32: key blocks per query block, ascending, padded with ``R``."""
    block_count: torch.Tensor
    """``(B, H, R)`` int32: how many of ``blocks`` are walked."""


def build_block_sparse_index(block_idx: torch.Tensor) -> BlockSparseIndex:
    """Build the index from ``block_idx (B, H, R, K)`` key-block ids in ``[-1, R)``; ``-1`` = unused slot."""
    batch, heads, blocks, _ = block_idx.shape
    device = block_idx.device
    own = torch.arange(blocks, device=device).view(1, 1, blocks, 1)
    ids = block_idx.long()
    ids = torch.where((ids < 0) | (ids > own), blocks, ids)
    ids = torch.cat([ids, own.expand(batch, heads, blocks, 1)], dim=-1).sort(dim=-1).values
    repeated = torch.zeros_like(ids, dtype=torch.bool)
    repeated[..., 1:] = ids[..., 1:] == ids[..., :-1]
    ids = torch.where(repeated, blocks, ids).sort(dim=-1).values
    count = (ids < blocks).sum(dim=-1, dtype=torch.int32)
    return BlockSparseIndex(ids.to(torch.int32).contiguous(), count.contiguous())


def block_sparse_index_mask_rows(
    index: BlockSparseIndex, n: int, block_size: int, row_start: int, row_end: int
) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of the ``(B, H, rows, N)`` mask the kernel computes, read off the index."""
    batch, heads, blocks, slots = index.blocks.shape
    device = index.blocks.device
    rows = torch.arange(row_start, row_end, device=device)
    query_block = rows // block_size
    walked_slot = torch.arange(slots, device=device).view(1, 1, 1, -1) < index.block_count.unsqueeze(-1)
    walked = torch.zeros(batch, heads, blocks, blocks + 1, dtype=torch.bool, device=device)
    walked.scatter_(3, torch.where(walked_slot, index.blocks.long(), blocks), walked_slot)
    cols = torch.arange(n, device=device)
    keep = walked[:, :, query_block][..., cols // block_size]
    keep &= cols.view(1, -1) <= rows.view(-1, 1)
    return keep
