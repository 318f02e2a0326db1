"""The body every sparse kernel shares, and the host-side arguments it takes (:func:`launch_setup`).

The three kernels (``vertical_slash.py``, ``block_sparse.py``, ``a_shape.py``) share one body: load a query tile,
walk a list of key tiles with an online softmax (fp32 statistics, exp2 with the log2(e) folded into the scale), then
normalise and store. They differ only in where the key tiles come from:

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

import torch
import triton
import triton.language as tl

from ..patterns.vertical_slash import TILE
from ._utils import block_head_dim, dot_precision
from .launch import kv_descriptors, launch_options, tma_wanted

LOG2E = 1.4426950408889634


@triton.jit
def attend(acc, m_i, l_i, b_q, kv, start_n, o_key, key_ok, valid, o_d, m_d, qk_scale,
            PRECISION: tl.constexpr, MASKED: tl.constexpr, EVEN_D: tl.constexpr, TMA: tl.constexpr = False,
            KEY_MASK: tl.constexpr = False):
    """One key tile of the online softmax. ``MASKED`` tiles apply ``key_ok [BN]`` to the loads and ``valid [BM, BN]``
    to the scores; tiles strictly below the diagonal and inside the sequence skip both (most of the work).
    Tiles whose every address is valid load unmasked and may still drop scores: ``KEY_MASK`` keeps the keys in
    ``key_ok [BN]``.

    ``kv`` is what :func:`program_start` returns. Keys ``o_key`` load through pointers; with ``TMA`` the tile is the
    contiguous keys from ``start_n`` and loads as one bulk copy through the K/V tensor descriptors (Hopper's TMA),
    which fills keys past the tensor with zeros but reads those past ``seqlen``: masked tiles zero them in V."""
    if TMA:
        b_k, b_v = tma_tile(kv, start_n)
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
def tma_tile(kv, start_n):
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
def program_start(Q, K, V, DescK, DescV, HeadMap, Seqlens, i_m, n_sel, group,
                   stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PACK: tl.constexpr = 1):
    """Which batch row and query head this program serves, its row/column offsets, its query tile, and ``kv``: how
    :func:`attend` reaches the K/V head it reads (``head // group``: GQA without copies), as base pointers and
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
def store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
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


def launch_setup(q, k, v, out, lse, seqlens, sm_scale, launch, rows: int = TILE, keys: int = TILE):
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
