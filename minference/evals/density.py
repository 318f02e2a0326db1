"""Measured attention density: the fraction of the causal score matrix a vertical-slash config actually computes.

A probe forward (dense attention, so the model's output is unchanged) records, for every layer and query head, the
columns and diagonals MInference's own estimator ranks highest on that prompt. Any budget is then a prefix of these
rankings, so the density of any (vertical, slash) budget is computed without another forward: the tile index is
built with the library's index builder and its area counted exactly (whole tiles of the op's grid for diagonals,
gathered columns outside them, causal clipping), the same set the kernel walks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..index import build_vertical_slash_index
from ..ops import default_vertical_slash_tile
from ..patterns import VerticalSlash
from ..patterns import vertical_slash as vertical_slash_pattern
from ..patterns.vertical_slash import TILE
from .methods import VERTICAL_SHARE

PROBE_NAME = "minference_eval_density_probe"


def vertical_slash_area(n: int, vertical_idx: torch.Tensor, slash_idx: torch.Tensor,
                        tile: int = TILE) -> torch.Tensor:
    """Entries ``(i, j)``, ``j <= i``, the kernel computes for each head on the ``tile``-token grid; ``(B, H)``
    float64.

    Args:
        n: sequence length. vertical_idx ``(B, H, NV)``, slash_idx ``(B, H, NS)``: chosen columns and offsets in
            ``[0, n)`` (duplicates allowed). tile: the grid (``tile`` of ``ops.vertical_slash_attention``).
    """
    index = build_vertical_slash_index(n, vertical_idx, slash_idx, tile)
    present = index.block_present.double()  # [B, H, R], offset p walked
    batch, heads, blocks = present.shape
    rows = torch.full((blocks,), float(tile), dtype=torch.float64, device=present.device)
    rows[-1] = n - tile * (blocks - 1)
    walked_off_diagonal = present.cumsum(-1) - present[..., :1]  # offsets 1..m walked by query block m

    columns = index.columns.long()
    valid = columns < n
    hist = torch.zeros(batch, heads, blocks + 1, dtype=torch.float64, device=present.device)
    hist.scatter_add_(2, torch.where(valid, columns // tile, blocks), valid.double())
    hist = hist[..., :blocks]
    before = hist.cumsum(-1) - hist  # columns in key blocks b < m
    # sum_{p} present[p] * hist[m - p]: columns whose key block is walked anyway (p = 0 is block m itself)
    overlap = F.conv1d(
        F.pad(hist.reshape(1, batch * heads, blocks), (blocks - 1, 0)),
        present.reshape(batch * heads, 1, blocks).flip(-1),
        groups=batch * heads,
    ).reshape(batch, heads, blocks)
    overlap = overlap - present[..., :1] * hist
    per_block = rows * (rows + 1) / 2 + tile * rows * walked_off_diagonal + rows * (before - overlap)
    return per_block.sum(-1)


def causal_area(n: int) -> int:
    return n * (n + 1) // 2


@dataclass
class Rankings:
    """Per layer, the estimator's ranked columns ``(B, Hq, W)`` and diagonals ``(B, Hq, W)`` on one prompt, and the
    grid the sparse op keeps diagonals on for that model's inputs (its density is measured on that grid)."""

    n: int
    vertical: list[torch.Tensor]
    slash: list[torch.Tensor]
    tile: int = TILE

    def density(self, vertical: int, slash: int) -> float:
        """Measured density of uniform vertical-slash budgets (prefixes of the rankings), over all layers and heads."""
        if vertical < 1 or slash < 1:
            raise ValueError(f"budgets must be >= 1, got vertical={vertical}, slash={slash}")
        kept = 0.0
        heads = 0
        for v_rank, s_rank in zip(self.vertical, self.slash):
            area = vertical_slash_area(self.n, v_rank[..., :vertical], s_rank[..., :slash], self.tile)
            kept += float(area.sum())
            heads += area.numel()
        return kept / (heads * causal_area(self.n))


def _probe_attention(store: dict, width: int):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def probe(module, query, key, value, attention_mask, **kwargs):
        n = query.shape[2]
        pattern = VerticalSlash(vertical=min(width, n), slash=min(width, n))
        heads = list(range(query.shape[1]))
        vertical, slash = vertical_slash_pattern.estimate(query, key, [pattern] * len(heads), heads)
        store["vertical"].append(vertical.cpu())
        store["slash"].append(slash.cpu())
        store["tile"] = default_vertical_slash_tile(query)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    return probe


@torch.no_grad()
def rank_lines(model, input_ids: torch.Tensor, width: int | None = None) -> Rankings:
    """One dense forward over ``input_ids (1, N)`` recording the estimator's top ``width`` columns and diagonals.

    The model's attention implementation is restored afterwards, also on error.
    """
    from transformers import AttentionInterface

    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must have shape (1, N), got {tuple(input_ids.shape)}")
    n = input_ids.shape[1]
    width = n if width is None else min(width, n)
    store = {"vertical": [], "slash": [], "tile": TILE}
    AttentionInterface.register(PROBE_NAME, _probe_attention(store, width))
    previous = model.config._attn_implementation
    model.set_attn_implementation(PROBE_NAME)
    try:
        model(input_ids.to(model.device), use_cache=False, logits_to_keep=1)
    finally:
        model.set_attn_implementation(previous)
    return Rankings(n, store["vertical"], store["slash"], store["tile"])


def calibrate(rankings: Rankings, target: float, tolerance: float = 0.005) -> tuple:
    """Uniform (vertical, slash) budgets, in the default 1000:6096 ratio, whose measured density is closest to
    ``target`` from below (or the smallest budgets when even those exceed it). Returns ``(vertical, slash, density)``.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must lie in (0, 1], got {target}")

    def budgets(lines: int) -> tuple:
        vertical = max(1, round(lines * VERTICAL_SHARE))
        return vertical, max(1, lines - vertical)

    lo, hi = 2, 2 * rankings.n
    best = (*budgets(lo), rankings.density(*budgets(lo)))
    while lo <= hi:
        mid = (lo + hi) // 2
        density = rankings.density(*budgets(mid))
        if density <= target + tolerance:
            best = (*budgets(mid), density)
            lo = mid + 1
        else:
            hi = mid - 1
    return best
