"""Sparse attention ops: check inputs, group heads by pattern, estimate, build the index, launch.

Every op takes ``backend="auto" | "triton" | "torch"``. ``auto`` runs the Triton kernels on CUDA tensors and, on
CPU tensors, a torch implementation of the same mask (dense attention restricted to the index's mask, in row
chunks), so the library runs anywhere; the two backends compute the same function.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import reference
from ._device_cache import device_tensor
from ._checks import HALF_DTYPES, check_index, check_kernel_inputs, check_positive_int, check_qkv, check_seqlens
from .index import (
    TILE,
    VerticalSlashIndex,
    a_shape_index_mask_rows,
    block_sparse_index_mask_rows,
    build_block_sparse_index,
    build_vertical_slash_index,
    vertical_slash_index_mask_rows,
)
from .index.tiles import a_shape_tiles, causal_tiles, vertical_slash_tiles
from .index.vertical_slash import check_tile
from .kernels._utils import launch_options, shared_memory_fits, tile_shared_bytes
from .kernels.gqa_pack import check_pack, default_pack, plan_packs
from .patterns import AShape, BlockSparse, Dense, VerticalSlash
from .patterns import a_shape as a_shape_pattern
from .patterns import block_sparse as block_sparse_pattern
from .patterns import vertical_slash as vertical_slash_pattern
from .patterns.block_sparse import BLOCK_SIZES

BACKENDS = ("auto", "triton", "torch")
PatternSpec = Union[AShape, VerticalSlash, BlockSparse, Dense, Sequence[Union[AShape, VerticalSlash, BlockSparse, Dense]]]


def _resolve_backend(backend: str, q: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "triton" if q.is_cuda else "torch"
    if backend == "triton":
        check_kernel_inputs(q)
    return backend


def _outputs(q: torch.Tensor, out: Optional[torch.Tensor], return_lse: bool):
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"out must be a {q.dtype} tensor of shape {tuple(q.shape)} on {q.device}")
    lse = None
    if return_lse:
        lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    return out, lse


TORCH_MASK_BYTES = 1 << 28
"""Boolean mask bytes one row chunk of the torch backend may hold."""


def _torch_forward(q, k, v, heads: Sequence[int], mask_rows: Callable, out, lse, seqlens, sm_scale) -> None:
    """The torch backend: dense attention restricted to the kernel's mask, for query heads ``heads``.

    Without lse it runs SDPA with the mask one row chunk at a time (several times faster on a CPU than the
    float32 reference, which it equals up to float rounding); with lse it runs the reference itself.
    """
    group = q.shape[1] // k.shape[1]
    head_index = device_tensor(heads, q.device, torch.long)
    kv_index = head_index // group
    q_sel, k_sel, v_sel = q.index_select(1, head_index), k.index_select(1, kv_index), v.index_select(1, kv_index)
    if lse is not None:
        o, l = reference.attention(q_sel, k_sel, v_sel, mask=mask_rows, sm_scale=sm_scale, seqlens=seqlens)
        out[:, head_index] = o.to(out.dtype)
        lse[:, head_index] = l.float()
        return
    batch, n = q.shape[0], q.shape[2]
    cols = torch.arange(n, device=q.device).view(1, 1, 1, n)
    rows_per_chunk = max(1, TORCH_MASK_BYTES // (batch * len(heads) * n))
    for start in range(0, n, rows_per_chunk):
        end = min(n, start + rows_per_chunk)
        rows = torch.arange(start, end, device=q.device).view(1, 1, -1, 1)
        # masks are causal, so a row inside its sequence never sees padding keys; every such row keeps its diagonal,
        # and padding rows get theirs too (SDPA must see no empty row) before they are zeroed below
        allowed = mask_rows(start, end) | (cols == rows)
        out[:, head_index, start:end] = F.scaled_dot_product_attention(
            q_sel[:, :, start:end], k_sel, v_sel, attn_mask=allowed, scale=sm_scale
        ).to(out.dtype)
    if seqlens is not None:
        padding = torch.arange(n, device=q.device).view(1, n) >= seqlens.view(-1, 1)
        out.masked_fill_(padding.view(batch, 1, n, 1), 0)


def _result(out, lse, return_lse):
    return (out, lse) if return_lse else out


def vertical_slash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    vertical_idx: torch.Tensor,
    slash_idx: torch.Tensor,
    *,
    seqlens: Optional[torch.Tensor] = None,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    backend: str = "auto",
    validate: bool = True,
    out: Optional[torch.Tensor] = None,
    tile: Optional[int] = None,
):
    """Causal attention over chosen key columns and diagonals (the kernel's tiles, see :func:`vertical_slash_mask`).

    Args:
        q: ``(B, Hq, N, D)``; k, v: ``(B, Hkv, N, D)``; fp16/bf16 on GPU, fp32/fp16 under the interpreter.
        vertical_idx: ``(B, Hq, NV)`` integer key positions in ``[0, N)``; any order, duplicates allowed.
        slash_idx: ``(B, Hq, NS)`` integer diagonal offsets ``i - j`` in ``[0, N)``; any order, duplicates allowed.
        seqlens: optional ``(B,)`` lengths of right-padded sequences; rows past a length are zero.
        sm_scale: score scale, default ``1/sqrt(D)``.
        return_lse: also return the ``(B, Hq, N)`` float32 natural log-sum-exp.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
        validate: check index ranges and lengths (one host synchronisation); hot paths pass ``False``.
        out: optional preallocated ``(B, Hq, N, D)`` output.
        tile: the grid diagonals are kept on, 64 or 128 tokens (:func:`vertical_slash_mask`): the 128-token grid
            keeps a superset of the 64-token one's entries. ``None`` (default):
            :func:`default_vertical_slash_tile`, which depends on the device: pass it for one mask everywhere.

    Returns:
        ``out`` or ``(out, lse)``.

    Raises:
        TypeError, ValueError: naming the offending argument (shapes, dtypes, devices, ranges, backend).
    """
    check_qkv(q, k, v)
    backend = _resolve_backend(backend, q)
    batch, heads, n, _ = q.shape
    tile = _resolve_tile(tile, q, backend)
    check_index("vertical_idx", vertical_idx, (batch, heads), 0, n, q.device, validate)
    check_index("slash_idx", slash_idx, (batch, heads), 0, n, q.device, validate)
    seqlens = check_seqlens(seqlens, batch, n, q.device, validate)
    index = build_vertical_slash_index(n, vertical_idx, slash_idx, tile)
    out, lse = _outputs(q, out, return_lse)
    all_heads = list(range(heads))
    if backend == "triton":
        _vertical_slash_launch(q, k, v, index, device_tensor(range(heads), q.device), out, lse, seqlens, sm_scale)
    else:
        rows = lambda start, end: vertical_slash_index_mask_rows(index, n, start, end)  # noqa: E731
        _torch_forward(q, k, v, all_heads, rows, out, lse, seqlens, sm_scale)
    return _result(out, lse, return_lse)


def vertical_slash_mask(
    n: int, vertical_idx: torch.Tensor, slash_idx: torch.Tensor, *, seqlens: Optional[torch.Tensor] = None,
    tile: int = TILE,
) -> torch.Tensor:
    """The exact ``(B, Hq, n, n)`` boolean mask :func:`vertical_slash_attention` computes on the ``tile``-token grid
    (small ``n`` only): the chosen columns, and every ``tile x tile`` tile a chosen diagonal crosses, causally."""
    check_positive_int("n", n)
    check_tile(tile)
    batch, heads = vertical_idx.shape[:2]
    check_index("vertical_idx", vertical_idx, (batch, heads), 0, n, vertical_idx.device, True)
    check_index("slash_idx", slash_idx, (batch, heads), 0, n, vertical_idx.device, True)
    return vertical_slash_pattern.mask(n, vertical_idx, slash_idx, seqlens=seqlens, tile=tile)


WIDE_GRID_MAX_TOKENS = 262144
"""The longest prompt :func:`default_vertical_slash_tile` puts on the 128-token grid."""


def default_vertical_slash_tile(q: torch.Tensor) -> int:
    """The grid vertical-slash ops keep diagonals on for inputs like ``q`` when not told: 128 tokens up to
    :data:`WIDE_GRID_MAX_TOKENS` where whole 128 x 128 programs run with their full pipeline (CUDA, half precision,
    head_dim <= 128, 224 KiB of shared memory: H100/H200, not A100 or consumer cards), else 64. It depends on the
    inputs, not on the backend, so both backends compute the same function for the same inputs.

    Measured on an H200 (bf16, 32/8 heads, head_dim 128, budgets (1000, 6096), docs/benchmarks.md): at 32K-256K
    the 128-token grid computes 0.7-6 % more entries and runs 1.03-1.12x faster on both index sets. Beyond, the
    measured set's diagonals spread out, and a lone diagonal costs twice the area on the wider grid: at 512K its
    cover is 24 % larger and 0.93x as fast, at 1M 48 % and 0.78x (the local-heavy set still gains 1.13x there).
    """
    return 2 * TILE if _wide_grid_possible(q) and q.shape[2] <= WIDE_GRID_MAX_TOKENS else TILE


def _wide_grid_possible(q: torch.Tensor) -> bool:
    """Whether the default may put ``q``'s vertical-slash heads on the 128-token grid: CUDA tensors whose 128 x 128
    programs keep the launcher's pipeline (:func:`_wide_tiles_fit`)."""
    return q.is_cuda and _wide_tiles_fit(q)


WIDE_GRID_MAX_COVER = 1.10
"""Where :func:`sparse_attention` counts the tiles anyway (its ``dense_above`` check), it puts the vertical-slash
heads on the 128-token grid, at any length, when that grid's cover is at most this many times the 64-token one's
(both in 64 x 64 tiles). On an H200 the 128 x 128 body runs at 90.5 % of cuDNN against 77.3 % for 64 x 64 (1.17x);
the vertical-slash kernel's speedup on the wider grid times its cover came to 1.04-1.15. Every grid pair measured agrees with this rule (sixth session
of 2026-11-29, docs/benchmarks.md): covers of 1.007-1.060 ran 1.03-1.13x faster on the 128-token grid, from 32K to
1M, covers of 1.236 and 1.481 (spread diagonals at 512K and 1M) 0.93x and 0.78x as fast."""


def vertical_slash_grids(q: torch.Tensor, tile: Optional[int], counting: bool) -> tuple:
    """The grids to build vertical-slash indexes on for ``q``: ``tile`` when given, both where a tile count will
    choose (``counting``, on a device that runs 128 x 128 programs), else :func:`default_vertical_slash_tile`."""
    if tile is not None:
        return (tile,)
    return (TILE, 2 * TILE) if counting and _wide_grid_possible(q) else (default_vertical_slash_tile(q),)


def grid_by_cover(tiles_per_grid: dict) -> int:
    """The grid to run, from ``{grid: executed 64 x 64 tiles}`` of the same heads: the 128-token one when its cover
    is at most :data:`WIDE_GRID_MAX_COVER` times the 64-token one's (the only grid when one is given)."""
    if len(tiles_per_grid) == 1:
        return next(iter(tiles_per_grid))
    return 2 * TILE if tiles_per_grid[2 * TILE] <= WIDE_GRID_MAX_COVER * tiles_per_grid[TILE] else TILE


def _resolve_tile(tile: Optional[int], q: torch.Tensor, backend: str) -> int:
    """``tile`` checked, or chosen (:func:`default_vertical_slash_tile`). A 128-token grid asked of the Triton
    backend must fit in shared memory with at least one K/V stage."""
    if tile is None:
        return default_vertical_slash_tile(q)
    check_tile(tile)
    if tile == 2 * TILE:
        if backend == "triton" and _wide_stages(q) is None:
            raise ValueError(f"tile=128 needs a 128 x 128 program in shared memory; {q.dtype} at head_dim "
                             f"{q.shape[-1]} does not fit on {q.device}: use tile=64")
    return tile


def _wide_stages(q: torch.Tensor) -> Optional[int]:
    """The most K/V stages, up to the launcher's, with which a 128 x 128 program fits (None if not even one)."""
    launcher = launch_options(q.shape[-1], q.dtype, 2 * TILE).get("num_stages", 1)  # none under the interpreter
    return next((depth for depth in range(launcher, 0, -1) if _program_fits(2 * TILE, 2 * TILE, q, depth)), None)


def _vertical_slash_launch(q, k, v, index: VerticalSlashIndex, head_map, out, lse, seqlens, sm_scale) -> None:
    """The vertical-slash kernel over ``index``; on the 128-token grid with fewer K/V stages where the launcher's
    do not fit (an explicit ``tile=128`` on an A100, float32)."""
    from .kernels.sparse_attention import vertical_slash_forward

    launch = None
    launcher_stages = launch_options(q.shape[-1], q.dtype, 2 * TILE).get("num_stages")  # none under the interpreter
    if index.tile != TILE and launcher_stages is not None:
        stages = _wide_stages(q)
        if stages != launcher_stages:
            launch = {"num_stages": stages}
    vertical_slash_forward(q, k, v, index, head_map, out, lse, seqlens, sm_scale, launch=launch)


def _program_fits(rows: int, keys: int, q: torch.Tensor, stages: Optional[int] = None) -> bool:
    """Whether a program of ``rows`` query rows over ``keys``-key tiles, with ``stages`` K/V stages (default: those
    the launcher gives it), fits in the shared memory of ``q``'s device (the interpreter has no limit). One rule for
    every wider program: GQA packs, 128 x 128 tiles. It counts what sm90 allocates; older architectures allocate less
    for the same program (a 64-row bf16 program at head_dim 128: 88 KiB on sm86 against 112 KiB on sm90, compiled
    with Triton 3.9), so there it errs towards the narrower program, never towards a launch that cannot start."""
    head_dim = q.shape[-1]
    if stages is None:
        stages = launch_options(head_dim, q.dtype, rows).get("num_stages", 1)  # none under the interpreter
    return shared_memory_fits(tile_shared_bytes(rows, keys, head_dim, q.dtype, stages), q.device)


def _wide_block_programs(block_size: int, q: torch.Tensor) -> bool:
    """Whether 128-token blocks run as whole 128 x 128 tiles on 8 warps: in half precision at head_dim <= 128, where the query tile and three K/V stages fit in the
    device's shared memory (224 KiB at head_dim 128: H100/H200 yes, A100 no). Measured on an H200 (bf16, head_dim
    128, 32K and 128K, batch 1 and 4, docs/benchmarks.md): 1.25-1.32x faster than two 64-row programs per block,
    and 1.05-1.10x faster than 64-token blocks of the same coverage (top_k 100 against 50)."""
    return block_size == 2 * TILE and _wide_tiles_fit(q)


def _wide_tiles_fit(q: torch.Tensor) -> bool:
    """Whether 128 x 128 programs are the fast choice for ``q``: in half precision at head_dim <= 128, where the
    query tile and the launcher's three K/V stages fit in shared memory (224 KiB at head_dim 128)."""
    if q.dtype not in HALF_DTYPES or q.shape[-1] > 128:
        return False
    return _program_fits(2 * TILE, 2 * TILE, q)


def _check_block_size(block_size: int) -> None:
    check_positive_int("block_size", block_size)
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size}")


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_idx: torch.Tensor,
    block_size: int = 64,
    *,
    seqlens: Optional[torch.Tensor] = None,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    backend: str = "auto",
    validate: bool = True,
    out: Optional[torch.Tensor] = None,
):
    """Causal attention over chosen key blocks (see :func:`block_sparse_mask`).

    Args:
        block_idx: ``(B, Hq, ceil(N / block_size), K)`` key-block ids per query block in ``[-1, R)``; ``-1`` marks
            an unused slot; ids right of the query block are causally empty; the diagonal block is always kept.
        block_size: tokens per block, one of 16, 32, 64, 128. 128-token blocks run one 128-row Triton program
            per query block where whole 128 x 128 tiles fit (float16/bfloat16 at head_dim <= 128, with the shared
            memory of an H100/H200; measured 1.25-1.32x faster on an H200), elsewhere two 64-row programs that each
            load every listed block as two 64-key tiles. The same function either way.
        Other arguments as in :func:`vertical_slash_attention`.
    """
    check_qkv(q, k, v)
    backend = _resolve_backend(backend, q)
    _check_block_size(block_size)
    batch, heads, n, _ = q.shape
    blocks = -(-n // block_size)
    check_index("block_idx", block_idx.flatten(2, 3) if block_idx.dim() == 4 else block_idx,
                (batch, heads), -1, blocks, q.device, validate)
    if block_idx.shape[2] != blocks:
        raise ValueError(f"block_idx must have shape ({batch}, {heads}, {blocks}, K), got {tuple(block_idx.shape)}")
    seqlens = check_seqlens(seqlens, batch, n, q.device, validate)
    index = build_block_sparse_index(block_idx)
    out, lse = _outputs(q, out, return_lse)
    if backend == "triton":
        from .kernels.sparse_attention import block_sparse_forward

        block_sparse_forward(q, k, v, index, block_size, device_tensor(range(heads), q.device), out, lse, seqlens,
                             sm_scale, wide=_wide_block_programs(block_size, q))
    else:
        rows = lambda start, end: block_sparse_index_mask_rows(index, n, block_size, start, end)  # noqa: E731
        _torch_forward(q, k, v, range(heads), rows, out, lse, seqlens, sm_scale)
    return _result(out, lse, return_lse)


def block_sparse_mask(
    n: int, block_idx: torch.Tensor, block_size: int = 64, *, seqlens: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The exact ``(B, Hq, n, n)`` boolean mask :func:`block_sparse_attention` computes (small ``n`` only)."""
    check_positive_int("n", n)
    _check_block_size(block_size)
    if not isinstance(block_idx, torch.Tensor) or block_idx.dim() != 4:
        raise ValueError("block_idx must be a 4-D tensor (B, H, ceil(n / block_size), K)")
    blocks = -(-n // block_size)
    if block_idx.shape[2] != blocks:
        raise ValueError(f"block_idx must have {blocks} query blocks for n={n}, got {block_idx.shape[2]}")
    check_index("block_idx", block_idx.flatten(2, 3), block_idx.shape[:2], -1, blocks, block_idx.device, True)
    return block_sparse_pattern.mask(n, block_idx, block_size, seqlens=seqlens)


def _per_head_values(name: str, value, heads: int, minimum: int) -> list:
    values = [value] * heads if isinstance(value, int) and not isinstance(value, bool) else list(value)
    if len(values) != heads:
        raise ValueError(f"{name} must be an int or one value per query head ({heads}), got {len(values)} values")
    for item in values:
        check_positive_int(name, item, minimum)
    return [int(item) for item in values]


def a_shape_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sink: Union[int, Sequence[int]],
    local: Union[int, Sequence[int]],
    *,
    seqlens: Optional[torch.Tensor] = None,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    backend: str = "auto",
    validate: bool = True,
    out: Optional[torch.Tensor] = None,
    gqa_pack: Optional[int] = None,
):
    """Causal attention over the first ``sink`` keys and the ``local`` nearest keys (see :func:`a_shape_mask`).

    Args:
        sink: int ``>= 0`` or one per query head. local: int ``>= 1`` or one per query head.
        gqa_pack: 1 or 2, or ``None`` (default) for :func:`~minference.kernels.gqa_pack.default_pack` (2 above
            head_dim 64 in float16/bfloat16, where it measured 1.06-1.65x faster on an H200; 1 at 64, where it
            measured slower, and for float32). At 2, the Triton kernel serves two query heads of one K/V head with
            equal budgets from one program, loading each K/V tile once for both (the others run unpacked). Shapes
            whose packed query tile would not fit in shared memory (float32 at head_dim 256) run unpacked. Either
            way the result is the same function.
        Other arguments as in :func:`vertical_slash_attention`.
    """
    check_qkv(q, k, v)
    backend = _resolve_backend(backend, q)
    batch, heads, n, _ = q.shape
    sinks = _per_head_values("sink", sink, heads, 0)
    locals_ = [min(w, n) for w in _per_head_values("local", local, heads, 1)]
    gqa_pack = default_pack(q.shape[-1], q.dtype) if gqa_pack is None else check_pack(gqa_pack)
    seqlens = check_seqlens(seqlens, batch, n, q.device, validate)
    out, lse = _outputs(q, out, return_lse)
    _a_shape_heads(q, k, v, list(range(heads)), sinks, locals_, out, lse, seqlens, sm_scale, backend, gqa_pack)
    return _result(out, lse, return_lse)


def _a_shape_heads(q, k, v, heads: list, sinks: list, locals_: list, out, lse, seqlens, sm_scale, backend,
                   pack: int) -> None:
    """Write query heads ``heads`` with budgets ``sinks[i]``, ``locals_[i] <= N``. On Triton, heads that form packs
    of ``pack`` (same K/V head and budget) run through the packed kernel where it fits, the rest one per program."""
    n = q.shape[2]
    if backend == "triton":
        from .kernels.sparse_attention import a_shape_forward

        if pack > 1 and _program_fits(pack * TILE, TILE, q):
            plan = plan_packs(heads, sinks, locals_, q.shape[1] // k.shape[1], pack)
            if plan.packed_heads:
                a_shape_forward(q, k, v, device_tensor(plan.sinks, q.device), device_tensor(plan.locals, q.device),
                                device_tensor(plan.packed_heads, q.device), out, lse, seqlens, sm_scale, pack=pack)
            budget = dict(zip(heads, zip(sinks, locals_)))
            heads = plan.single_heads
            sinks, locals_ = [budget[h][0] for h in heads], [budget[h][1] for h in heads]
        if heads:
            a_shape_forward(q, k, v, device_tensor(sinks, q.device), device_tensor(locals_, q.device),
                            device_tensor(heads, q.device), out, lse, seqlens, sm_scale)
    else:
        sinks, locals_ = device_tensor(sinks, q.device), device_tensor(locals_, q.device)
        rows = lambda start, end: a_shape_index_mask_rows(sinks, locals_, n, start, end)  # noqa: E731
        _torch_forward(q, k, v, heads, rows, out, lse, seqlens, sm_scale)


def a_shape_mask(
    n: int,
    sink: Union[int, Sequence[int]],
    local: Union[int, Sequence[int]],
    *,
    batch: int = 1,
    seqlens: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The exact ``(batch, H, n, n)`` boolean mask of :func:`a_shape_attention`; ``H`` = 1 for int budgets."""
    check_positive_int("n", n)
    heads = 1 if isinstance(sink, int) and isinstance(local, int) else len(sink if not isinstance(sink, int) else local)
    _per_head_values("sink", sink, heads, 0)
    _per_head_values("local", local, heads, 1)
    return a_shape_pattern.mask(n, sink, local, batch=batch, seqlens=seqlens)


def _per_head_patterns(patterns: PatternSpec, heads: int) -> list:
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


def _check_dense_above(dense_above) -> None:
    if dense_above is None:
        return
    if isinstance(dense_above, bool) or not isinstance(dense_above, (int, float)) or not dense_above >= 0:
        raise ValueError(f"dense_above must be None or a number >= 0 (a fraction of the causal tiles), got {dense_above!r}")


def _check_dense_below(dense_below) -> None:
    if dense_below is None:
        return
    if isinstance(dense_below, bool) or not isinstance(dense_below, int) or dense_below < 0:
        raise ValueError(f"dense_below must be None or an int >= 0 (a number of tokens), got {dense_below!r}")


def _dense_into(q, k, v, sm_scale, out):
    """Exact causal attention through SDPA, written into ``out`` when one is given."""
    dense = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=sm_scale, enable_gqa=True)
    if out is None:
        return dense
    _outputs(q, out, False)  # checks out's shape, dtype and device
    return out.copy_(dense)


SDPA_ONE_CALL_BYTES = 256 << 20
"""Largest copy of the listed query heads that :func:`_dense_heads_through_sdpa` makes for a single SDPA call; above
it, one call per K/V head bounds the copy and SDPA's output to two K/V groups of queries (2 GiB for 4 heads of 1M
tokens x 128 in bf16) where a single call over all 32 heads would take 16 GiB."""


def _dense_heads_through_sdpa(q, k, v, heads: list, out, sm_scale) -> None:
    """Write query heads ``heads`` of ``out`` with exact causal attention through SDPA's default dispatch, which
    reads GQA K/V heads without copies (``enable_gqa``). One call when every K/V head serves the same number of the
    listed heads and their copy is small (:data:`SDPA_ONE_CALL_BYTES`), else one call per K/V head on a view of its
    K/V; only the listed query heads are copied."""
    group = q.shape[1] // k.shape[1]
    by_kv: dict[int, list] = {}
    for head in heads:
        by_kv.setdefault(head // group, []).append(head)
    copy_bytes = len(heads) * q[:, :1].numel() * q.element_size()
    if (len(by_kv) == k.shape[1] and len({len(members) for members in by_kv.values()}) == 1
            and copy_bytes <= SDPA_ONE_CALL_BYTES):
        # query head i of the selection reads K/V head i // (heads per K/V head): list them K/V head by K/V head
        calls = [([head for kv in sorted(by_kv) for head in by_kv[kv]], slice(None))]
    else:
        calls = [(members, slice(kv, kv + 1)) for kv, members in by_kv.items()]
    for members, kv in calls:
        index = device_tensor(members, q.device, torch.int64)
        dense = F.scaled_dot_product_attention(q.index_select(1, index), k[:, kv], v[:, kv], is_causal=True,
                                               scale=sm_scale, enable_gqa=True)
        out.index_copy_(1, index, dense)


def _dense_heads_to_sdpa(q, per_head: list, sdpa_can_stand_in: bool, backend: str) -> bool:
    """Whether the Dense heads of a mixed list run through SDPA rather than the window kernel at ``local = N``.
    Measured on an H200 (bf16, 32 query / 8 K/V heads, docs/benchmarks.md): SDPA's default dispatch with
    ``enable_gqa`` (cuDNN there) is 1.25x faster than the packed window kernel at 128K and 1.29x at 32K. Only
    where SDPA computes the same output: no ``seqlens``, no lse; float32 keeps the kernel's exact products."""
    return (sdpa_can_stand_in and backend == "triton" and q.is_cuda and q.dtype in HALF_DTYPES
            and any(isinstance(p, Dense) for p in per_head))


def _counted_tiles(n: int, batch: int, per_head: list, vertical_slash_indexes: dict, block_indexes: dict) -> tuple:
    """``(tiles of every head but the vertical-slash ones, {grid: tiles of the vertical-slash heads on it})``, in
    64 x 64 tiles over a batch of ``batch`` rows, read to the host in one synchronisation."""
    others = _executed_tiles(n, per_head, None, block_indexes, batch)
    per_grid = [_executed_tiles(n, [], index, {}) for index in vertical_slash_indexes.values()]
    device = next(iter(vertical_slash_indexes.values())).block_count.device if vertical_slash_indexes else None
    values = torch.stack([torch.as_tensor(t, dtype=torch.float64, device=device) for t in [others, *per_grid]])
    values = values.tolist()  # the one host synchronisation
    return values[0], dict(zip(vertical_slash_indexes, values[1:]))


def _executed_tiles(n: int, per_head: list, vertical_slash_index, block_indexes: dict,
                    batch: Optional[int] = None) -> torch.Tensor:
    """Tiles the launches would execute, summed over batch and heads, in units of 64 x 64 tiles (a 0-d tensor on
    the index's device; A-shape and dense heads are counted on the host, exactly as their kernel walks them, for
    ``batch`` rows: by default the indexes' batch)."""
    total = 0
    if vertical_slash_index is not None:
        scale = (vertical_slash_index.tile // TILE) ** 2  # a 128 x 128 tile costs four of 64 x 64
        total = total + vertical_slash_tiles(vertical_slash_index).sum() * scale
        batch = batch or vertical_slash_index.block_count.shape[0]
    for block_size, index in block_indexes.items():
        # a block of block_size^2 scores costs (block_size / 64)^2 tiles of 64 x 64
        total = total + index.block_count.long().sum() * block_size * block_size / (TILE * TILE)
        batch = batch or index.block_count.shape[0]
    host = 0
    for pattern in per_head:
        if isinstance(pattern, AShape):
            host += a_shape_tiles(n, pattern.sink, min(pattern.local, n))
        elif isinstance(pattern, Dense):
            host += causal_tiles(n)
    return total + host * (batch or 1)


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    patterns: PatternSpec,
    *,
    seqlens: Optional[torch.Tensor] = None,
    sm_scale: Optional[float] = None,
    return_lse: bool = False,
    backend: str = "auto",
    validate: bool = True,
    out: Optional[torch.Tensor] = None,
    dense_above: Optional[float] = None,
    dense_below: Optional[int] = None,
    vertical_slash_tile: Optional[int] = None,
):
    """MInference prefill attention: each query head runs its own pattern, with indices estimated from this input.

    Heads are grouped by pattern type and each group is one launch (block-sparse heads also by block size);
    dense heads run through SDPA on CUDA half-precision inputs where it can stand in (no ``seqlens``, no lse),
    otherwise they join the A-shape launch with a window covering everything. Estimation and index building run on
    the inputs' device without host synchronisation (``validate=False``), unless ``dense_above`` is given.

    Args:
        q: ``(B, Hq, N, D)``; k, v: ``(B, Hkv, N, D)``.
        patterns: one pattern for every head, or a list of ``Hq`` patterns
            (:class:`AShape`, :class:`VerticalSlash`, :class:`BlockSparse`, :class:`Dense`).
        dense_above: density fallback. After the indices are built, if the kernels would execute more than this
            fraction of the causal 64 x 64 tiles (over the whole batch and all heads), run exact dense attention
            through SDPA instead, which is faster at that density (one host synchronisation to decide). Applies
            only where the SDPA path can stand in: no ``seqlens``, no ``return_lse``; otherwise it is ignored and
            the sparse kernels run. ``None`` (default): always sparse, so the result is exactly the patterns' mask.
        dense_below: length fallback. Prompts of fewer tokens run exact dense attention through SDPA without
            estimating anything: below the crossover the sparse path cannot win (on an H200, 32768 tokens for the
            default budgets; docs/benchmarks.md). Same conditions as ``dense_above``; ``None`` (default): off.
        vertical_slash_tile: the grid vertical-slash heads keep diagonals on (``tile`` of
            :func:`vertical_slash_attention`). ``None`` (default): :func:`default_vertical_slash_tile`; where the
            ``dense_above`` check counts the tiles anyway and the device can run 128 x 128 programs, the grid is
            chosen from the counts instead, at any length: the 128-token one when its cover is at most
            :data:`WIDE_GRID_MAX_COVER` times the 64-token one's (no extra synchronisation). The choice is per
            call: all vertical-slash heads and batch rows together.
        Other arguments as in :func:`vertical_slash_attention`.

    Returns:
        ``out (B, Hq, N, D)`` or ``(out, lse)``.
    """
    check_qkv(q, k, v)
    batch, heads, n, _ = q.shape
    per_head = _per_head_patterns(patterns, heads)
    backend = _resolve_backend(backend, q)
    seqlens = check_seqlens(seqlens, batch, n, q.device, validate)
    _check_dense_above(dense_above)
    _check_dense_below(dense_below)
    tile = _resolve_tile(vertical_slash_tile, q, backend)

    sdpa_can_stand_in = seqlens is None and not return_lse
    if sdpa_can_stand_in and dense_below is not None and n < dense_below:
        return _dense_into(q, k, v, sm_scale, out)
    if all(isinstance(p, Dense) for p in per_head) and sdpa_can_stand_in and out is None:
        return _dense_into(q, k, v, sm_scale, None)

    vertical_slash_heads = [h for h, p in enumerate(per_head) if isinstance(p, VerticalSlash)]
    dense_to_sdpa = _dense_heads_to_sdpa(q, per_head, sdpa_can_stand_in, backend)
    window_types = AShape if dense_to_sdpa else (AShape, Dense)
    window_heads = [h for h, p in enumerate(per_head) if isinstance(p, window_types)]
    block_sizes = sorted({p.block_size for p in per_head if isinstance(p, BlockSparse)})
    block_groups = {
        size: [h for h, p in enumerate(per_head) if isinstance(p, BlockSparse) and p.block_size == size]
        for size in block_sizes
    }

    counting = dense_above is not None and sdpa_can_stand_in
    vertical_slash_indexes = {}  # grid -> index; both grids where the tile count below picks one
    if vertical_slash_heads:
        vertical_idx, slash_idx = vertical_slash_pattern.estimate(
            q, k, [per_head[h] for h in vertical_slash_heads], vertical_slash_heads, seqlens=seqlens, sm_scale=sm_scale
        )
        vertical_slash_indexes = {grid: build_vertical_slash_index(n, vertical_idx, slash_idx, grid)
                                  for grid in vertical_slash_grids(q, vertical_slash_tile, counting)}
    block_indexes = {}
    for block_size, group in block_groups.items():
        block_idx = block_sparse_pattern.estimate(
            q, k, [per_head[h] for h in group], group, seqlens=seqlens, sm_scale=sm_scale
        )
        block_indexes[block_size] = build_block_sparse_index(block_idx)

    if counting:
        others, per_grid = _counted_tiles(n, batch, per_head, vertical_slash_indexes, block_indexes)
        if per_grid:
            tile = grid_by_cover(per_grid)
        if others + per_grid.get(tile, 0.0) > dense_above * causal_tiles(n) * batch * heads:
            return _dense_into(q, k, v, sm_scale, out)
    vertical_slash_index = vertical_slash_indexes.get(tile)

    out, lse = _outputs(q, out, return_lse)
    if vertical_slash_index is not None:
        if backend == "triton":
            head_map = device_tensor(vertical_slash_heads, q.device)
            _vertical_slash_launch(q, k, v, vertical_slash_index, head_map, out, lse, seqlens, sm_scale)
        else:
            rows = lambda start, end: vertical_slash_index_mask_rows(vertical_slash_index, n, start, end)  # noqa: E731
            _torch_forward(q, k, v, vertical_slash_heads, rows, out, lse, seqlens, sm_scale)

    for block_size, index in block_indexes.items():
        group = block_groups[block_size]
        if backend == "triton":
            from .kernels.sparse_attention import block_sparse_forward

            head_map = device_tensor(group, q.device)
            block_sparse_forward(q, k, v, index, block_size, head_map, out, lse, seqlens, sm_scale,
                                 wide=_wide_block_programs(block_size, q))
        else:
            rows = lambda start, end, index=index, bs=block_size: block_sparse_index_mask_rows(  # noqa: E731
                index, n, bs, start, end
            )
            _torch_forward(q, k, v, group, rows, out, lse, seqlens, sm_scale)

    if dense_to_sdpa:
        _dense_heads_through_sdpa(q, k, v, [h for h, p in enumerate(per_head) if isinstance(p, Dense)], out, sm_scale)
    if window_heads:
        sinks = [per_head[h].sink if isinstance(per_head[h], AShape) else 0 for h in window_heads]
        windows = [per_head[h].local if isinstance(per_head[h], AShape) else n for h in window_heads]
        _a_shape_heads(q, k, v, window_heads, sinks, [min(w, n) for w in windows], out, lse, seqlens, sm_scale,
                       backend, default_pack(q.shape[-1], q.dtype))
    return _result(out, lse, return_lse)
