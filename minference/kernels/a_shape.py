"""The A-shape kernel (sink blocks and a local window, under the exact predicate) and its launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..patterns.vertical_slash import TILE
from .body import attend, launch_setup, program_start, store


@triton.jit
def _a_shape_masked_tile(acc, m_i, l_i, b_q, kv, key_block, o_m, o_n, o_d, m_d, seqlen, sink, local, qk_scale,
                         BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr):
    """A key tile under the exact A-shape predicate: causal, inside the sequence, and sink or within the window."""
    start_n = key_block * BLOCK_N
    o_key = start_n + o_n
    key_ok = o_key < seqlen
    valid = (key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
             & ((o_key[None, :] < sink) | (o_m[:, None] - o_key[None, :] < local)))
    return attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
                   PRECISION, True, EVEN_D, TMA)


@triton.jit
def _a_shape_kernel(
    Q, K, V, DescK, DescV, Out, Lse, HeadMap, Seqlens, Sinks, Locals,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads, n_sel, n_ctx, group, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    STORE_LSE: tl.constexpr, PRECISION: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr = False,
    PACK: tl.constexpr = 1,
):
    # a program covers BLOCK_M positions of PACK query heads that share one K/V head and one (sink, local) budget
    i_m = tl.program_id(0)
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv = program_start(
        Q, K, V, DescK, DescV, HeadMap, Seqlens, i_m, n_sel, group, stride_qb, stride_qh, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, PACK)
    acc = tl.zeros([PACK * BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([PACK * BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([PACK * BLOCK_M], dtype=tl.float32)
    sink = tl.load(Sinks + i_s)
    local = tl.load(Locals + i_s)

    # key blocks: the sink blocks, then the window blocks not already visited, up to the diagonal block
    last_block = tl.where(i_m * BLOCK_M < seqlen, ((i_m + 1) * BLOCK_M - 1) // BLOCK_N, -1)
    sink_blocks = tl.minimum(tl.cdiv(sink, BLOCK_N), last_block + 1)
    window_start = tl.maximum(tl.maximum(i_m * BLOCK_M - local + 1, 0) // BLOCK_N, tl.cdiv(sink, BLOCK_N))
    # Tiles strictly left of the query block lie inside the sequence and below the diagonal. Such a tile needs no
    # mask when it is all sink, or when even its farthest (row, key) pair is within the window: most of the work.
    below = tl.maximum(tl.minimum(last_block, i_m * BLOCK_M // BLOCK_N), 0)
    full_sink = tl.minimum(sink // BLOCK_N, below)
    full_window = tl.maximum((i_m * BLOCK_M + BLOCK_M - 1 - local) // BLOCK_N + 1, window_start)
    for key_block in range(0, full_sink):
        start_n = key_block * BLOCK_N
        o_key = start_n + o_n
        acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d, qk_scale,
                                PRECISION, False, EVEN_D, TMA)
    for key_block in range(full_sink, sink_blocks):
        acc, m_i, l_i = _a_shape_masked_tile(acc, m_i, l_i, b_q, kv, key_block, o_m, o_n, o_d, m_d, seqlen, sink,
                                             local, qk_scale, BLOCK_N, PRECISION, EVEN_D, TMA)
    for key_block in range(window_start, tl.minimum(full_window, below)):
        acc, m_i, l_i = _a_shape_masked_tile(acc, m_i, l_i, b_q, kv, key_block, o_m, o_n, o_d, m_d, seqlen, sink,
                                             local, qk_scale, BLOCK_N, PRECISION, EVEN_D, TMA)
    for key_block in range(tl.maximum(full_window, window_start), below):
        start_n = key_block * BLOCK_N
        o_key = start_n + o_n
        acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d, qk_scale,
                                PRECISION, False, EVEN_D, TMA)
    for key_block in range(tl.maximum(below, window_start), last_block + 1):
        acc, m_i, l_i = _a_shape_masked_tile(acc, m_i, l_i, b_q, kv, key_block, o_m, o_n, o_d, m_d, seqlen, sink,
                                             local, qk_scale, BLOCK_N, PRECISION, EVEN_D, TMA)
    store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE, PACK)


def a_shape_forward(q, k, v, sink: torch.Tensor, local: torch.Tensor, heads: torch.Tensor, out: torch.Tensor,
                    lse: Optional[torch.Tensor] = None, seqlens: Optional[torch.Tensor] = None,
                    sm_scale: Optional[float] = None, launch: Optional[dict] = None, pack: int = 1) -> None:
    """Write heads ``heads`` of ``out`` for per-head ``sink (Hs,)`` and ``local (Hs,)`` int32 budgets.

    With ``pack > 1``, ``heads`` lists packs of ``pack`` query heads of one K/V head back to back and ``sink``,
    ``local`` hold one budget per pack (:func:`minference.kernels.gqa_pack.plan_packs`); a program then walks its
    tiles once for the whole pack, on ``4 * pack`` warps unless ``launch`` says otherwise.
    """
    batch, n_heads, n_ctx, head_dim = q.shape
    seqlens, lse_arg, strides, meta, group, scale, descs = launch_setup(q, k, v, out, lse, seqlens, sm_scale, launch,
                                                                         pack * TILE)
    n_programs = heads.numel() // pack
    grid = (triton.cdiv(n_ctx, TILE), batch * n_programs)
    _a_shape_kernel[grid](
        q, k, v, *descs, out, lse_arg, heads, seqlens, sink, local,
        *strides, n_heads, n_programs, n_ctx, group, scale,
        BLOCK_M=TILE, BLOCK_N=TILE, PACK=pack, **meta,
    )
