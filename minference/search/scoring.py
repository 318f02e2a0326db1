"""Score every candidate pattern on every head of one layer: attention mass kept, output error, kernel tiles.

The full ``N x N`` attention matrix is never held. Query rows are streamed in chunks; each chunk's softmax ``P``
is folded into two small summaries from which every candidate's kept mass follows exactly:

- ``C (H, R, N)``: ``P`` summed over the 64 rows of each query block. Vertical-slash and block-sparse masks are
  unions of whole tiles and, for gathered columns, whole columns inside a query block, so their mass is a sum over
  ``C`` (and its tile sums ``T (H, R, R)``);
- per A-shape candidate, the row-wise kept mass from the running sum of ``P`` along keys (the window is
  ``cumsum[i] - cumsum[i - local]``, the sinks left of the window ``cumsum[min(sink, i - local + 1) - 1]``), since
  A-shape masks cut through tiles.

Recall is the kept mass averaged over query rows (each row's mass is 1). ``recall_last`` is the same average over the
rows of the last query block only (the last 64 rows when ``N`` is a multiple of 64): the rows that produce the next
token, and the rows vertical-slash estimates its index from. It is read off the same summaries (the last row of ``C``,
the A-shape row masses of the last chunk), so it costs no extra pass. The output error is measured on the last
``error_rows`` query rows (those that produce the next token): the relative L2 distance between attention restricted
to the candidate's mask (from the index builders' ``*_mask_rows``, the kernels' truth) and dense attention.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..index import (
    TILE,
    a_shape_index_mask_rows,
    block_sparse_index_mask_rows,
    block_sparse_keep,
    build_block_sparse_index,
    build_vertical_slash_index,
    vertical_slash_gathers,
    vertical_slash_index_mask_rows,
    vertical_slash_keep,
    vertical_slash_walks,
)
from ..patterns import AShape, BlockSparse, Dense, VerticalSlash
from ..patterns import block_sparse as block_sparse_pattern
from ..patterns import vertical_slash as vertical_slash_pattern
from .candidates import SEARCHED_BLOCK_SIZES, a_shape_tiles, block_sparse_tiles, dense_tiles, vertical_slash_tiles

WORK_BYTES = 1 << 28
"""Memory one streamed chunk of probabilities (and its running sums) may use."""


def _select(index, heads: torch.Tensor):
    """The rows of a ``(1, H, ...)`` index tuple for query heads ``heads`` (fields that are not tensors, such as a
    grid's tile, kept as they are)."""
    return type(index)(*(field.index_select(1, heads) if torch.is_tensor(field) else field for field in index))


def _indices(q, k, candidates: Sequence, sm_scale: float | None) -> list:
    """Per candidate, the index the kernel would walk for all query heads (``None`` for A-shape and dense).

    Vertical-slash candidates share estimation calls (every head listed once per candidate, as many candidates per
    call as fit in :data:`WORK_BYTES`), so the last-64 query scores are computed once per call, not per candidate.
    """
    hq, n = q.shape[1], q.shape[2]
    heads = list(range(hq))
    built: list = [None] * len(candidates)
    vs_slots = [slot for slot, c in enumerate(candidates) if isinstance(c, VerticalSlash)]
    per_call = max(1, WORK_BYTES // (24 * hq * n))  # scores, top-k values and indices of every listed head
    for first in range(0, len(vs_slots), per_call):
        slots = vs_slots[first : first + per_call]
        patterns = [candidates[slot] for slot in slots for _ in heads]
        vertical_idx, slash_idx = vertical_slash_pattern.estimate(q, k, patterns, heads * len(slots), sm_scale=sm_scale)
        for rank, slot in enumerate(slots):
            part = slice(rank * hq, (rank + 1) * hq)
            built[slot] = build_vertical_slash_index(n, vertical_idx[:, part], slash_idx[:, part])
    for slot, candidate in enumerate(candidates):
        if isinstance(candidate, BlockSparse):
            block_idx = block_sparse_pattern.estimate(q, k, [candidate] * hq, heads, sm_scale=sm_scale)
            built[slot] = build_block_sparse_index(block_idx)
    return built


def _tiles(candidate, index, n: int, heads: int) -> list[dict]:
    if isinstance(candidate, VerticalSlash):
        return vertical_slash_tiles(index, n)
    if isinstance(candidate, BlockSparse):
        return block_sparse_tiles(index, candidate.block_size)
    if isinstance(candidate, AShape):
        return [a_shape_tiles(n, candidate.sink, candidate.local)] * heads
    return [dense_tiles(n)] * heads


def _probabilities(q_rows, k_heads, row_start: int, scale: float) -> torch.Tensor:
    """Causal softmax rows ``[row_start, row_start + rows)``: ``(G, rows, N)`` float32."""
    n = k_heads.shape[1]
    scores = torch.matmul(q_rows.float(), k_heads.float().transpose(-1, -2)) * scale
    rows = torch.arange(row_start, row_start + q_rows.shape[1], device=q_rows.device).view(-1, 1)
    scores.masked_fill_(torch.arange(n, device=q_rows.device).view(1, -1) > rows, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _a_shape_row_mass(cumulative: torch.Tensor, row_start: int, sink: int, local: int) -> torch.Tensor:
    """Kept mass of A-shape ``(sink, local)`` on each of the chunk's rows: ``(G, rows)`` float64."""
    groups, rows, _ = cumulative.shape
    i = torch.arange(row_start, row_start + rows, device=cumulative.device)
    total = cumulative.gather(2, i.view(1, -1, 1).expand(groups, rows, 1)).squeeze(-1)
    before_window = i - local  # last key outside the window
    outside = cumulative.gather(2, before_window.clamp_min(0).view(1, -1, 1).expand(groups, rows, 1)).squeeze(-1)
    window = total - torch.where(before_window >= 0, outside, torch.zeros_like(outside))
    sink_end = torch.minimum(torch.full_like(i, sink), i - local + 1) - 1  # last sink key left of the window
    sinks = cumulative.gather(2, sink_end.clamp_min(0).view(1, -1, 1).expand(groups, rows, 1)).squeeze(-1)
    sinks = torch.where(sink_end >= 0, sinks, torch.zeros_like(sinks))
    return window + sinks


def _block_summaries(q, k, heads: Sequence[int], a_shapes: Sequence[AShape], scale: float):
    """Stream the rows of query heads ``heads``: returns ``C (G, R, N)`` float64 and A-shape masses ``(G, A)``, over
    all rows and over the rows of the last query block."""
    _, hq, n, _ = q.shape
    group = hq // k.shape[1]
    device = q.device
    blocks = -(-n // TILE)
    head_index = torch.tensor(list(heads), device=device)
    q_heads = q[0].index_select(0, head_index)
    k_heads = k[0].index_select(0, head_index // group)
    per_row = len(heads) * n * (4 + 8 * bool(a_shapes))
    rows_per_chunk = max(TILE, (WORK_BYTES // per_row) // TILE * TILE)
    column_mass = torch.zeros(len(heads), blocks, n, dtype=torch.float64, device=device)
    a_mass = torch.zeros(len(heads), len(a_shapes), dtype=torch.float64, device=device)
    a_last = torch.zeros(len(heads), len(a_shapes), dtype=torch.float64, device=device)
    last_start = (blocks - 1) * TILE  # first row of the last query block
    for start in range(0, n, rows_per_chunk):
        end = min(n, start + rows_per_chunk)
        probs = _probabilities(q_heads[:, start:end], k_heads, start, scale)
        padded = -(-(end - start) // TILE) * TILE
        if padded != end - start:
            probs_padded = torch.zeros(len(heads), padded, n, device=device)
            probs_padded[:, : end - start] = probs
        else:
            probs_padded = probs
        column_mass[:, start // TILE : start // TILE + padded // TILE] += (
            probs_padded.view(len(heads), padded // TILE, TILE, n).sum(dim=2, dtype=torch.float64)
        )
        if a_shapes:
            cumulative = probs.cumsum(dim=-1, dtype=torch.float64)
            for slot, pattern in enumerate(a_shapes):
                rows = _a_shape_row_mass(cumulative, start, pattern.sink, min(pattern.local, n))
                a_mass[:, slot] += rows.sum(dim=1)
                if end > last_start:
                    a_last[:, slot] += rows[:, max(0, last_start - start) :].sum(dim=1)
            del cumulative
        del probs, probs_padded
    return column_mass, a_mass, a_last


def _tile_mass(column_mass: torch.Tensor) -> torch.Tensor:
    """``T (G, R, R)``: mass of every (query block, key block) tile."""
    groups, blocks, n = column_mass.shape
    padded = torch.zeros(groups, blocks, blocks * TILE, dtype=column_mass.dtype, device=column_mass.device)
    padded[..., :n] = column_mass
    return padded.view(groups, blocks, blocks, TILE).sum(dim=-1)


def _vertical_slash_mass(index, column_mass: torch.Tensor, tile_mass: torch.Tensor) -> torch.Tensor:
    """Mass per head and query block, ``(G, R)``, of the walked blocks and of the gathered columns outside them."""
    groups, blocks, n = column_mass.shape
    device = column_mass.device
    keep = vertical_slash_keep(index, n)
    h = torch.arange(groups, device=device).view(-1, 1, 1)
    m = torch.arange(blocks, device=device)
    walked = vertical_slash_walks(keep, 0, h, m.view(1, -1, 1), m.view(1, 1, -1))  # [G, R, R]
    mass = (tile_mass * walked).sum(dim=2)
    key = torch.arange(n, device=device)
    gathered = vertical_slash_gathers(keep, 0, h, m.view(1, -1, 1), key.view(1, 1, -1))  # [G, R, N]
    gathered = gathered & ~walked[:, :, key // TILE]
    return mass + (column_mass * gathered).sum(dim=2)


def _block_sparse_mass(index, tile_mass: torch.Tensor, block_size: int = TILE) -> torch.Tensor:
    """Mass per head and 64-row query block, ``(G, R)``, of the listed blocks. A listed block of ``block_size``
    tokens covers ``(block_size / 64)^2`` tiles (tiles right of the diagonal have no mass)."""
    tiles = tile_mass.shape[1]
    walked = block_sparse_keep(index, block_size).walked[0]  # [G, R, R]
    per_block = block_size // TILE
    if per_block > 1:  # a listed block covers per_block x per_block tiles
        walked = walked.repeat_interleave(per_block, dim=1).repeat_interleave(per_block, dim=2)[:, :tiles, :tiles]
    return (tile_mass * walked).sum(dim=2)


def _mask_rows(candidate, index, n: int, row_start: int, heads: int) -> torch.Tensor | None:
    """``(H, rows, N)`` mask rows ``[row_start, n)`` the kernel computes, ``None`` for dense."""
    if isinstance(candidate, VerticalSlash):
        return vertical_slash_index_mask_rows(index, n, row_start, n)[0]
    if isinstance(candidate, BlockSparse):
        return block_sparse_index_mask_rows(index, n, candidate.block_size, row_start, n)[0]
    if isinstance(candidate, AShape):
        sink = torch.full((heads,), candidate.sink)
        local = torch.full((heads,), candidate.local)
        return a_shape_index_mask_rows(sink, local, n, row_start, n)[0]
    return None


def _output_errors(q, k, v, candidates, indices, error_rows: int, scale: float) -> torch.Tensor:
    """``(len(candidates), Hq)`` mean relative L2 error of the last ``error_rows`` output rows vs dense."""
    _, hq, n, _ = q.shape
    group = hq // k.shape[1]
    kv_head = torch.arange(hq, device=q.device) // group
    row_start = n - min(error_rows, n)
    probs = _probabilities(q[0, :, row_start:], k[0].index_select(0, kv_head), row_start, scale)  # [H, e, N]
    values = v[0].index_select(0, kv_head).float()
    dense = torch.matmul(probs, values)
    dense_norm = dense.norm(dim=-1).clamp_min(1e-30)
    errors = torch.zeros(len(candidates), hq, dtype=torch.float64)
    for slot, (candidate, index) in enumerate(zip(candidates, indices)):
        mask = _mask_rows(candidate, index, n, row_start, hq)
        if mask is None:
            continue
        kept = probs * mask.to(probs.device)
        out = torch.matmul(kept, values) / kept.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        errors[slot] = ((out - dense).norm(dim=-1) / dense_norm).mean(dim=-1).double().cpu()
    return errors


def score_layer(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    candidates: Sequence,
    *,
    sm_scale: float | None = None,
    error_rows: int = 64,
) -> list[list[dict]]:
    """Score ``candidates`` on every query head of one layer of one example.

    Args:
        q: ``(1, Hq, N, D)``; k, v: ``(1, Hkv, N, D)`` (after RoPE), ``Hq % Hkv == 0``.
        candidates: patterns (:class:`AShape`, :class:`VerticalSlash`, :class:`BlockSparse` with block size 64 or 128,
            :class:`Dense`), e.g. from :func:`~minference.search.candidates.candidate_space`.
        sm_scale: score scale, default ``1 / sqrt(D)``.
        error_rows: last query rows on which the output error is measured; 0 skips it (error reported as 0).

    Returns:
        ``scores[head][slot] = {"tiles": {"walked", "gathered", "estimate"}, "recall": r, "recall_last": l,
        "error": e}`` for ``candidates[slot]``: ``r`` the attention mass kept averaged over query rows, ``l`` the
        same over the rows of the last query block, ``e`` the mean relative L2 output error on the last rows.

    Raises:
        ValueError: batch is not 1, shapes disagree, ``error_rows < 0`` or a block-sparse block size is not 64 or 128.
        TypeError: a candidate is not a pattern.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or q.shape[0] != 1:
        raise ValueError(f"q, k, v must be (1, H, N, D); got q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    if k.shape != v.shape or k.shape[2:] != q.shape[2:] or q.shape[1] % k.shape[1]:
        raise ValueError(f"k, v must be (1, Hkv, N, D) with Hq % Hkv == 0 for q{tuple(q.shape)}; got k{tuple(k.shape)}")
    if isinstance(error_rows, bool) or not isinstance(error_rows, int) or error_rows < 0:
        raise ValueError(f"error_rows must be an int >= 0, got {error_rows!r}")
    for slot, candidate in enumerate(candidates):
        if not isinstance(candidate, (AShape, VerticalSlash, BlockSparse, Dense)):
            raise TypeError(f"candidates[{slot}] must be a pattern, got {candidate!r}")
        if isinstance(candidate, BlockSparse) and candidate.block_size not in SEARCHED_BLOCK_SIZES:
            raise ValueError(f"candidates[{slot}]: the search scores block-sparse with block_size in "
                             f"{SEARCHED_BLOCK_SIZES} only, got {candidate.block_size}")
    _, hq, n, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    indices = _indices(q, k, candidates, sm_scale)
    a_slots = [slot for slot, c in enumerate(candidates) if isinstance(c, AShape)]
    a_shapes = [candidates[slot] for slot in a_slots]

    recall = torch.ones(len(candidates), hq, dtype=torch.float64)
    recall_last = torch.ones(len(candidates), hq, dtype=torch.float64)
    heads_per_group = max(1, WORK_BYTES // (24 * (-(-n // TILE)) * n))  # C, its products and masks per head
    for first in range(0, hq, heads_per_group):
        heads = list(range(first, min(hq, first + heads_per_group)))
        head_index = torch.tensor(heads, device=q.device)
        column_mass, a_mass, a_last = _block_summaries(q, k, heads, a_shapes, scale)
        block_total = column_mass.sum(dim=2)  # (G, R): the number of rows of each query block
        total = block_total.sum(dim=1).clamp_min(1e-30)
        last_total = block_total[:, -1].clamp_min(1e-30)
        tile_mass = _tile_mass(column_mass)
        for slot, (candidate, index) in enumerate(zip(candidates, indices)):
            if isinstance(candidate, VerticalSlash):
                kept = _vertical_slash_mass(_select(index, head_index), column_mass, tile_mass)
            elif isinstance(candidate, BlockSparse):
                kept = _block_sparse_mass(_select(index, head_index), tile_mass, candidate.block_size)
            else:
                continue
            recall[slot, heads] = (kept.sum(dim=1) / total).cpu()
            recall_last[slot, heads] = (kept[:, -1] / last_total).cpu()
        for a_slot, slot in enumerate(a_slots):
            recall[slot, heads] = (a_mass[:, a_slot] / total).cpu()
            recall_last[slot, heads] = (a_last[:, a_slot] / last_total).cpu()
    recall.clamp_(max=1.0)
    recall_last.clamp_(max=1.0)

    errors = torch.zeros(len(candidates), hq, dtype=torch.float64)
    if error_rows:
        errors = _output_errors(q, k, v, candidates, indices, error_rows, scale)
    tiles = [_tiles(candidate, index, n, hq) for candidate, index in zip(candidates, indices)]
    return [
        [
            {"tiles": tiles[slot][head], "recall": float(recall[slot, head]),
             "recall_last": float(recall_last[slot, head]), "error": float(errors[slot, head])}
            for slot in range(len(candidates))
        ]
        for head in range(hq)
    ]
