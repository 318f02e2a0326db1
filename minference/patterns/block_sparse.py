"""Block-sparse: per query block, the ``top_k`` key blocks whose mean-pooled keys best match its mean-pooled queries."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch

from .._checks import check_positive_int
from .._device_cache import device_tensor
from .base import Pattern, clip_to_lengths

BLOCK_SIZES = (16, 32, 64, 128)
ESTIMATE_BYTES = 1 << 30


@dataclass(frozen=True)
class BlockSparse(Pattern):
    """Keep ``top_k`` key blocks of ``block_size`` tokens per query block (plus its diagonal block).

    Raises:
        TypeError: a budget is not an int. ValueError: ``top_k < 1`` or an unsupported ``block_size``.
    """

    top_k: int = 100
    block_size: int = 64
    name: ClassVar[str] = "block_sparse"

    def __post_init__(self):
        check_positive_int("top_k", self.top_k)
        check_positive_int("block_size", self.block_size)
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {self.block_size}")


def _pool(x: torch.Tensor, block_size: int, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of each block's valid tokens: ``(B, H, N, D) -> (B, H, R, D)`` in float32.

    ``lengths`` None means every sequence fills all ``N`` positions; then, for ``N`` a multiple of ``block_size``,
    ``x`` is read once and never copied.
    """
    batch, _, n, _ = x.shape
    blocks = -(-n // block_size)
    full = torch.full((batch,), n, device=x.device) if lengths is None else lengths
    if lengths is not None:
        valid = torch.arange(n, device=x.device).view(1, n) < lengths.view(-1, 1)
        x = x * valid.view(batch, 1, n, 1).to(x.dtype)  # exact in any dtype: multiplies by 0 or 1
    if blocks * block_size != n:
        x = torch.nn.functional.pad(x, (0, 0, 0, blocks * block_size - n))
    sums = x.unflatten(2, (blocks, block_size)).sum(dim=3, dtype=torch.float32)
    starts = torch.arange(blocks, device=x.device) * block_size
    counts = (full.view(-1, 1) - starts.view(1, -1)).clamp(1, block_size).to(torch.float32)
    return sums / counts.view(batch, 1, blocks, 1)


def _head_chunks(heads: Sequence[int], x: torch.Tensor, per_chunk: int):
    """``x``'s heads ``heads`` in chunks of ``per_chunk``: views where the heads are consecutive, else copies."""
    for start in range(0, len(heads), per_chunk):
        part = list(heads[start : start + per_chunk])
        if part == list(range(part[0], part[0] + len(part))):
            yield x[:, part[0] : part[0] + len(part)]
        else:
            yield x.index_select(1, device_tensor(part, x.device, torch.long))


def estimate(
    q: torch.Tensor,
    k: torch.Tensor,
    patterns: Sequence[BlockSparse],
    heads: Sequence[int],
    *,
    seqlens: Optional[torch.Tensor] = None,
    sm_scale: Optional[float] = None,
) -> torch.Tensor:
    """Choose key blocks for query heads ``heads`` (all ``patterns`` must share one ``block_size``).

    Returns:
        ``block_idx (B, len(heads), R, K)`` int32, ``K`` the largest ``top_k`` clipped to ``R``; ``-1`` marks unused
        slots (smaller budgets, or fewer causal candidates than ``top_k``).
    """
    block_size = patterns[0].block_size
    if any(p.block_size != block_size for p in patterns):
        raise ValueError("block-sparse heads of one call must share block_size")
    batch, hq, n, head_dim = q.shape
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    device = q.device
    lengths = None if seqlens is None else seqlens.to(device).long()
    blocks = -(-n // block_size)
    width = min(blocks, max(p.top_k for p in patterns))
    block_ids = torch.arange(blocks, device=device)
    blocked = block_ids.view(1, 1, -1, 1) < block_ids.view(1, 1, 1, -1)  # query block m sees key blocks <= m
    if lengths is not None:
        blocked = blocked | (block_ids.view(1, 1, 1, -1) * block_size >= lengths.view(-1, 1, 1, 1))
    # Pool first, then pick heads: pooled tensors are block_size times smaller than q and k, so a KV head's pooled
    # keys serve its whole query group, and at most ESTIMATE_BYTES of q is copied at a time (padding, head lists).
    pool_heads = max(1, ESTIMATE_BYTES // (4 * batch * n * head_dim))

    def pooled(x: torch.Tensor, head_ids: Sequence[int]) -> torch.Tensor:
        return torch.cat([_pool(part, block_size, lengths) for part in _head_chunks(head_ids, x, pool_heads)], dim=1)

    q_pooled_all = pooled(q, heads)
    k_pooled = pooled(k, range(k.shape[1]))
    kv_of_head = device_tensor([h // group for h in heads], device, torch.long)
    per_chunk = max(1, ESTIMATE_BYTES // (4 * batch * blocks * blocks))
    chosen = []
    for start in range(0, len(heads), per_chunk):
        q_part = q_pooled_all[:, start : start + per_chunk]
        k_part = k_pooled.index_select(1, kv_of_head[start : start + per_chunk])
        scores = torch.matmul(q_part, k_part.transpose(-1, -2)).mul_(scale)
        scores.masked_fill_(blocked, float("-inf"))
        values, idx = scores.topk(width, dim=-1)
        chosen.append(torch.where(values > float("-inf"), idx, -1))
    block_idx = torch.cat(chosen, dim=1)
    top_k = device_tensor([p.top_k for p in patterns], device, torch.long).view(1, -1, 1, 1)
    rank = torch.arange(width, device=device).view(1, 1, 1, -1)
    return torch.where(rank < top_k, block_idx, -1).to(torch.int32)


def mask(
    n: int, block_idx: torch.Tensor, block_size: int = 64, *, seqlens: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The exact ``(B, H, n, n)`` mask of the block-sparse kernel, written from the definition.

    Query ``i`` keeps key ``j <= i`` when ``j``'s block is listed for ``i``'s block or is ``i``'s own block.

    From the raw choices, not the built index: the reference the index builder is checked against bit for bit.
    """
    batch, heads, blocks, _ = block_idx.shape
    device = block_idx.device
    listed = torch.zeros(batch, heads, blocks, blocks + 1, dtype=torch.bool, device=device)
    listed.scatter_(3, torch.where(block_idx < 0, blocks, block_idx.long()), True)
    listed = listed[..., :blocks] | torch.eye(blocks, dtype=torch.bool, device=device)
    pos = torch.arange(n, device=device)
    keep = listed[:, :, pos // block_size][..., pos // block_size]
    keep = keep & (pos.view(1, -1) <= pos.view(-1, 1))
    return clip_to_lengths(keep, seqlens)
