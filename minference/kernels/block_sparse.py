"""The block-sparse kernel (the key blocks listed per query block) and its launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..index import BlockSparseIndex
from ..patterns.vertical_slash import TILE
from .body import attend, launch_setup, program_start, store


@triton.jit
def _block_sparse_kernel(
    Q, K, V, DescK, DescV, Out, Lse, HeadMap, Seqlens, Blocks, BlockCount,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    n_heads, n_sel, n_ctx, n_blocks, n_slots, group, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    STORE_LSE: tl.constexpr, PRECISION: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr = False,
):
    i_m = tl.program_id(0)
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv = program_start(
        Q, K, V, DescK, DescV, HeadMap, Seqlens, i_m, n_sel, group, stride_qb, stride_qh, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
        HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # a program covers BLOCK_M rows of one query block; a key block is walked as BLOCK_SIZE // BLOCK_N sub-tiles, so
    # 128-token blocks need 128-wide tiles (which overflow shared memory at large head_dim) only when asked for
    query_block = (i_m * BLOCK_M) // BLOCK_SIZE
    row = (i_b.to(tl.int64) * n_sel + i_s) * n_blocks + query_block
    n_walk = tl.where(i_m * BLOCK_M < seqlen, tl.load(BlockCount + row), 0)
    # blocks ascend and end with the query block itself: only that last one needs the causal and length masks.
    # Each block is loaded one iteration ahead so the pipeliner keeps three K/V stages (see the vertical-slash kernel)
    p_blocks = Blocks + row * n_slots
    next_block = tl.load(p_blocks)
    for t in range(0, n_walk - 1):
        key_block = next_block
        next_block = tl.load(p_blocks + tl.minimum(t + 1, n_slots - 1))
        for sub in tl.static_range(BLOCK_SIZE // BLOCK_N):
            start_n = key_block * BLOCK_SIZE + sub * BLOCK_N
            o_key = start_n + o_n
            acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d,
                                    qk_scale, PRECISION, False, EVEN_D, TMA)
    if n_walk > 0:
        for sub in tl.static_range(BLOCK_SIZE // BLOCK_N):
            start_n = query_block * BLOCK_SIZE + sub * BLOCK_N
            o_key = start_n + o_n
            key_ok = o_key < seqlen
            valid = key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
            acc, m_i, l_i = attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
                                    PRECISION, True, EVEN_D, TMA)
    store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE)


def block_sparse_forward(q, k, v, index: BlockSparseIndex, block_size: int, heads: torch.Tensor, out: torch.Tensor,
                         lse: Optional[torch.Tensor] = None, seqlens: Optional[torch.Tensor] = None,
                         sm_scale: Optional[float] = None, launch: Optional[dict] = None, wide: bool = False) -> None:
    """Write heads ``heads`` of ``out`` from a block-sparse index built for those heads. ``wide`` (128-token blocks
    only) runs one 128-row program per query block over whole 128 x 128 tiles on 8 warps, instead of two 64-row
    programs that each load every listed block as two 64-key tiles."""
    batch, n_heads, n_ctx, head_dim = q.shape
    if wide and block_size != 2 * TILE:
        raise ValueError(f"wide programs need 128-token blocks, got block_size {block_size}")
    tile = 2 * TILE if wide else min(block_size, TILE)
    seqlens, lse_arg, strides, meta, group, scale, descs = launch_setup(q, k, v, out, lse, seqlens, sm_scale, launch,
                                                                         tile, tile)
    n_blocks, n_slots = index.blocks.shape[-2:]
    grid = (triton.cdiv(n_ctx, tile), batch * heads.numel())
    _block_sparse_kernel[grid](
        q, k, v, *descs, out, lse_arg, heads, seqlens, index.blocks, index.block_count,
        *strides, n_heads, heads.numel(), n_ctx, n_blocks, n_slots, group, scale,
        BLOCK_SIZE=block_size, BLOCK_M=tile, BLOCK_N=tile, **meta,
    )
