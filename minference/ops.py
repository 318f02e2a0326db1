"""Sparse attention ops: check inputs, build the index, launch; :func:`sparse_attention` runs a plan
(:mod:`minference.planning`).

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
from ._checks import check_index, check_positive_int, check_qkv, check_seqlens
from .index import (
    TILE,
    VerticalSlashIndex,
    a_shape_index_mask_rows,
    block_sparse_index_mask_rows,
    build_block_sparse_index,
    build_vertical_slash_index,
    vertical_slash_index_mask_rows,
)
from .index.vertical_slash import check_tile
from .kernels.gqa_pack import check_pack, default_pack, plan_packs
from .kernels import launch
from .kernels.launch import WIDE_GRID_MAX_TOKENS, default_vertical_slash_tile  # noqa: F401  (documented ops API)
from .patterns import AShape, BlockSparse, Dense, VerticalSlash  # noqa: F401  (the ops API names them)
from .patterns import a_shape as a_shape_pattern
from .patterns.base import clip_to_lengths
from .patterns.block_sparse import BLOCK_SIZES
from .planning import BACKENDS, WIDE_GRID_MAX_COVER, PatternSpec, Plan, plan, resolve_backend, resolve_tile  # noqa: F401


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
    backend = resolve_backend(backend, q)
    batch, heads, n, _ = q.shape
    tile = resolve_tile(tile, q, backend)
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
    (small ``n`` only): the chosen columns, and every ``tile x tile`` tile a chosen diagonal crosses, causally.

    Read off the built index through the predicate both backends follow
    (:func:`~minference.index.vertical_slash_keeps`); the tests check it against the pattern's definition,
    :func:`minference.patterns.vertical_slash.mask`."""
    check_positive_int("n", n)
    check_tile(tile)
    batch, heads = vertical_idx.shape[:2]
    check_index("vertical_idx", vertical_idx, (batch, heads), 0, n, vertical_idx.device, True)
    check_index("slash_idx", slash_idx, (batch, heads), 0, n, vertical_idx.device, True)
    index = build_vertical_slash_index(n, vertical_idx, slash_idx, tile)
    return clip_to_lengths(vertical_slash_index_mask_rows(index, n, 0, n).contiguous(), seqlens)


def _vertical_slash_launch(q, k, v, index: VerticalSlashIndex, head_map, out, lse, seqlens, sm_scale) -> None:
    """The vertical-slash kernel over ``index``; on the 128-token grid with fewer K/V stages where the launcher's
    do not fit (an explicit ``tile=128`` on an A100, float32)."""
    from .kernels.vertical_slash import vertical_slash_forward

    options = None
    launcher_stages = launch.launch_options(q.shape[-1], q.dtype, 2 * TILE).get("num_stages")  # none: interpreter
    if index.tile != TILE and launcher_stages is not None:
        stages = launch.wide_tile_stages(q)
        if stages != launcher_stages:
            options = {"num_stages": stages}
    vertical_slash_forward(q, k, v, index, head_map, out, lse, seqlens, sm_scale, launch=options)


def _wide_blocks(block_size: int, q: torch.Tensor) -> bool:
    """Whether 128-token blocks run as whole 128 x 128 tiles on 8 warps (:func:`~.launch.wide_tiles_fit`)."""
    return block_size == 2 * TILE and launch.wide_tiles_fit(q)


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
    backend = resolve_backend(backend, q)
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
        from .kernels.block_sparse import block_sparse_forward

        block_sparse_forward(q, k, v, index, block_size, device_tensor(range(heads), q.device), out, lse, seqlens,
                             sm_scale, wide=_wide_blocks(block_size, q))
    else:
        rows = lambda start, end: block_sparse_index_mask_rows(index, n, block_size, start, end)  # noqa: E731
        _torch_forward(q, k, v, range(heads), rows, out, lse, seqlens, sm_scale)
    return _result(out, lse, return_lse)


def block_sparse_mask(
    n: int, block_idx: torch.Tensor, block_size: int = 64, *, seqlens: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The exact ``(B, Hq, n, n)`` boolean mask :func:`block_sparse_attention` computes (small ``n`` only).

    Read off the built index through the predicate both backends follow
    (:func:`~minference.index.block_sparse_keeps`); the tests check it against the pattern's definition,
    :func:`minference.patterns.block_sparse.mask`."""
    check_positive_int("n", n)
    _check_block_size(block_size)
    if not isinstance(block_idx, torch.Tensor) or block_idx.dim() != 4:
        raise ValueError("block_idx must be a 4-D tensor (B, H, ceil(n / block_size), K)")
    blocks = -(-n // block_size)
    if block_idx.shape[2] != blocks:
        raise ValueError(f"block_idx must have {blocks} query blocks for n={n}, got {block_idx.shape[2]}")
    check_index("block_idx", block_idx.flatten(2, 3), block_idx.shape[:2], -1, blocks, block_idx.device, True)
    index = build_block_sparse_index(block_idx)
    return clip_to_lengths(block_sparse_index_mask_rows(index, n, block_size, 0, n).contiguous(), seqlens)


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
    backend = resolve_backend(backend, q)
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
        from .kernels.a_shape import a_shape_forward

        if pack > 1 and launch.program_fits(pack * TILE, TILE, q):
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
    return run(plan(q, k, patterns, seqlens=seqlens, sm_scale=sm_scale, return_lse=return_lse, backend=backend,
                    validate=validate, dense_above=dense_above, dense_below=dense_below,
                    vertical_slash_tile=vertical_slash_tile), q, k, v, out=out)


def run(plan: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, out: Optional[torch.Tensor] = None):
    """Execute ``plan`` (from :func:`minference.planning.plan` on these ``q``, ``k``) with values ``v``: one launch per
    head group, or exact dense attention where the plan says so.

    Returns:
        ``out (B, Hq, N, D)`` or ``(out, lse)`` when the plan was made with ``return_lse``.
    """
    sm_scale, seqlens, backend, n = plan.sm_scale, plan.seqlens, plan.backend, q.shape[2]
    if plan.dense is not None:
        return _dense_into(q, k, v, sm_scale, out)
    if plan.all_heads_dense and plan.sdpa_can_stand_in and out is None:  # no copy into a given output
        return _dense_into(q, k, v, sm_scale, None)

    out, lse = _outputs(q, out, plan.return_lse)
    vertical_slash_index = plan.vertical_slash_index
    if vertical_slash_index is not None:
        heads = plan.vertical_slash_heads
        if backend == "triton":
            _vertical_slash_launch(q, k, v, vertical_slash_index, device_tensor(heads, q.device), out, lse, seqlens,
                                   sm_scale)
        else:
            rows = lambda start, end: vertical_slash_index_mask_rows(vertical_slash_index, n, start, end)  # noqa: E731
            _torch_forward(q, k, v, heads, rows, out, lse, seqlens, sm_scale)

    for block_size, index in plan.block_indexes.items():
        group = plan.block_sparse_heads[block_size]
        if backend == "triton":
            from .kernels.block_sparse import block_sparse_forward

            block_sparse_forward(q, k, v, index, block_size, device_tensor(group, q.device), out, lse, seqlens,
                                 sm_scale, wide=_wide_blocks(block_size, q))
        else:
            rows = lambda start, end, index=index, bs=block_size: block_sparse_index_mask_rows(  # noqa: E731
                index, n, bs, start, end
            )
            _torch_forward(q, k, v, group, rows, out, lse, seqlens, sm_scale)

    if plan.sdpa_heads:
        _dense_heads_through_sdpa(q, k, v, plan.sdpa_heads, out, sm_scale)
    if plan.window_heads:
        per_head = plan.patterns
        sinks = [per_head[h].sink if isinstance(per_head[h], AShape) else 0 for h in plan.window_heads]
        windows = [per_head[h].local if isinstance(per_head[h], AShape) else n for h in plan.window_heads]
        _a_shape_heads(q, k, v, plan.window_heads, sinks, [min(w, n) for w in windows], out, lse, seqlens, sm_scale,
                       backend, default_pack(q.shape[-1], q.dtype))
    return _result(out, lse, plan.return_lse)
