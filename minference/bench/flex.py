"""FlexAttention on the same mask as our kernels: a ``BlockMask`` built straight from our tile indices.

FlexAttention walks 128 x 128 blocks. A 128-block is *full* (no ``mask_mod`` evaluated) when it lies strictly
below the diagonal and every element of it is kept; it is *partial* when it holds at least one kept element;
the ``mask_mod`` is the exact predicate of our kernel (``keeps`` of each pattern, :mod:`minference.index` and
:mod:`minference.patterns.a_shape`), and the block lists are read off the same predicate's tile tables, so both
compute the same function. The block lists are made from a dense ``(B, H, R, R)`` tile map, so this is meant for N
up to a few hundred thousand.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch

from ..index import (
    BlockSparseIndex,
    VerticalSlashIndex,
    block_sparse_keep,
    block_sparse_keeps,
    vertical_slash_keep,
    vertical_slash_keeps,
    vertical_slash_kept_tiles,
)
from ..patterns import a_shape as a_shape_pattern

FLEX_BLOCK = 128


def _coarsen(tiles: torch.Tensor, factor: int, how: str) -> torch.Tensor:
    """``(B, H, R, R)`` bool at fine tiles -> coarse tiles (``any`` or ``all`` of each ``factor x factor``
    group)."""
    if factor == 1:
        return tiles
    batch, heads, rows, _ = tiles.shape
    coarse = -(-rows // factor)
    pad = coarse * factor - rows
    fill = how == "all"
    tiles = torch.nn.functional.pad(tiles, (0, pad, 0, pad), value=fill) if pad else tiles
    grouped = tiles.view(batch, heads, coarse, factor, coarse, factor)
    return grouped.all(dim=5).all(dim=3) if how == "all" else grouped.any(dim=5).any(dim=3)


def _strictly_lower(rows: int, device) -> torch.Tensor:
    ids = torch.arange(rows, device=device)
    return ids.view(-1, 1) > ids.view(1, -1)


def _block_mask(partial: torch.Tensor, full: torch.Tensor, mask_mod: Callable, n: int):
    """A ``BlockMask`` from coarse ``(B, H, R, R)`` maps of partial and full 128-blocks."""
    from torch.nn.attention.flex_attention import BlockMask

    def lists(tiles):
        count = tiles.sum(dim=-1, dtype=torch.int32)
        order = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
        return count.contiguous(), order.contiguous()

    kv_num, kv_idx = lists(partial & ~full)
    full_num, full_idx = lists(full)
    options = {"BLOCK_SIZE": FLEX_BLOCK, "mask_mod": mask_mod}
    parameters = inspect.signature(BlockMask.from_kv_blocks).parameters
    if "seq_lengths" in parameters:
        options["seq_lengths"] = (n, n)
    if "compute_q_blocks" in parameters:
        options["compute_q_blocks"] = False
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, **options)


def _density(partial: torch.Tensor, n: int) -> float:
    from .density import causal_tiles

    batch, heads = partial.shape[:2]
    return float(partial.sum()) / (batch * heads * causal_tiles(n, FLEX_BLOCK))


def vertical_slash_block_mask(index: VerticalSlashIndex, n: int):
    """``(BlockMask, density)`` for a vertical-slash index built for length ``n`` (on either grid)."""
    keep = vertical_slash_keep(index, n)
    rows = keep.walked.shape[-1]
    device = keep.walked.device
    walked, gathered = vertical_slash_kept_tiles(keep, torch.arange(rows, device=device))  # [B, H, R, R]
    factor = FLEX_BLOCK // index.tile
    partial = _coarsen(walked | gathered, factor, "any")
    full = _coarsen(walked, factor, "all") & _strictly_lower(partial.shape[-1], device)
    del walked, gathered

    def mask_mod(b, h, q_idx, kv_idx):
        return vertical_slash_keeps(keep, b, h, q_idx, kv_idx)

    return _block_mask(partial, full, mask_mod, n), _density(partial, n)


def block_sparse_block_mask(index: BlockSparseIndex, n: int, block_size: int):
    """``(BlockMask, density)`` for a block-sparse index (blocks of ``block_size`` <= 128) built for length
    ``n``."""
    if FLEX_BLOCK % block_size:
        raise ValueError(f"block_size must divide {FLEX_BLOCK}, got {block_size}")
    keep = block_sparse_keep(index, block_size)
    factor = FLEX_BLOCK // block_size
    partial = _coarsen(keep.walked, factor, "any")
    full = _coarsen(keep.walked, factor, "all") & _strictly_lower(partial.shape[-1], keep.walked.device)

    def mask_mod(b, h, q_idx, kv_idx):
        return block_sparse_keeps(keep, b, h, q_idx, kv_idx)

    return _block_mask(partial, full, mask_mod, n), _density(partial, n)


def a_shape_block_mask(n: int, sink: int, local: int, device):
    """``(BlockMask, density)`` of an A-shape head (one mask broadcast over batch and heads)."""
    rows = -(-n // FLEX_BLOCK)
    ids = torch.arange(rows, device=device)
    q_first, q_last = ids.view(-1, 1) * FLEX_BLOCK, ids.view(-1, 1) * FLEX_BLOCK + FLEX_BLOCK - 1
    k_first, k_last = ids.view(1, -1) * FLEX_BLOCK, ids.view(1, -1) * FLEX_BLOCK + FLEX_BLOCK - 1
    causal = k_first <= q_last
    partial = causal & ((k_first < sink) | (q_first - k_last < local))
    full = (k_last < q_first) & ((k_last < sink) | (q_last - k_first < local))
    partial, full = partial.view(1, 1, rows, rows), full.view(1, 1, rows, rows)

    def mask_mod(b, h, q_idx, kv_idx):
        return a_shape_pattern.keeps(q_idx, kv_idx, sink, local)

    return _block_mask(partial, full, mask_mod, n), _density(partial, n)


_COMPILED: Optional[Callable] = None


def flex_attention_compiled() -> Callable:
    """``torch.compile(flex_attention)``, once per process, with room for one graph per shape and mask
    kind."""
    global _COMPILED
    if _COMPILED is None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        for name in (
            "cache_size_limit",
            "recompile_limit",
            "accumulated_cache_size_limit",
            "accumulated_recompile_limit",
        ):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(256, getattr(torch._dynamo.config, name)))
        # dynamic=None: the second length seen compiles a dynamic-shape graph that serves all later lengths
        _COMPILED = torch.compile(flex_attention)
    return _COMPILED
