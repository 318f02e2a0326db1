"""Planning a prefill: every decision :func:`minference.sparse_attention` takes before it launches anything.

:func:`plan` groups the query heads by pattern, estimates and builds their indexes, chooses the vertical-slash grid,
counts the tiles the launches would execute where a density threshold asks, and decides whether the call runs dense.
:func:`minference.ops.run` executes a :class:`Plan`. Benchmarks, evals and the search read the same plan, so what
they report is what the op runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from ._checks import HALF_DTYPES, check_kernel_inputs, check_qkv, check_seqlens
from .index import TILE, VerticalSlashIndex, build_block_sparse_index, build_vertical_slash_index
from .index.tiles import causal_tiles, executed_tiles
from .index.vertical_slash import check_tile
from .kernels import launch
from .patterns import AShape, BlockSparse, Dense, VerticalSlash
from .patterns import block_sparse as block_sparse_pattern
from .patterns import vertical_slash as vertical_slash_pattern

BACKENDS = ("auto", "triton", "torch")
PatternSpec = Union[AShape, VerticalSlash, BlockSparse, Dense, Sequence[Union[AShape, VerticalSlash, BlockSparse, Dense]]]

WIDE_GRID_MAX_COVER = 1.10
"""Where :func:`plan` counts the tiles anyway (a ``dense_above`` threshold), it puts the vertical-slash heads on
the 128-token grid, at any length, when that grid's cover is at most this many times the 64-token one's (both in
64 x 64 tiles). On an H200 the 128 x 128 body runs at 90.5 % of cuDNN against 77.3 % for 64 x 64 (1.17x); the
vertical-slash kernel's speedup on the wider grid times its cover came to 1.04-1.15. Every grid pair measured agrees
with this rule (docs/benchmarks.md): covers of 1.007-1.060 ran 1.03-1.13x faster on the 128-token grid, from 32K to
1M, covers of 1.236 and 1.481 (spread diagonals at 512K and 1M) 0.93x and 0.78x as fast."""

SHORT_PROMPT = "short prompt"
""":attr:`Plan.dense`: the prompt is shorter than ``dense_below``."""
TOO_DENSE = "too dense"
""":attr:`Plan.dense`: the launches would execute more than ``dense_above`` of the causal tiles."""


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for ``backend`` on ``q``'s device (``auto``: Triton for CUDA tensors)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "triton" if q.is_cuda else "torch"
    if backend == "triton":
        check_kernel_inputs(q)
    return backend


def resolve_tile(tile: Optional[int], q: torch.Tensor, backend: str) -> int:
    """``tile`` checked, or chosen (:func:`default_vertical_slash_tile`). A 128-token grid asked of the Triton
    backend must fit in shared memory with at least one K/V stage."""
    if tile is None:
        return launch.default_vertical_slash_tile(q)
    check_tile(tile)
    if tile == 2 * TILE and backend == "triton" and launch.wide_tile_stages(q) is None:
        raise ValueError(f"tile=128 needs a 128 x 128 program in shared memory; {q.dtype} at head_dim "
                         f"{q.shape[-1]} does not fit on {q.device}: use tile=64")
    return tile


def check_dense_above(dense_above) -> None:
    """Raises ValueError unless ``dense_above`` is None or a number >= 0."""
    if dense_above is None:
        return
    if isinstance(dense_above, bool) or not isinstance(dense_above, (int, float)) or not dense_above >= 0:
        raise ValueError(f"dense_above must be None or a number >= 0 (a fraction of the causal tiles), got {dense_above!r}")


def check_dense_below(dense_below) -> None:
    """Raises ValueError unless ``dense_below`` is None or an int >= 0."""
    if dense_below is None:
        return
    if isinstance(dense_below, bool) or not isinstance(dense_below, int) or dense_below < 0:
        raise ValueError(f"dense_below must be None or an int >= 0 (a number of tokens), got {dense_below!r}")


def per_head_patterns(patterns: PatternSpec, heads: int) -> list:
    """One pattern per query head, from one pattern or a list of ``heads``; raises TypeError/ValueError."""
    known = (AShape, VerticalSlash, BlockSparse, Dense)
    if isinstance(patterns, known):
        return [patterns] * heads
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Sequence):
        raise TypeError(f"patterns must be a pattern or a list of {heads} patterns, got {type(patterns).__name__}")
    patterns = list(patterns)
    if len(patterns) != heads:
        raise ValueError(f"patterns must list one pattern per query head ({heads}), got {len(patterns)}")
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, known):
            raise TypeError(f"patterns[{i}] must be AShape, VerticalSlash, BlockSparse or Dense, got {pattern!r}")
    return patterns


def vertical_slash_grids(q: torch.Tensor, tile: Optional[int], counting: bool) -> tuple:
    """The grids to build vertical-slash indexes on for ``q``: ``tile`` when given, both where a tile count will
    choose (``counting``, on a device that runs 128 x 128 programs), else :func:`default_vertical_slash_tile`."""
    if tile is not None:
        return (tile,)
    return (TILE, 2 * TILE) if counting and launch.wide_grid_possible(q) else (launch.default_vertical_slash_tile(q),)


def grid_by_cover(tiles_per_grid: dict) -> int:
    """The grid to run, from ``{grid: executed 64 x 64 tiles}`` of the same heads: the 128-token one when its cover
    is at most :data:`WIDE_GRID_MAX_COVER` times the 64-token one's (the only grid when one is given)."""
    if len(tiles_per_grid) == 1:
        return next(iter(tiles_per_grid))
    return 2 * TILE if tiles_per_grid[2 * TILE] <= WIDE_GRID_MAX_COVER * tiles_per_grid[TILE] else TILE


def dense_heads_to_sdpa(q, per_head: list, sdpa_can_stand_in: bool, backend: str) -> bool:
    """Whether the Dense heads of a mixed list run through SDPA rather than the window kernel at ``local = N``.
    Measured on an H200 (bf16, 32 query / 8 K/V heads, docs/benchmarks.md): SDPA's default dispatch with
    ``enable_gqa`` (cuDNN there) is 1.25x faster than the packed window kernel at 128K and 1.29x at 32K. Only
    where SDPA computes the same output: no ``seqlens``, no lse; float32 keeps the kernel's exact products."""
    return (sdpa_can_stand_in and backend == "triton" and q.is_cuda and q.dtype in HALF_DTYPES
            and any(isinstance(p, Dense) for p in per_head))


def counted_tiles(n: int, batch: int, per_head: list, vertical_slash_indexes: dict, block_indexes: dict) -> tuple:
    """``(tiles of every head but the vertical-slash ones, {grid: tiles of the vertical-slash heads on it})``, in
    64 x 64 tiles over a batch of ``batch`` rows, read to the host in one synchronisation."""
    others = executed_tiles(n, per_head, None, block_indexes, batch)
    per_grid = [executed_tiles(n, [], index, {}) for index in vertical_slash_indexes.values()]
    device = next(iter(vertical_slash_indexes.values())).block_count.device if vertical_slash_indexes else None
    values = torch.stack([torch.as_tensor(t, dtype=torch.float64, device=device) for t in [others, *per_grid]])
    values = values.tolist()  # the one host synchronisation
    return values[0], dict(zip(vertical_slash_indexes, values[1:]))


@dataclass
class Plan:
    """What one :func:`~minference.ops.run` executes for inputs of ``shape`` ``(B, Hq, N, D)``.

    ``dense`` is why the whole call runs exact dense attention (:data:`SHORT_PROMPT`, :data:`TOO_DENSE`), None when
    the per-head launches run. The head lists partition the query heads: vertical-slash heads run on ``grid`` with
    ``vertical_slash_indexes[grid]``, block-sparse heads by block size, ``window_heads`` (A-shape, and Dense heads
    where SDPA cannot stand in) in the A-shape launch, ``sdpa_heads`` (Dense) through SDPA. ``tiles`` holds the
    counts the grid and density decisions read, in 64 x 64 tiles over the batch, where they were counted.
    """

    shape: tuple
    patterns: list
    backend: str
    seqlens: Optional[torch.Tensor]
    sm_scale: Optional[float]
    return_lse: bool
    dense: Optional[str] = None
    vertical_slash_heads: list = field(default_factory=list)
    block_sparse_heads: dict = field(default_factory=dict)
    window_heads: list = field(default_factory=list)
    sdpa_heads: list = field(default_factory=list)
    grid: int = TILE
    vertical_slash_indexes: dict = field(default_factory=dict)
    block_indexes: dict = field(default_factory=dict)
    tiles: Optional["TileCount"] = None

    @property
    def sdpa_can_stand_in(self) -> bool:
        """SDPA computes what the kernels would: no ``seqlens``, no lse."""
        return self.seqlens is None and not self.return_lse

    @property
    def all_heads_dense(self) -> bool:
        return all(isinstance(p, Dense) for p in self.patterns)

    @property
    def vertical_slash_index(self) -> Optional[VerticalSlashIndex]:
        """The index the vertical-slash launch walks (on :attr:`grid`), None without vertical-slash heads."""
        return self.vertical_slash_indexes.get(self.grid)


@dataclass(frozen=True)
class TileCount:
    """Executed 64 x 64 tiles of a plan's launches over the batch: ``others`` for every head but the vertical-slash
    ones, ``per_grid`` for those on each grid built, ``causal`` for dense causal attention on all heads."""

    others: float
    per_grid: dict
    causal: float

    def executed(self, grid: int) -> float:
        return self.others + self.per_grid.get(grid, 0.0)


def plan(
    q: torch.Tensor,
    k: torch.Tensor,
    patterns: PatternSpec,
    *,
    seqlens: Optional[torch.Tensor] = None,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    backend: str = "auto",
    validate: bool = True,
    dense_above: Optional[float] = None,
    dense_below: Optional[int] = None,
    vertical_slash_tile: Optional[int] = None,
    count_tiles: bool = False,
) -> Plan:
    """Decide how :func:`~minference.ops.sparse_attention` serves ``q (B, Hq, N, D)`` against ``k (B, Hkv, N, D)``
    with ``patterns`` (arguments as there): estimate and build every index, choose the vertical-slash grid and
    whether the call runs dense. Tiles are counted (one host synchronisation) where ``dense_above`` applies, or
    where ``count_tiles`` asks; counting also chooses the grid, as in the op.

    Raises:
        TypeError, ValueError: naming the offending argument.
    """
    check_qkv(q, k, k)
    batch, heads, n, _ = q.shape
    per_head = per_head_patterns(patterns, heads)
    backend = resolve_backend(backend, q)
    seqlens = check_seqlens(seqlens, batch, n, q.device, validate)
    check_dense_above(dense_above)
    check_dense_below(dense_below)
    result = Plan(tuple(q.shape), per_head, backend, seqlens, sm_scale, return_lse,
                  grid=resolve_tile(vertical_slash_tile, q, backend))
    if result.sdpa_can_stand_in and dense_below is not None and n < dense_below:
        result.dense = SHORT_PROMPT
        return result

    result.vertical_slash_heads = [h for h, p in enumerate(per_head) if isinstance(p, VerticalSlash)]
    to_sdpa = dense_heads_to_sdpa(q, per_head, result.sdpa_can_stand_in, backend)
    window_types = AShape if to_sdpa else (AShape, Dense)
    result.window_heads = [h for h, p in enumerate(per_head) if isinstance(p, window_types)]
    result.sdpa_heads = [h for h, p in enumerate(per_head) if isinstance(p, Dense)] if to_sdpa else []
    for size in sorted({p.block_size for p in per_head if isinstance(p, BlockSparse)}):
        result.block_sparse_heads[size] = [h for h, p in enumerate(per_head)
                                           if isinstance(p, BlockSparse) and p.block_size == size]

    counting = count_tiles or (dense_above is not None and result.sdpa_can_stand_in)
    if result.vertical_slash_heads:
        group = result.vertical_slash_heads
        vertical_idx, slash_idx = vertical_slash_pattern.estimate(
            q, k, [per_head[h] for h in group], group, seqlens=seqlens, sm_scale=sm_scale)
        result.vertical_slash_indexes = {grid: build_vertical_slash_index(n, vertical_idx, slash_idx, grid)
                                         for grid in vertical_slash_grids(q, vertical_slash_tile, counting)}
    for size, group in result.block_sparse_heads.items():
        block_idx = block_sparse_pattern.estimate(q, k, [per_head[h] for h in group], group, seqlens=seqlens,
                                                  sm_scale=sm_scale)
        result.block_indexes[size] = build_block_sparse_index(block_idx)

    if counting:
        others, per_grid = counted_tiles(n, batch, per_head, result.vertical_slash_indexes, result.block_indexes)
        result.tiles = TileCount(others, per_grid, float(causal_tiles(n) * batch * heads))
        if per_grid:
            result.grid = grid_by_cover(per_grid)
        if (dense_above is not None and result.sdpa_can_stand_in
                and result.tiles.executed(result.grid) > dense_above * result.tiles.causal):
            result.dense = TOO_DENSE
    return result
