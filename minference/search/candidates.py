"""The candidate space of the search and what each candidate costs the kernel, in tiles.

A *tile* is one 64 x 64 block of scores the kernel computes (a ``QK^T`` tile and its ``PV`` product). Costs are read
off the same index the kernel walks, so they count exactly the work the kernel does on this input:

- vertical-slash: the key blocks walked (``block_count``), plus the gathered column tiles
  (``ceil(column_count / 64)`` per query block), plus the estimation (the last 64 queries against every key:
  ``ceil(N / 64)`` tiles per head);
- block-sparse: the key blocks listed per query block (``block_count``; with 128-token blocks under key ``wide``,
  one per 128 x 128 tile, weighted as four 64 x 64 tiles unless calibrated), plus the pooled estimation:
  ``R^2 / 8192`` tiles for the ``R x R`` pooled score matrix (``2 * 64 * 64`` products per tile, key
  ``block_pairs``) and ``R`` pooled blocks (``pooled_blocks``, weight 0 unless calibrated: their cost is memory
  traffic, not products);
- A-shape: the sink blocks and window blocks of every query block, as the kernel derives them from ``(sink, local)``;
- dense: every causal tile, ``R (R + 1) / 2``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..index import TILE, BlockSparseIndex, VerticalSlashIndex, tiles
from ..patterns import AShape, BlockSparse, Dense, VerticalSlash

KINDS = ("a_shape", "vertical_slash", "block_sparse", "dense")
"""Pattern kinds the search considers, in the order used to break exact ties (simplest first)."""

UPSTREAM_VERTICAL_SLASH = ((30, 800), (100, 800), (500, 700), (1000, 4096), (1000, 6096), (3500, 100))
"""The ``(vertical, slash)`` budgets of the upstream MInference configs, always among the candidates when they fit."""


WEIGHTS = ("walked", "gathered", "estimate", "block_pairs", "pooled_blocks", "wide")


@dataclass(frozen=True)
class TileCosts:
    """Weights that turn tile counts into one cost, all in ``unit``: ``walked`` (a contiguous key tile),
    ``gathered`` (a tile of gathered vertical columns), ``estimate`` (a vertical-slash estimation tile: the last 64
    queries against 64 keys), ``block_pairs`` (a block-sparse estimation tile of pooled block pairs; the same as
    ``estimate`` unless given), ``pooled_blocks`` (one pooled block; 0 unless given) and ``wide`` (one 128 x 128
    tile of block-sparse with 128-token blocks; four times ``walked`` unless given, its products in 64 x 64 tiles).

    The default counts tiles. A measured calibration (e.g. ms per tile of each kind on the target GPU, from the
    micro-benchmark) makes the search compare candidates by predicted time instead. The two estimators need their
    own weights there: block-sparse estimation time grows as ``a R + b R^2``, not as vertical-slash's ``N / 64``.
    On an H100/H200, where 128-token blocks run as whole 128 x 128 programs, a 128 x 128 tile measured about 3.6
    times a 64 x 64 one (``wide`` = 3.6 ``walked``: 74 against 67 % of cuDNN's rate at 128K, docs/benchmarks.md).

    Raises:
        ValueError: a weight is negative or not finite, or ``unit`` is empty.
    """

    walked: float = 1.0
    gathered: float = 1.0
    estimate: float = 1.0
    block_pairs: float | None = None
    pooled_blocks: float = 0.0
    wide: float | None = None
    unit: str = "tiles"

    def __post_init__(self):
        for name in WEIGHTS:
            value = getattr(self, name)
            if name in ("block_pairs", "wide") and value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.unit:
            raise ValueError("unit must be a non-empty string")

    def cost(self, tiles: dict) -> float:
        """Weighted cost of a ``{"walked", "gathered", "estimate"[, "block_pairs", "pooled_blocks", "wide"]}``
        count. Counts without the block-sparse keys (scores of earlier versions) carry its estimation in
        ``estimate``."""
        block_pairs = self.estimate if self.block_pairs is None else self.block_pairs
        wide = 4 * self.walked if self.wide is None else self.wide
        return (self.walked * tiles["walked"] + self.gathered * tiles["gathered"] + self.estimate * tiles["estimate"]
                + block_pairs * tiles.get("block_pairs", 0.0) + self.pooled_blocks * tiles.get("pooled_blocks", 0.0)
                + wide * tiles.get("wide", 0.0))

    @classmethod
    def parse(cls, text: str) -> TileCosts:
        """Read ``"walked=6.1e-6,gathered=6.1e-6,estimate=1.2e-4,block_pairs=1.7e-4,pooled_blocks=7.4e-5,unit=ms"``
        (any subset of the keys).

        Raises:
            ValueError: an unknown key, a malformed item or a bad value.
        """
        values: dict = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in WEIGHTS + ("unit",):
                raise ValueError(f"tile costs must look like 'walked=1,gathered=1.2,estimate=1,unit=tiles' (keys "
                                 f"{', '.join(WEIGHTS)}, unit), got {item!r}")
            values[key] = value if key == "unit" else float(value)
        return cls(**values)


SEARCHED_BLOCK_SIZES = (TILE, 2 * TILE)
"""Block sizes of the block-sparse candidates: the kernel tile, and 128 (one 128 x 128 program per block)."""


def _ladder(low: int, high: int) -> list[int]:
    values, x = [], low
    while x <= high:
        values.append(x)
        x *= 2
    return values


def candidate_space(n: int) -> list:
    """Every pattern the search tries on a sequence of ``n`` tokens.

    - A-shape: ``sink in {0, 64, 128}`` x ``local`` doubling from 64 below ``n``;
    - vertical-slash: ``vertical`` doubling from 64 to ``n / 2`` (gathered columns cost one tile per 64) x
      ``slash = 100 + free`` with ``free in {0, 2, 8, 32, ...}`` (x4) up to ``n``. The 100 nearest diagonals are
      always kept, and each free diagonal can add two tile-diagonals to the walk, so the free part grows
      geometrically from a few; plus the upstream budgets that fit;
    - block-sparse with 64-token blocks: ``top_k`` doubling from 1 below the number of blocks; the same with
      128-token blocks (whole 128 x 128 programs on Hopper, cheaper per product but coarser);
    - dense.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    forced_local = VerticalSlash.local
    candidates: list = [AShape(sink=s, local=w) for s in (0, 64, 128) for w in _ladder(64, n - 1) if s < w]
    verticals = _ladder(64, max(64, n // 2))
    slashes = [forced_local] + [forced_local + free for free in _ladder(2, n) if _is_power_of_4(free // 2)]
    pairs = {(v, s) for v in verticals for s in slashes if v <= n and s <= n}
    pairs |= {(v, s) for v, s in UPSTREAM_VERTICAL_SLASH if v <= n and s <= n}
    candidates += [VerticalSlash(vertical=v, slash=s) for v, s in sorted(pairs)]
    for block_size in SEARCHED_BLOCK_SIZES:
        blocks = -(-n // block_size)
        candidates += [BlockSparse(top_k=t, block_size=block_size) for t in _ladder(1, blocks) if t < blocks]
    candidates.append(Dense())
    return candidates


def _is_power_of_4(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0 and (x.bit_length() - 1) % 2 == 0


def dense_tiles(n: int) -> dict:
    """Tiles of dense causal attention on ``n`` tokens."""
    return {"walked": float(tiles.causal_tiles(n)), "gathered": 0.0, "estimate": 0.0}


def a_shape_tiles(n: int, sink: int, local: int) -> dict:
    """Tiles the A-shape kernel walks for one head: per query block its sink blocks and its window blocks."""
    return {"walked": float(tiles.a_shape_tiles(n, sink, local)), "gathered": 0.0, "estimate": 0.0}


def vertical_slash_tiles(index: VerticalSlashIndex, n: int) -> list[dict]:
    """Tiles per head of a ``(1, H, ...)`` vertical-slash index: walked blocks, gathered column tiles, estimation."""
    walked, gathered = tiles.walked_tiles(index)[0], tiles.gathered_tiles(index)[0]
    estimate = float(-(-n // TILE))
    return [
        {"walked": float(w), "gathered": float(g), "estimate": estimate}
        for w, g in zip(walked.tolist(), gathered.tolist())
    ]


def block_sparse_tiles(index: BlockSparseIndex, block_size: int = TILE) -> list[dict]:
    """Tiles per head of a ``(1, H, R, K)`` block-sparse index: listed blocks (``walked`` for 64-token blocks,
    ``wide`` for 128-token ones) and the pooled estimation."""
    if block_size not in SEARCHED_BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {SEARCHED_BLOCK_SIZES}, got {block_size}")
    blocks = index.block_count.shape[-1]
    listed = tiles.block_sparse_tiles(index)[0]
    estimation = {"estimate": 0.0, "block_pairs": blocks * blocks / 8192, "pooled_blocks": float(blocks)}
    if block_size == TILE:
        return [{"walked": float(w), "gathered": 0.0, **estimation} for w in listed.tolist()]
    return [{"walked": 0.0, "gathered": 0.0, **estimation, "wide": float(w)} for w in listed.tolist()]


def kind_rank(pattern) -> int:
    """Position of ``pattern``'s kind in :data:`KINDS` (simplest first), for deterministic tie breaking."""
    return KINDS.index(pattern.name)


def group_by_kind(candidates: Sequence) -> dict:
    """``{kind: [candidate, ...]}`` preserving order."""
    groups: dict = {kind: [] for kind in KINDS}
    for candidate in candidates:
        groups[candidate.name].append(candidate)
    return groups

