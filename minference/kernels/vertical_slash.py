"""The vertical-slash kernel (key blocks along chosen diagonals, then gathered columns) and its launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..index import VerticalSlashIndex
from .body import attend, launch_setup, program_start, store


@triton.jit
def _vertical_slash_kernel(
    Q, K, V, DescK, DescV, Out, Lse, HeadMap, Seqlens,
    BlockOffsets, BlockCount, BlockPresent, Columns, ColumnCount,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads, n_sel, n_ctx, n_blocks, n_columns, group, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    STORE_LSE: tl.constexpr, PRECISION: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr = False,
    LOADS_AHEAD: tl.constexpr = True,
):
    """``LOADS_AHEAD`` (the default) is the loop order measured fastest below 256K tokens, inline loads the one
    measured fastest from there on; :func:`loop_order` picks it for a launch. Both compute the same function."""
    i_m = tl.program_id(0)
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv = program_start(
        Q, K, V, DescK, DescV, HeadMap, Seqlens, i_m, n_sel, group, stride_qb, stride_qh, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    head_row = i_b.to(tl.int64) * n_sel + i_s
    live = i_m * BLOCK_M < seqlen
    n_walk = tl.where(live, tl.load(BlockCount + head_row * n_blocks + i_m), 0)
    # offsets ascend from p = 0, the diagonal tile: the only one that needs the causal and length masks.
    # Each offset is loaded one iteration ahead: a K/V address that depends on a load in the same iteration costs
    # the software pipeliner a stage, leaving two buffers and a full drain per tile instead of three and overlap.
    p_offsets = BlockOffsets + head_row * n_blocks
    if LOADS_AHEAD:
        next_offset = tl.load(p_offsets + tl.minimum(1, n_blocks - 1))
    for t in range(1, n_walk):
        if LOADS_AHEAD:
            offset = next_offset
            next_offset = tl.load(p_offsets + tl.minimum(t + 1, n_blocks - 1))
        else:
            offset = tl.load(p_offsets + t)
        start_n = (i_m - offset) * BLOCK_N
        o_key = start_n + o_n
        acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d, qk_scale,
                                PRECISION, False, EVEN_D, TMA)
    if n_walk > 0:
        start_n = i_m * BLOCK_N
        o_key = start_n + o_n
        key_ok = o_key < seqlen
        valid = key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
        acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
                                PRECISION, True, EVEN_D, TMA)

    # gathered columns all lie left of this query block, so no causal test; skip those in walked blocks.
    # Columns and their walked flags are loaded one chunk ahead, for the same reason as the offsets above. Each
    # chunk's columns are also loaded once more, an iteration earlier (``later_key``), so that
    # gathering its walked flags never waits on a load issued in the same iteration; the K/V addresses keep their
    # one-iteration distance, which the software pipeliner handles (a two-iteration chain makes it give up).
    # On an H200 that made the kernel 3 % faster at 128K on both index sets (docs/benchmarks.md).
    n_cols = tl.where(live, tl.load(ColumnCount + head_row * n_blocks + i_m), 0)
    p_columns = Columns + head_row * n_columns
    p_present = BlockPresent + head_row * n_blocks + i_m
    if LOADS_AHEAD:
        next_key = tl.load(p_columns + o_n, mask=o_n < n_cols, other=0)
        next_ok = (o_n < n_cols) & (tl.load(p_present - next_key // BLOCK_N, mask=o_n < n_cols, other=1) == 0)
        later_key = tl.load(p_columns + BLOCK_N + o_n, mask=BLOCK_N + o_n < n_cols, other=0)
    for c in range(0, n_cols, BLOCK_N):
        if LOADS_AHEAD:
            o_key = next_key
            key_ok = next_ok
            m_next = c + BLOCK_N + o_n < n_cols
            next_key = tl.load(p_columns + c + BLOCK_N + o_n, mask=m_next, other=0)
            next_ok = m_next & (tl.load(p_present - later_key // BLOCK_N, mask=m_next, other=1) == 0)
            later_key = tl.load(p_columns + c + 2 * BLOCK_N + o_n, mask=c + 2 * BLOCK_N + o_n < n_cols, other=0)
        else:
            o_c = c + o_n
            m_c = o_c < n_cols
            o_key = tl.load(p_columns + o_c, mask=m_c, other=0)
            walked = tl.load(p_present - o_key // BLOCK_N, mask=m_c, other=1)
            key_ok = m_c & (walked == 0)
        if LOADS_AHEAD:
            # lanes past the list read key 0 and walked columns their own row: every address is inside the sequence
            acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, 0, o_key, key_ok, key_ok, o_d, m_d, qk_scale,
                                    PRECISION, False, EVEN_D, KEY_MASK=True)
        else:
            valid = key_ok[None, :] & (o_m[:, None] >= 0)
            acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, 0, o_key, key_ok, valid, o_d, m_d, qk_scale,
                                    PRECISION, True, EVEN_D)
    store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE)


LONG_CONTEXT = 262144
"""From this many tokens on, :func:`loop_order` gives the vertical-slash kernel its inline loop order."""


def loop_order(n_ctx: int) -> dict:
    """The vertical-slash kernel's loop-order switches for ``n_ctx`` tokens. Measured on an H200 (bf16, head_dim
    128, budgets (1000, 6096), docs/benchmarks.md): loading the next block offset and the next chunk of columns one
    iteration ahead is 4-7 % faster at 128K on both index sets (40.8 vs 43.9 ms local-heavy, 233.7 vs 244.3 ms
    measured). From 256K on, heads whose walk covers a large share of the tiles (the measured set) run 7-10 %
    faster with inline loads (918.6 vs 991.0 ms at 256K, 2966 vs 3278 ms at 512K), while local-heavy heads, whose
    walk stays short and cheap, lose 6-7 % (85 -> 91 ms at 256K). The long walks dominate a launch's time, so long
    contexts take the inline order."""
    return dict(LOADS_AHEAD=n_ctx < LONG_CONTEXT)


def vertical_slash_forward(q, k, v, index: VerticalSlashIndex, heads: torch.Tensor, out: torch.Tensor,
                           lse: Optional[torch.Tensor] = None, seqlens: Optional[torch.Tensor] = None,
                           sm_scale: Optional[float] = None, launch: Optional[dict] = None) -> None:
    """Write heads ``heads (Hs,)`` of ``out (B, Hq, N, D)`` (and ``lse (B, Hq, N)``) from a vertical-slash index
    built for those heads. A program serves one query block of the index's grid: 64 rows on 4 warps, or 128 rows
    on 8 warps over 128 x 128 tiles and 128-column chunks. Inputs are assumed checked; ``launch`` overrides
    ``num_warps``/``num_stages`` and the kernel's loop order (``LOADS_AHEAD``; default :func:`loop_order`)."""
    batch, n_heads, n_ctx, head_dim = q.shape
    launch = {**loop_order(n_ctx), **(launch or {})}
    tile = index.tile
    seqlens, lse_arg, strides, meta, group, scale, descs = launch_setup(q, k, v, out, lse, seqlens, sm_scale,
                                                                         launch, tile, tile)
    n_blocks = index.block_count.shape[-1]
    grid = (triton.cdiv(n_ctx, tile), batch * heads.numel())
    _vertical_slash_kernel[grid](
        q, k, v, *descs, out, lse_arg, heads, seqlens,
        index.block_offsets, index.block_count, index.block_present, index.columns, index.column_count,
        *strides, n_heads, heads.numel(), n_ctx, n_blocks, index.columns.shape[-1], group, scale,
        BLOCK_M=tile, BLOCK_N=tile, **meta,
    )
