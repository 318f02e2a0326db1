"""Triton forward kernels for the three sparse patterns.

All three share one body: load a query tile, walk a list of key tiles with an online softmax (fp32 statistics,
exp2 with the log2(e) folded into the scale), then normalise and store. They differ only in where the key tiles come
from:

- vertical-slash: key blocks ``m - p`` for the head's sorted block-diagonal offsets ``p``, then gathered columns;
- block-sparse: the sorted key blocks listed for the query block;
- A-shape: sink blocks and window blocks derived from ``(sink, local)``, with the exact predicate inside.

One launch serves a set of query heads (``head_map``): the program for (query block, batch x selected head) reads
the K/V head ``head // group`` directly, so GQA needs no ``repeat_kv`` copy, and writes its rows of the shared output.
Offsets are int64: 1M tokens x 32 heads x 128 overflows int32. Rows at or past a sequence's length are written as
zeros (lse ``-inf``).

Contiguous key tiles load through pointers or, with ``TMA`` (the launcher's choice on Hopper, sm90), as one bulk
copy each through tensor descriptors over K and V: 1.08-1.24x faster on an H200 (docs/benchmarks.md). Gathered
vertical-slash columns always load through pointers.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ..index import BlockSparseIndex, VerticalSlashIndex
from ..patterns.vertical_slash import TILE
from ._utils import block_head_dim, dot_precision
from .launch import kv_descriptors, launch_options, tma_wanted

LOG2E = 1.4426950408889634


@triton.jit
def _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
            PRECISION: tl.constexpr, MASKED: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr = False,
            KEY_MASK: tl.constexpr = False):
    """One key tile of the online softmax. ``MASKED`` tiles apply ``key_ok [BN]`` to the loads and ``valid [BM, BN]``
    to the scores; tiles strictly below the diagonal and inside the sequence skip both (most of the work).
    Tiles whose every address is valid load unmasked and may still drop scores: ``KEY_MASK`` keeps the keys in
    ``key_ok [BN]``.

    ``kv`` is what :func:`_program_start` returns. Keys ``o_key`` load through pointers; with ``TMA`` the tile is the
    contiguous keys from ``start_n`` and loads as one bulk copy through the K/V tensor descriptors (Hopper's TMA),
    which fills keys past the tensor with zeros but reads those past ``seqlen``: masked tiles zero them in V."""
    if TMA:
        b_k, b_v = _tma_tile(kv, start_n)
        if MASKED:
            b_v = tl.where(key_ok[:, None], b_v, 0.0)
    else:
        k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd = kv[0], kv[1], kv[2], kv[3], kv[4], kv[5]
        p_k = k_base + o_key[:, None].to(tl.int64) * stride_kn + o_d[None, :] * stride_kd
        p_v = v_base + o_key[:, None].to(tl.int64) * stride_vn + o_d[None, :] * stride_vd
        if MASKED:
            b_k = tl.load(p_k, mask=key_ok[:, None] & m_d[None, :], other=0.0)
            b_v = tl.load(p_v, mask=key_ok[:, None] & m_d[None, :], other=0.0)
        elif EVEN_D:
            b_k = tl.load(p_k)
            b_v = tl.load(p_v)
        else:
            b_k = tl.load(p_k, mask=m_d[None, :], other=0.0)
            b_v = tl.load(p_v, mask=m_d[None, :], other=0.0)
    # [BM, BN] scores in log2 units
    b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * qk_scale
    if MASKED:
        b_s = tl.where(valid, b_s, float("-inf"))
    elif KEY_MASK:
        b_s = tl.where(key_ok[None, :], b_s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(b_s, 1))
    # a row with nothing valid yet keeps m = -inf; shift by 0 so exp2 gives 0 instead of NaN
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_shift)
    b_p = tl.math.exp2(b_s - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(b_p, 1)
    acc = acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)
    return acc, m_new, l_i


@triton.jit
def _tma_tile(kv, start_n):
    """K and V rows ``start_n ...`` of this program's K/V head, one bulk copy each. The host orders the descriptors'
    dims by memory (:func:`~minference.kernels.launch.kv_descriptors`): ``(B, Hkv, N, D)`` when heads are outer,
    ``(B, N, Hkv, D)`` when positions are (the layout a ``(B, N, H, D)`` projection transposed gives)."""
    desc_k, desc_v, i_b, i_kv = kv[6], kv[7], kv[8], kv[9]
    rows: tl.constexpr = desc_k.block_shape[1] * desc_k.block_shape[2]
    width: tl.constexpr = desc_k.block_shape[3]
    if desc_k.block_shape[1] == 1:
        at = [i_b, i_kv, start_n, 0]
    else:
        at = [i_b, start_n, i_kv, 0]
    return desc_k.load(at).reshape([rows, width]), desc_v.load(at).reshape([rows, width])


@triton.jit
def _program_start(Q, K, V, DescK, DescV, HeadMap, Seqlens, i_m, n_sel, group,
                   stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PACK: tl.constexpr = 1):
    """Which batch row and query head this program serves, its row/column offsets, its query tile, and ``kv``: how
    :func:`_attend` reaches the K/V head it reads (``head // group``: GQA without copies), as base pointers and
    strides, and as descriptors with the head's coordinates (without TMA the descriptor slots hold K and V).

    With ``PACK > 1`` the program serves ``PACK`` query heads of one K/V head (``HeadMap[i_s * PACK + j]``) over the
    same ``BLOCK_M`` positions: its tile stacks their rows, so each K/V tile it loads serves all of them. ``i_h``
    and ``o_m`` are then per row (``PACK * BLOCK_M``), with positions repeating once per head."""
    i_bh = tl.program_id(1)
    i_b = i_bh // n_sel
    i_s = i_bh % n_sel
    # Two whole branches rather than shared lines: the unpacked one keeps the op order of the GPU-verified kernels,
    # so it compiles to the same TTGIR (checked for sm90 when packing was added).
    if PACK == 1:
        i_h = tl.load(HeadMap + i_s)
        i_kv = i_h // group
        seqlen = tl.load(Seqlens + i_b)
        o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
        o_n = tl.arange(0, BLOCK_N)
        o_d = tl.arange(0, BLOCK_D)
        m_d = o_d < HEAD_DIM
        p_q = (Q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
               + o_m[:, None].to(tl.int64) * stride_qn + o_d[None, :] * stride_qd)
    else:
        o_r = tl.arange(0, PACK * BLOCK_M)
        i_h = tl.load(HeadMap + i_s * PACK + o_r // BLOCK_M)
        i_kv = tl.load(HeadMap + i_s * PACK) // group
        seqlen = tl.load(Seqlens + i_b)
        o_m = i_m * BLOCK_M + o_r % BLOCK_M
        o_n = tl.arange(0, BLOCK_N)
        o_d = tl.arange(0, BLOCK_D)
        m_d = o_d < HEAD_DIM
        p_q = (Q + i_b.to(tl.int64) * stride_qb + i_h[:, None].to(tl.int64) * stride_qh
               + o_m[:, None].to(tl.int64) * stride_qn + o_d[None, :] * stride_qd)
    b_q = tl.load(p_q, mask=(o_m[:, None] < seqlen) & m_d[None, :], other=0.0)
    k_base = K + i_b.to(tl.int64) * stride_kb + i_kv.to(tl.int64) * stride_kh
    v_base = V + i_b.to(tl.int64) * stride_vb + i_kv.to(tl.int64) * stride_vh
    kv = (k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, DescK, DescV, i_b, i_kv)
    return i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv


@triton.jit
def _store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE: tl.constexpr, PACK: tl.constexpr = 1):
    row_ok = o_m < seqlen
    l_div = tl.where(l_i > 0, l_i, 1.0)
    b_o = tl.where(row_ok[:, None], acc / l_div[:, None], 0.0)
    if PACK == 1:
        p_o = (Out + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
               + o_m[:, None].to(tl.int64) * stride_on + o_d[None, :] * stride_od)
    else:
        p_o = (Out + i_b.to(tl.int64) * stride_ob + i_h[:, None].to(tl.int64) * stride_oh
               + o_m[:, None].to(tl.int64) * stride_on + o_d[None, :] * stride_od)
    tl.store(p_o, b_o.to(Out.dtype.element_ty), mask=(o_m[:, None] < n_ctx) & m_d[None, :])
    if STORE_LSE:
        lse = tl.where(row_ok & (l_i > 0), (m_i + tl.math.log2(l_div)) * 0.6931471805599453, float("-inf"))
        p_lse = Lse + (i_b.to(tl.int64) * n_heads + i_h) * n_ctx + o_m
        tl.store(p_lse, lse, mask=o_m < n_ctx)


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
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv = _program_start(
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
        acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d, qk_scale,
                                PRECISION, False, EVEN_D, TMA)
    if n_walk > 0:
        start_n = i_m * BLOCK_N
        o_key = start_n + o_n
        key_ok = o_key < seqlen
        valid = key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
        acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
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
            acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, 0, o_key, key_ok, key_ok, o_d, m_d, qk_scale,
                                    PRECISION, False, EVEN_D, KEY_MASK=True)
        else:
            valid = key_ok[None, :] & (o_m[:, None] >= 0)
            acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, 0, o_key, key_ok, valid, o_d, m_d, qk_scale,
                                    PRECISION, True, EVEN_D)
    _store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE)


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
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv = _program_start(
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
            acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d,
                                    qk_scale, PRECISION, False, EVEN_D, TMA)
    if n_walk > 0:
        for sub in tl.static_range(BLOCK_SIZE // BLOCK_N):
            start_n = query_block * BLOCK_SIZE + sub * BLOCK_N
            o_key = start_n + o_n
            key_ok = o_key < seqlen
            valid = key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
            acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
                                    PRECISION, True, EVEN_D, TMA)
    _store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE)


@triton.jit
def _a_shape_masked_tile(acc, m_i, l_i, b_q, kv, key_block, o_m, o_n, o_d, m_d, seqlen, sink, local, qk_scale,
                         BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr):
    """A key tile under the exact A-shape predicate: causal, inside the sequence, and sink or within the window."""
    start_n = key_block * BLOCK_N
    o_key = start_n + o_n
    key_ok = o_key < seqlen
    valid = (key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
             & ((o_key[None, :] < sink) | (o_m[:, None] - o_key[None, :] < local)))
    return _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
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
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, kv = _program_start(
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
        acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d, qk_scale,
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
        acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, kv, start_n, o_key, o_key >= 0, o_key >= 0, o_d, m_d, qk_scale,
                                PRECISION, False, EVEN_D, TMA)
    for key_block in range(tl.maximum(below, window_start), last_block + 1):
        acc, m_i, l_i = _a_shape_masked_tile(acc, m_i, l_i, b_q, kv, key_block, o_m, o_n, o_d, m_d, seqlen, sink,
                                             local, qk_scale, BLOCK_N, PRECISION, EVEN_D, TMA)
    _store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE, PACK)


def _launch_setup(q, k, v, out, lse, seqlens, sm_scale, launch, rows: int = TILE, keys: int = TILE):
    """What every launch shares: lengths, strides, compile-time constants (warps for ``rows`` query rows per
    program), GQA group size, the log2 scale, and the K/V descriptors for ``keys``-row tiles (``(k, v)`` for
    pointer loads). ``launch["TMA"]`` asks for descriptors or pointers; left out, :func:`tma_wanted` decides, and
    tensors TMA cannot address fall back to pointers."""
    batch, n_heads, n_ctx, head_dim = q.shape
    if seqlens is None:
        seqlens = torch.full((batch,), n_ctx, dtype=torch.int32, device=q.device)
    launch = dict(launch or {})
    tma = launch.pop("TMA", None)
    block_d = block_head_dim(head_dim)
    descriptors = kv_descriptors(k, v, keys, block_d) if (tma_wanted(q.device) if tma is None else tma) else None
    if tma and descriptors is None:
        raise ValueError("launch TMA=True needs K and V that tensor descriptors can address: head dim contiguous, "
                         f"16-byte aligned base and strides; got K strides {tuple(k.stride())}, "
                         f"V strides {tuple(v.stride())}, {k.dtype}")
    meta = dict(HEAD_DIM=head_dim, BLOCK_D=block_d, PRECISION=dot_precision(q.dtype),
                EVEN_D=head_dim == block_d, STORE_LSE=lse is not None, TMA=descriptors is not None,
                **{**launch_options(head_dim, q.dtype, rows), **launch})
    strides = [*q.stride(), *k.stride(), *v.stride(), *out.stride()]
    scale = (1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale) * LOG2E
    lse_arg = lse if lse is not None else out  # never written when STORE_LSE is off
    # pointer launches fill the descriptor slots with K and V, never read: Triton 3.6 cannot build the kernels'
    # ``kv`` tuple with None in it
    return seqlens, lse_arg, strides, meta, n_heads // k.shape[1], scale, descriptors or (k, v)


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
    seqlens, lse_arg, strides, meta, group, scale, descs = _launch_setup(q, k, v, out, lse, seqlens, sm_scale,
                                                                         launch, tile, tile)
    n_blocks = index.block_count.shape[-1]
    grid = (triton.cdiv(n_ctx, tile), batch * heads.numel())
    _vertical_slash_kernel[grid](
        q, k, v, *descs, out, lse_arg, heads, seqlens,
        index.block_offsets, index.block_count, index.block_present, index.columns, index.column_count,
        *strides, n_heads, heads.numel(), n_ctx, n_blocks, index.columns.shape[-1], group, scale,
        BLOCK_M=tile, BLOCK_N=tile, **meta,
    )


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
    seqlens, lse_arg, strides, meta, group, scale, descs = _launch_setup(q, k, v, out, lse, seqlens, sm_scale, launch,
                                                                         tile, tile)
    n_blocks, n_slots = index.blocks.shape[-2:]
    grid = (triton.cdiv(n_ctx, tile), batch * heads.numel())
    _block_sparse_kernel[grid](
        q, k, v, *descs, out, lse_arg, heads, seqlens, index.blocks, index.block_count,
        *strides, n_heads, heads.numel(), n_ctx, n_blocks, n_slots, group, scale,
        BLOCK_SIZE=block_size, BLOCK_M=tile, BLOCK_N=tile, **meta,
    )


def a_shape_forward(q, k, v, sink: torch.Tensor, local: torch.Tensor, heads: torch.Tensor, out: torch.Tensor,
                    lse: Optional[torch.Tensor] = None, seqlens: Optional[torch.Tensor] = None,
                    sm_scale: Optional[float] = None, launch: Optional[dict] = None, pack: int = 1) -> None:
    """Write heads ``heads`` of ``out`` for per-head ``sink (Hs,)`` and ``local (Hs,)`` int32 budgets.

    With ``pack > 1``, ``heads`` lists packs of ``pack`` query heads of one K/V head back to back and ``sink``,
    ``local`` hold one budget per pack (:func:`minference.kernels.gqa_pack.plan_packs`); a program then walks its
    tiles once for the whole pack, on ``4 * pack`` warps unless ``launch`` says otherwise.
    """
    batch, n_heads, n_ctx, head_dim = q.shape
    seqlens, lse_arg, strides, meta, group, scale, descs = _launch_setup(q, k, v, out, lse, seqlens, sm_scale, launch,
                                                                         pack * TILE)
    n_programs = heads.numel() // pack
    grid = (triton.cdiv(n_ctx, TILE), batch * n_programs)
    _a_shape_kernel[grid](
        q, k, v, *descs, out, lse_arg, heads, seqlens, sink, local,
        *strides, n_heads, n_programs, n_ctx, group, scale,
        BLOCK_M=TILE, BLOCK_N=TILE, PACK=pack, **meta,
    )
