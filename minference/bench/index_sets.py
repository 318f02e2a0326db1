"""Index sets that look like real heads, for any length N.

Random q and k make the vertical-slash estimator choose nearly random diagonals, which at long N is almost
dense; real heads are far sparser. Each set below returns exactly what the estimators return, so it feeds
``ops.vertical_slash_attention`` / ``ops.block_sparse_attention`` directly:

``local_heavy``
    Sinks and the nearest diagonals: vertical-slash keeps columns ``0 .. V-1`` and offsets ``0 .. S-1``;
    block-sparse keeps block 0 and the ``top_k - 1`` nearest blocks. The sparsest realistic head.
``measured``
    Statistics captured from a real model (SmolLM2-135M at 8K tokens, ``data/smollm2_8k_head_stats.json``,
    made by :mod:`minference.bench.capture`), extended to N: every captured head has a diagonal-mass profile
    over half-octave offset bins and a column-mass profile over relative positions plus its sink mass. At
    length N a head's offsets get the weight of their bin; offsets past the captured length follow a power law
    fitted to the last four bins (log-log least squares, slope clamped to [-4, 0]). Sinks (first 64 columns)
    keep their captured mass; the remaining column mass is spread over the other ``N - 64`` columns by
    relative position. After the forced sinks and local diagonals (as the estimator forces them), the budget
    goes to the top of ``log(weight) + temperature * Gumbel noise``: temperature 0 is the deterministic top-k
    of a smooth profile (too local: real per-offset scores are spiky), 1 samples in proportion to the weight
    (too spread). Noise is drawn per offset and per column: drawing it per run of 64 offsets (as a hot column
    crossing the 64 estimation queries would) fitted the 8K densities worse (median modelled 0.15 vs real
    0.32). Each head's temperature is fitted at capture time so that its modelled tile density at 8K equals
    the density of the real estimator's choices on the same q, k (budget scaled to 8K); the file records both
    per head. Query heads take captured heads in a seeded random order. Block-sparse weights block ``(m, j)``
    by the offset profile at ``(m - j) * bs`` plus the column profile of block ``j``. If the data file is
    missing, the set falls back to ``synthetic`` (a fixed power-law profile, slope -1, sink mass 0.3,
    temperature 0.3) and says so in its label. At long N this model sits between ``local_heavy`` and
    ``random`` (vertical-slash (1000, 6096) at 128K: mean density about 0.6); how far real far-off diagonals
    cluster is what it cannot know from 8K.
``measured_qwen``
    The same model of real heads, fitted to Qwen2.5-Coder-0.5B-Instruct read at 32K tokens, its native window
    (``data/qwen2.5-coder-0.5b_32k_head_stats.json``): a model trained for long context, captured at 4x the
    length, so less of the profile is extrapolated at 128K-1M.
``random``
    Adversarial: uniformly random columns and diagonals (plus the forced sinks and local diagonals) and
    uniformly random key blocks per query block. At long N this is nearly dense for vertical-slash.

Choices come from a counter-based hash of ``(seed, batch, head, position)``, so they are identical on CPU and
GPU and a larger budget always keeps a superset of a smaller one (density is monotone in the budget).
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Optional, Sequence

import torch

from ..patterns import BlockSparse, VerticalSlash
from .profiles import SINK_COLUMNS, slash_edges
from .shapes import INDEX_SETS

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "smollm2_8k_head_stats.json")
MEASURED_FILES = {
    "measured": DATA_FILE,
    "measured_qwen": os.path.join(os.path.dirname(__file__), "data", "qwen2.5-coder-0.5b_32k_head_stats.json"),
}
"""The captured statistics behind each measured set."""
ROW_CHUNK = 1024
CHUNK_ELEMENTS = 1 << 24
"""The measured block-sparse generator scores at most ``ROW_CHUNK`` query blocks, ``CHUNK_ELEMENTS`` scores,
at once."""

_SYNTHETIC = {
    "slash_edges": [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192],
    "tokens": 8192,
    "sink_columns": 64,
    "vertical_bins": 1,
}


def load_head_stats(path: Optional[str] = None, index_set: str = "measured") -> Optional[dict]:
    """The captured statistics document of ``index_set`` (or the file ``path``), or ``None`` when the file is
    missing (the set then falls back to ``synthetic``)."""
    path = path or MEASURED_FILES[index_set]
    if not os.path.exists(path):
        return None
    return _load(path)


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as f:
        document = json.load(f)
    if not document.get("layers"):
        raise ValueError(f"{path}: no captured layers")
    return document


def index_set_label(index_set: str, stats: Optional[dict] = None) -> str:
    """The label rows carry: a measured set becomes ``synthetic`` when no captured statistics are available."""
    _check_index_set(index_set)
    if index_set in MEASURED_FILES and _stats_for(index_set, stats) is None:
        return "synthetic"
    return index_set


def _stats_for(index_set: str, stats: Optional[dict]) -> Optional[dict]:
    """``stats`` (given for the ``measured`` set) or the file of ``index_set``."""
    return stats if stats is not None and index_set == "measured" else load_head_stats(index_set=index_set)


def _check_index_set(index_set: str) -> None:
    if index_set not in INDEX_SETS:
        raise ValueError(f"index_set must be one of {INDEX_SETS}, got {index_set!r}")


def _check_sizes(n: int, batch: int, heads: int) -> None:
    for name, value in (("n", n), ("batch", batch), ("heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _mix(x: torch.Tensor) -> torch.Tensor:
    """One splitmix64-style round on int64 (wrapping multiplication)."""
    x = x ^ (x >> 31)
    x = x * 0x5851F42D4C957F2D
    x = x ^ (x >> 29)
    x = x * 0x14057B7EF767814F
    return x ^ (x >> 32)


def hash_uniform(seed: int, *coords: torch.Tensor) -> torch.Tensor:
    """Float64 uniforms in ``(0, 1)`` from integer coordinates (broadcast), the same on every device."""
    x = torch.tensor(seed * 0x9E3779B9 + 0x632BE5AB, dtype=torch.int64, device=coords[0].device)
    for c in coords:
        x = _mix(x ^ (c.long() + 0x2545F491))
    return ((x >> 11) & ((1 << 52) - 1)).double().add_(0.5).div_(float(1 << 52))


def _gumbel(seed: int, *coords: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(hash_uniform(seed, *coords)))


def _coords(batch: int, heads: int, device):
    b = torch.arange(batch, device=device).view(-1, 1, 1)
    h = torch.arange(heads, device=device).view(1, -1, 1)
    return b, h


def _top_choices(
    log_weight: torch.Tensor, forced: int, budget: int, seed: int, stream: int, temperature=1.0
) -> torch.Tensor:
    """``(B, H, budget)`` int32 positions: the first ``forced`` always, the rest the top of
    ``log_weight + temperature * Gumbel`` (``temperature`` a float or ``(1, H, 1)``)."""
    batch, heads, n = log_weight.shape
    b, h = _coords(batch, heads, log_weight.device)
    pos = torch.arange(n, device=log_weight.device).view(1, 1, -1)
    noise = _gumbel(seed, b, h, pos, torch.tensor(stream, device=pos.device))
    score = log_weight + temperature * noise
    score = score.masked_fill(pos < forced, float("inf"))
    return score.topk(budget, dim=-1).indices.to(torch.int32)


def _head_profiles(stats: dict, heads: int, seed: int) -> list[dict]:
    pool = [head for layer in stats["layers"] for head in layer]
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
    return [pool[order[h % len(pool)]] for h in range(heads)]


def _synthetic_profiles(heads: int) -> list[dict]:
    edges = _SYNTHETIC["slash_edges"]
    centres = [max(0.5, (lo + hi - 1) / 2) for lo, hi in zip(edges[:-1], edges[1:])]
    return [
        {"slash": [1.0 / c for c in centres], "vertical": [1.0], "sink_mass": 0.3, "temperature": 0.3}
    ] * heads


def slash_weights(profile: dict, edges: Sequence[int], n: int, device="cpu") -> torch.Tensor:
    """``(n,)`` float64 log-weights of diagonal offsets ``0 .. n-1`` for one head (bins, then a power-law
    tail)."""
    edges_t = torch.tensor(list(edges), dtype=torch.float64)
    density = torch.tensor(profile["slash"], dtype=torch.float64).clamp_min(1e-30)
    centres = ((edges_t[:-1] + edges_t[1:] - 1) / 2).clamp_min(0.5)
    tail = min(4, len(centres))
    x, y = centres[-tail:].log(), density[-tail:].log()
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum().clamp_min(1e-12))
    slope = min(0.0, max(-4.0, slope))
    offsets = torch.arange(n, dtype=torch.float64, device=device)
    inside = torch.bucketize(offsets, edges_t.to(device), right=True).sub_(1).clamp_(0, len(density) - 1)
    log_w = density.log().to(device)[inside]
    last = float(edges_t[-1])
    anchor = float(density[-1].log()) - slope * math.log(float(centres[-1]))
    beyond = offsets >= last
    return torch.where(beyond, anchor + slope * offsets.clamp_min(1.0).log(), log_w)


def vertical_weights(profile: dict, sink_columns: int, n: int, captured: int, device="cpu") -> torch.Tensor:
    """``(n,)`` float64 log-weights of key columns for one head: sinks keep their mass, the rest is
    stretched."""
    columns = torch.arange(n, dtype=torch.float64, device=device)
    bins = torch.tensor(profile["vertical"], dtype=torch.float64, device=device).clamp_min(1e-30)
    rest = max(1, n - sink_columns)
    where = ((columns - sink_columns).clamp_min(0) * len(bins) / rest).long().clamp_max(len(bins) - 1)
    spread = bins[where] * max(1, captured - sink_columns) / rest
    sink = torch.full_like(columns, max(profile["sink_mass"], 1e-30) / sink_columns)
    return torch.where(columns < sink_columns, sink, spread).log()


def _profile_weights(stats: Optional[dict], n: int, heads: int, seed: int, device):
    """``(1, H, n)`` log-weights of offsets and of columns, and ``(1, H, 1)`` temperatures, of the measured
    heads
    (synthetic ones without ``stats``)."""
    source = stats if stats is not None else _SYNTHETIC
    profiles = _head_profiles(stats, heads, seed) if stats is not None else _synthetic_profiles(heads)
    return _weights(profiles, source["slash_edges"], source["sink_columns"], source["tokens"], n, device)


def _weights(profiles: Sequence[dict], edges, sink_columns: int, captured: int, n: int, device):
    slash = torch.stack([slash_weights(p, edges, n, device) for p in profiles]).unsqueeze(0)
    vertical = torch.stack(
        [vertical_weights(p, sink_columns, n, captured, device) for p in profiles]
    ).unsqueeze(0)
    temperature = torch.tensor(
        [p.get("temperature", 1.0) for p in profiles], dtype=torch.float64, device=device
    )
    return slash, vertical, temperature.view(1, -1, 1)


def measured_vertical_slash(
    profiles_or_stats, n: int, batch: int, heads: int, pattern: VerticalSlash, *, seed: int = 0, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical-slash indices from captured profiles: a statistics document, or a list of per-head profiles
    (one layer, as :func:`minference.bench.profiles.head_profiles` returns, used in head order)."""
    if isinstance(profiles_or_stats, list):
        profiles = profiles_or_stats[:heads]
        slash, vertical, temperature = _weights(profiles, slash_edges(n), SINK_COLUMNS, n, n, device)
    else:
        slash, vertical, temperature = _profile_weights(profiles_or_stats, n, heads, seed, device)
    slash, vertical = slash.expand(batch, -1, -1), vertical.expand(batch, -1, -1)
    vertical_idx = _top_choices(
        vertical, min(pattern.sink, n), min(pattern.vertical, n), seed, 1, temperature
    )
    slash_idx = _top_choices(
        slash, min(pattern.local, n), min(pattern.slash, n), seed, 2, temperature
    )
    return vertical_idx, slash_idx


def vertical_slash_indices(
    index_set: str,
    n: int,
    batch: int,
    heads: int,
    pattern: VerticalSlash,
    *,
    seed: int = 0,
    device="cpu",
    stats: Optional[dict] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``vertical_idx (B, H, V)`` and ``slash_idx (B, H, S)`` int32 of ``index_set`` at length ``n``.

    ``V = min(pattern.vertical, n)``, ``S = min(pattern.slash, n)``; all values lie in ``[0, n)`` and are
    unique per head; the first ``pattern.sink`` columns and ``pattern.local`` offsets are always included.

    Raises:
        ValueError: unknown ``index_set`` or a size below 1. TypeError: a size is not an int.
    """
    _check_index_set(index_set)
    _check_sizes(n, batch, heads)
    if not isinstance(pattern, VerticalSlash):
        raise TypeError(f"pattern must be a VerticalSlash, got {type(pattern).__name__}")
    vertical, slash = min(pattern.vertical, n), min(pattern.slash, n)
    if index_set == "local_heavy":
        vertical_idx = torch.arange(vertical, dtype=torch.int32, device=device).expand(batch, heads, -1)
        slash_idx = torch.arange(slash, dtype=torch.int32, device=device).expand(batch, heads, -1)
        return vertical_idx.contiguous(), slash_idx.contiguous()
    if index_set == "random":
        flat = torch.zeros(batch, heads, n, dtype=torch.float64, device=device)
        vertical_idx = _top_choices(flat, min(pattern.sink, n), vertical, seed, 1)
        slash_idx = _top_choices(flat, min(pattern.local, n), slash, seed, 2)
        return vertical_idx, slash_idx
    return measured_vertical_slash(
        _stats_for(index_set, stats), n, batch, heads, pattern, seed=seed, device=device
    )


def block_sparse_indices(
    index_set: str,
    n: int,
    batch: int,
    heads: int,
    pattern: BlockSparse,
    *,
    seed: int = 0,
    device="cpu",
    stats: Optional[dict] = None,
) -> torch.Tensor:
    """``block_idx (B, H, R, K)`` int32 of ``index_set``, ``R = ceil(n / block_size)``, ``K = min(top_k, R)``.

    Values lie in ``[-1, R)``, causal (``<= m`` in row ``m``), ``-1`` for unused slots. ``random`` draws with
    replacement, so a row may list a block twice (the index builder removes duplicates).

    Raises:
        ValueError: unknown ``index_set`` or a size below 1. TypeError: a size is not an int.
    """
    _check_index_set(index_set)
    _check_sizes(n, batch, heads)
    if not isinstance(pattern, BlockSparse):
        raise TypeError(f"pattern must be a BlockSparse, got {type(pattern).__name__}")
    rows = -(-n // pattern.block_size)
    width = min(pattern.top_k, rows)
    m = torch.arange(rows, device=device).view(1, 1, -1, 1)
    slot = torch.arange(width, device=device).view(1, 1, 1, -1)
    if index_set == "local_heavy":
        ids = torch.where(slot == 0, 0, m - slot + 1)
        ids = torch.where(ids < 0, -1, ids).expand(batch, heads, rows, width)
        return ids.to(torch.int32).contiguous()
    b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    h = torch.arange(heads, device=device).view(1, -1, 1, 1)
    if index_set == "random":
        ids = (hash_uniform(seed, b, h, m, slot) * (m + 1).double()).long().clamp_max(m)
        return ids.expand(batch, heads, rows, width).to(torch.int32).contiguous()
    stats = _stats_for(index_set, stats)
    slash, vertical, temperature = _profile_weights(stats, n, heads, seed, device)
    bs = pattern.block_size
    offsets = (torch.arange(rows, device=device) * bs + bs // 2).clamp_max(n - 1)
    block_slash = slash[..., offsets].exp()  # [1, H, R] weight of block-diagonal offset d
    block_vertical = (
        torch.nn.functional.pad(vertical.exp(), (0, rows * bs - n)).view(1, heads, rows, bs).sum(-1)
    )
    out = torch.empty(batch, heads, rows, width, dtype=torch.int32, device=device)
    key = torch.arange(rows, device=device).view(1, 1, 1, -1)
    chunk = max(1, min(ROW_CHUNK, CHUNK_ELEMENTS // (batch * heads * rows)))
    for start in range(0, rows, chunk):
        mc = m[:, :, start : start + chunk]
        distance = (mc - key).clamp_min(0)
        weight = (
            block_slash[..., None, :]
            .expand(-1, -1, mc.shape[2], -1)
            .gather(3, distance.expand(1, heads, -1, -1))
            + block_vertical[:, :, None, :] * bs
        )
        score = weight.log() + temperature.unsqueeze(-1) * _gumbel(seed, b, h, mc, key)
        score = score.masked_fill(key > mc, float("-inf"))
        values, ids = score.topk(width, dim=-1)
        out[:, :, start : start + chunk] = torch.where(values > float("-inf"), ids, -1).to(torch.int32)
    return out
