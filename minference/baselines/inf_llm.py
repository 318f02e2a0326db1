"""``inf_llm``: InfLLM's training-free context memory, as a prefill attention type.

The prompt is processed in chunks of ``chunk`` queries. Chunk ``c`` (queries ``[s, e)``) attends to

- the ``n_init`` initial tokens;
- the memory: tokens after the initial ones, cut into blocks of ``block_size`` that end at least ``n_local``
  tokens before ``s``; of these, the ``top_k`` blocks most similar to the chunk;
- its local window: every token from the end of the last memory block to the query itself (causal), i.e. the
  ``n_local`` tokens before ``s`` (up to ``block_size - 1`` more, so that window and memory tile the past) and the
  chunk.

Initial tokens, memory blocks and window are disjoint and cover ``[0, e)``, so with ``top_k`` covering every block
the result is exact dense attention. Retrieval follows the published recipe: each block is represented by the
``representatives`` keys that receive the most attention from the block's own queries (causal softmax inside the
block, summed over its queries), and block ``b``'s similarity to chunk ``c`` is ``sum_i sum_r q_i . k_r`` over the
chunk's queries and the block's representatives, which is ``(sum_i q_i) . (sum_r k_r)``. Retrieval is per query
head (GQA heads share keys, not choices). Decode is dense (the integration's decode path).

Execution: the union above is block-aligned whenever ``n_init``, ``block_size``, ``n_local`` and ``chunk`` are
multiples of one kernel tile (16, 32 or 64; the published 128/128/4096/512 are), so the whole prefill is a single
block-sparse launch over all heads and chunks, whose index lists per query tile the initial tiles, the chunk's
retrieved blocks and the window. The kernel's online softmax merges the three parts exactly as an lse combine of
separate partial attentions would, without materialising the partial outputs. No loop over heads or chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from .. import ops
from .._checks import check_positive_int
from ..patterns.base import clip_to_lengths
from ..patterns.block_sparse import BLOCK_SIZES

MAX_TILE = 64
"""Largest kernel tile used: 64 is the tile the other launches use and are tuned for; 128 x 128 tiles at head_dim
128 are allowed by the block-sparse kernel but not measured yet."""

REPRESENTATIVE_BYTES = 1 << 28
"""Working memory of one slice of the representative scoring (blocks are scored a slice at a time)."""


@dataclass(frozen=True)
class InfLLM:
    """InfLLM prefill (see the module doc); the defaults are the published ones.

    Attributes:
        n_init: initial (sink) tokens every chunk attends to, ``>= 0``.
        n_local: local window before each chunk, ``>= 0``.
        block_size: tokens per memory block, ``>= 1``.
        representatives: keys representing a block, ``1 <= representatives <= block_size``.
        top_k: memory blocks retrieved per chunk and query head, ``>= 0``.
        chunk: queries per chunk (InfLLM's execution block), ``>= 1``.

    Raises:
        TypeError: an argument is not an int. ValueError: an argument out of range, or no kernel tile
            (16, 32 or 64) divides ``n_init``, ``block_size``, ``n_local`` and ``chunk``.
    """

    n_init: int = 128
    n_local: int = 4096
    block_size: int = 128
    representatives: int = 4
    top_k: int = 16
    chunk: int = 512
    name: ClassVar[str] = "inf_llm"

    def __post_init__(self):
        check_positive_int("n_init", self.n_init, minimum=0)
        check_positive_int("n_local", self.n_local, minimum=0)
        check_positive_int("block_size", self.block_size)
        check_positive_int("representatives", self.representatives)
        check_positive_int("top_k", self.top_k, minimum=0)
        check_positive_int("chunk", self.chunk)
        if self.representatives > self.block_size:
            raise ValueError(f"representatives must be <= block_size ({self.block_size}), got {self.representatives}")
        if self.tile is None:
            raise ValueError(
                f"n_init, block_size, n_local and chunk must all be multiples of one kernel tile (16, 32 or 64), got "
                f"{self.n_init}, {self.block_size}, {self.n_local}, {self.chunk}"
            )

    @property
    def tile(self) -> Optional[int]:
        """The largest kernel block size up to :data:`MAX_TILE` dividing every length parameter (``None`` if none)."""
        for size in sorted((s for s in BLOCK_SIZES if s <= MAX_TILE), reverse=True):
            if all(x % size == 0 for x in (self.n_init, self.block_size, self.n_local, self.chunk)):
                return size
        return None

    # ------------------------------------------------------------------------------------------------------------

    def memory_blocks(self, n: int, device) -> tuple:
        """``(blocks, available, local_start)``: the memory blocks in an ``n``-token prompt, and per chunk ``(C,)``
        int64 how many of them it may retrieve (those ending before its window) and the first token of its window."""
        blocks = max(0, (n - self.n_init) // self.block_size)
        starts = torch.arange(0, n, self.chunk, device=device)
        available = ((starts - self.n_local - self.n_init).clamp_min(0) // self.block_size).clamp_max(blocks)
        return blocks, available, self.n_init + available * self.block_size

    def representative_keys(self, q: torch.Tensor, k: torch.Tensor, blocks: int, scale: float) -> torch.Tensor:
        """``(B, Hq, blocks, D)`` float32: per query head and memory block, the sum of the block's
        ``representatives`` keys that receive the most attention from the block's own queries."""
        batch, hq, _, dim = q.shape
        hkv = k.shape[1]
        group, size = hq // hkv, self.block_size
        span = slice(self.n_init, self.n_init + blocks * size)
        q_blocks = q[:, :, span].unflatten(2, (blocks, size)).unflatten(1, (hkv, group))  # [B, Hkv, G, nb, bs, D]
        k_blocks = k[:, :, span].unflatten(2, (blocks, size)).unsqueeze(2)  # [B, Hkv, 1, nb, bs, D]
        causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
        out = torch.empty(batch, hkv, group, blocks, dim, dtype=torch.float32, device=q.device)
        per_slice = max(1, REPRESENTATIVE_BYTES // (3 * 4 * batch * hq * size * size))
        for first in range(0, blocks, per_slice):
            part = slice(first, min(blocks, first + per_slice))
            keys = k_blocks[:, :, :, part]
            scores = torch.matmul(q_blocks[:, :, :, part], keys.transpose(-1, -2)).float() * scale
            received = torch.softmax(scores.masked_fill_(~causal, float("-inf")), dim=-1).sum(dim=-2)
            top = received.topk(self.representatives, dim=-1).indices  # [B, Hkv, G, slice, r]
            keys = keys.expand(-1, -1, group, -1, -1, -1)
            chosen = keys.gather(4, top.unsqueeze(-1).expand(-1, -1, -1, -1, -1, dim))
            out[:, :, :, part] = chosen.sum(dim=4, dtype=torch.float32)
        return out.flatten(1, 2)

    def chunk_queries(self, q: torch.Tensor, seqlens: Optional[torch.Tensor]) -> torch.Tensor:
        """``(B, Hq, C, D)`` float32: the sum of each chunk's queries (padding rows excluded)."""
        n = q.shape[2]
        if seqlens is not None:
            pos = torch.arange(n, device=q.device).view(1, 1, n, 1)
            q = q.masked_fill(pos >= seqlens.to(q.device).view(-1, 1, 1, 1), 0)
        full = n // self.chunk
        sums = q[:, :, : full * self.chunk].unflatten(2, (full, self.chunk)).sum(dim=3, dtype=torch.float32)
        if n % self.chunk:
            tail = q[:, :, full * self.chunk :].sum(dim=2, keepdim=True, dtype=torch.float32)
            sums = torch.cat([sums, tail], dim=2)
        return sums

    def retrieve(self, q, k, seqlens=None, sm_scale=None) -> torch.Tensor:
        """The memory blocks each chunk attends to.

        Args:
            q: ``(B, Hq, N, D)``; k: ``(B, Hkv, N, D)``; seqlens: optional ``(B,)`` right-padded lengths.

        Returns:
            ``(B, Hq, C, min(top_k, blocks))`` int64 block ids (block ``b`` = tokens
            ``[n_init + b * block_size, n_init + (b + 1) * block_size)``), ``-1`` in unused slots; ``C`` chunks.
        """
        batch, hq, n, dim = q.shape
        blocks, available, _ = self.memory_blocks(n, q.device)
        width = min(self.top_k, blocks)
        chunks = available.numel()
        if width == 0:
            return torch.full((batch, hq, chunks, 0), -1, dtype=torch.long, device=q.device)
        scale = 1.0 / math.sqrt(dim) if sm_scale is None else sm_scale
        representatives = self.representative_keys(q, k, blocks, scale)
        scores = torch.matmul(self.chunk_queries(q, seqlens), representatives.transpose(-1, -2))  # [B, Hq, C, nb]
        later = torch.arange(blocks, device=q.device).view(1, -1) >= available.view(-1, 1)  # [C, nb]
        values, chosen = scores.masked_fill_(later, float("-inf")).topk(width, dim=-1)
        return torch.where(values > float("-inf"), chosen, -1)

    def block_index(self, q, k, seqlens=None, sm_scale=None) -> torch.Tensor:
        """``(B, Hq, ceil(N / tile), K)`` key tiles per query tile for :func:`minference.ops.block_sparse_attention`
        with ``block_size=self.tile`` (``-1`` unused)."""
        batch, hq, n, _ = q.shape
        tile = self.tile
        device = q.device
        tiles = -(-n // tile)
        _, _, local_start = self.memory_blocks(n, device)
        query_tile = torch.arange(tiles, device=device)
        chunk_of = query_tile * tile // self.chunk
        window = min(tiles, (self.n_local + self.block_size + self.chunk) // tile + 1)
        initial = torch.arange(self.n_init // tile, device=device).expand(tiles, -1)
        local = (local_start[chunk_of] // tile).view(-1, 1) + torch.arange(window, device=device).view(1, -1)
        fixed = torch.cat([initial, local], dim=1)
        fixed = torch.where(fixed <= query_tile.view(-1, 1), fixed, -1).expand(batch, hq, -1, -1)

        chosen = self.retrieve(q, k, seqlens, sm_scale)[:, :, chunk_of]  # [B, Hq, R, k]
        per_block = self.block_size // tile
        first_tile = (self.n_init + chosen * self.block_size) // tile
        memory = first_tile.unsqueeze(-1) + torch.arange(per_block, device=device)
        memory = torch.where(chosen.unsqueeze(-1) >= 0, memory, -1).flatten(3)
        return torch.cat([fixed, memory], dim=3).to(torch.int32)

    def __call__(self, q, k, v, *, settings, seqlens, scaling, module=None) -> torch.Tensor:
        """``q (B, Hq, N, D)``, ``k, v (B, Hkv, N, D)`` -> ``(B, Hq, N, D)``; the layer's per-head config is ignored."""
        block_idx = self.block_index(q, k, seqlens, scaling)
        return ops.block_sparse_attention(
            q, k, v, block_idx, self.tile, seqlens=seqlens, sm_scale=scaling, backend=settings.backend,
            validate=False,
        )

    # ------------------------------------------------------------------------------------------------------------

    def mask(self, q, k, *, seqlens=None, sm_scale=None) -> torch.Tensor:
        """The exact ``(B, Hq, N, N)`` boolean mask of this method, written from the definition with plain loops over
        batch rows, heads, chunks and blocks (the slow twin; tests only, small ``N``)."""
        batch, hq, n, dim = q.shape
        group = hq // k.shape[1]
        scale = 1.0 / math.sqrt(dim) if sm_scale is None else sm_scale
        size = self.block_size
        keep = torch.zeros(batch, hq, n, n, dtype=torch.bool)
        for b in range(batch):
            length = n if seqlens is None else int(seqlens[b])
            for h in range(hq):
                qh, kh = q[b, h].double(), k[b, h // group].double()
                representative = []
                for first in range(self.n_init, n - size + 1, size):
                    scores = (qh[first : first + size] @ kh[first : first + size].T) * scale
                    scores = scores.masked_fill(~torch.ones(size, size, dtype=torch.bool).tril(), float("-inf"))
                    received = torch.softmax(scores, dim=-1).sum(dim=0)
                    top = received.topk(self.representatives).indices
                    representative.append(kh[first + top].sum(dim=0))
                for s in range(0, n, self.chunk):
                    e = min(n, s + self.chunk)
                    blocks = [i for i in range(len(representative)) if self.n_init + (i + 1) * size <= s - self.n_local]
                    window_start = self.n_init + len(blocks) * size
                    query_sum = qh[s : min(e, length)].sum(dim=0)
                    similarity = [float(query_sum @ representative[i]) for i in blocks]
                    best = sorted(range(len(blocks)), key=lambda i: -similarity[i])[: self.top_k]
                    allowed = torch.zeros(n, dtype=torch.bool)
                    allowed[: self.n_init] = True
                    allowed[window_start:] = True
                    for i in best:
                        allowed[self.n_init + blocks[i] * size : self.n_init + (blocks[i] + 1) * size] = True
                    rows = torch.arange(s, e).view(-1, 1)
                    keep[b, h, s:e] = allowed.view(1, n) & (torch.arange(n).view(1, n) <= rows)
        return clip_to_lengths(keep, seqlens)
