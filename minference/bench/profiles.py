"""The per-head attention profiles the ``measured`` index set is built from: their bins and how one layer's are
computed from q and k. :mod:`minference.bench.capture` records them from a real model,
:mod:`minference.bench.index_sets` turns them into indices at any length; both read this one definition.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

SINK_COLUMNS = 64
"""Columns counted as sinks (their mass is ``sink_mass``; the vertical profile starts after them)."""

VERTICAL_BINS = 16
"""Equal bins of relative key position for the vertical profile."""

LAST_Q = 64
"""Queries at the end of the sequence whose attention is summarised (as in the vertical-slash estimator)."""


def slash_edges(n: int) -> list[int]:
    """Half-octave bin edges of diagonal offsets ``[0, 1, 2, 3, 4, 6, 8, 12, ...]`` up to and including
    ``n``."""
    edges, step = [0, 1, 2, 3], 2
    while edges[-1] < n:
        edges.append(min(n, 2 * step))
        if edges[-1] < n:
            edges.append(min(n, 3 * step))
        step *= 2
    return sorted(set(edges))


def head_profiles(q: torch.Tensor, k: torch.Tensor, sm_scale: Optional[float] = None) -> list[dict]:
    """Profiles of every query head of one layer.

    Args:
        q: ``(1, Hq, N, D)``; k: ``(1, Hkv, N, D)``, after RoPE.

    Returns:
        ``Hq`` dicts with ``slash`` (mass per offset in each :func:`slash_edges` bin), ``vertical``
        (:data:`VERTICAL_BINS` masses per column) and ``sink_mass``.
    """
    _, hq, n, head_dim = q.shape
    if n <= SINK_COLUMNS + VERTICAL_BINS:
        raise ValueError(f"q must have more than {SINK_COLUMNS + VERTICAL_BINS} tokens, got {n}")
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    n_last = min(LAST_Q, n)
    rows = torch.arange(n - n_last, n)
    cols = torch.arange(n)
    k_full = k.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(q[:, :, -n_last:].float(), k_full.transpose(-1, -2)) * scale  # [1, Hq, n_last, N]
    scores = scores.masked_fill(cols.view(1, -1) > rows.view(-1, 1), float("-inf"))
    probs = torch.softmax(scores, dim=-1)[0]  # [Hq, n_last, N]
    columns = probs.sum(dim=1) / n_last  # [Hq, N], sums to 1 per head
    offsets = (rows.view(-1, 1) - cols.view(1, -1)).clamp_min(0)  # [n_last, N]
    diagonals = torch.zeros(hq, n).scatter_add_(
        1,
        offsets.reshape(1, -1).expand(hq, -1),
        (probs * (cols.view(1, -1) <= rows.view(-1, 1))).reshape(hq, -1),
    )
    diagonals /= n_last
    edges = slash_edges(n)
    profiles = []
    for h in range(hq):
        slash = [float(diagonals[h, lo:hi].mean()) for lo, hi in zip(edges[:-1], edges[1:])]
        rest = columns[h, SINK_COLUMNS:]
        bins = torch.tensor_split(rest, VERTICAL_BINS)
        profiles.append(
            {
                "slash": [rounded(x) for x in slash],
                "vertical": [rounded(float(b.mean())) for b in bins],
                "sink_mass": rounded(float(columns[h, :SINK_COLUMNS].sum())),
            }
        )
    return profiles


def rounded(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")
