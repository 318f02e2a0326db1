"""Block-sparse choices -> tile index: per query block, the sorted unique key blocks it walks.

Unused slots (``-1``) and key blocks right of the query block (causally empty) are dropped, duplicates removed,
and the query block's own diagonal block always added, so no row is empty. Which keys a query keeps is stated once,
by :func:`block_sparse_keeps` on a table derived from the index (:func:`block_sparse_keep`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ._rows import tile_rows


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


class BlockSparseKeep(NamedTuple):
    """The table the block-sparse predicate reads, for a range of query blocks (:func:`block_sparse_keep`)."""

    walked: torch.Tensor
    """``(B, H, Q, R)`` bool: query block ``first_block + q`` walks key block ``k``."""
    block_size: int
    first_block: int = 0


def block_sparse_keep(index: BlockSparseIndex, block_size: int, first_block: int = 0,
                      end_block: Optional[int] = None) -> BlockSparseKeep:
    """The table :func:`block_sparse_keeps` reads for query blocks ``[first_block, end_block)`` (default: all),
    as the kernel walks them: the first ``block_count[m]`` entries of ``blocks[m]``."""
    listed = index.blocks[:, :, first_block:end_block].long()
    count = index.block_count[:, :, first_block:end_block]
    batch, heads, query_blocks, slots = listed.shape
    blocks = index.blocks.shape[2]
    used = torch.arange(slots, device=listed.device).view(1, 1, 1, -1) < count.unsqueeze(-1)
    walked = torch.zeros(batch, heads, query_blocks, blocks + 1, dtype=torch.bool, device=listed.device)
    walked.scatter_(3, torch.where(used, listed, blocks), used)
    return BlockSparseKeep(walked[..., :blocks].contiguous(), block_size, first_block)


def block_sparse_keeps(keep: BlockSparseKeep, b, h, q, kv) -> torch.Tensor:
    """The block-sparse predicate on broadcastable integer tensors of batch rows, heads, query positions ``q``
    (inside the table's query blocks) and key positions ``kv``: causal, and ``q``'s block walks ``kv``'s. The
    torch backend's rows, the ops' masks and the Flex block mask all follow it; the Triton kernel applies it per
    tile, and ``keep.walked`` lists the tiles it keeps whole (up to the causal cut of the diagonal one)."""
    q_block = q // keep.block_size - keep.first_block
    return (kv <= q) & keep.walked[b, h, q_block, kv // keep.block_size]


def block_sparse_index_mask_rows(
    index: BlockSparseIndex, n: int, block_size: int, row_start: int, row_end: int
) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of the ``(B, H, rows, N)`` mask the kernel computes, read off the index:
    :func:`block_sparse_keeps` on a table of the rows' query blocks only, evaluated tile by tile."""
    first_block = row_start // block_size
    keep = block_sparse_keep(index, block_size, first_block, (row_end - 1) // block_size + 1)
    out = tile_rows(keep.walked, block_size, first_block, row_start, row_end, n)
    rows = torch.arange(row_start, row_end, device=out.device).view(-1, 1)
    out &= torch.arange(n, device=out.device).view(1, -1) <= rows
    return out
