"""GPU probe: vertical-slash kernel variants in one call on the same inputs, for the notes in docs/benchmarks.md.

The block walk loads its next offset one iteration ahead or not; the column loop loads its next chunk of columns
ahead (unmasked K/V loads, scores masked by key) or inline, masked or not. Every variant computes the same function
(the output's largest difference from the library kernel is recorded). Usage, on a CUDA machine:
``CASES=131072:local_heavy,524288:measured OUT=dir python tools/vs_loop_variants.py`` (writes ``dir/vsprobe.json``).
"""
import json
import math
import os

import torch
import triton
import triton.language as tl

from minference.kernels import sparse_attention as sa
from minference.kernels.sparse_attention import _attend, _program_start, _store
from minference.index import build_vertical_slash_index
from minference.bench.index_sets import vertical_slash_indices, load_head_stats
from minference.bench.timing import TimingConfig, time_call
from minference.patterns import VerticalSlash


@triton.jit
def _vs_variant(
    Q, K, V, Out, Lse, HeadMap, Seqlens,
    BlockOffsets, BlockCount, BlockPresent, Columns, ColumnCount,
    stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_on, stride_od,
    n_heads, n_sel, n_ctx, n_blocks, n_columns, group, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    STORE_LSE: tl.constexpr, PRECISION: tl.constexpr, EVEN_D: tl.constexpr,
    OFFSETS_AHEAD: tl.constexpr, COLUMNS_AHEAD: tl.constexpr, MASKED_LOADS: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_b, i_s, i_h, seqlen, o_m, o_n, o_d, m_d, b_q, k_base, v_base = _program_start(
        Q, K, V, HeadMap, Seqlens, i_m, n_sel, group, stride_qb, stride_qh, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_vb, stride_vh, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    head_row = i_b.to(tl.int64) * n_sel + i_s
    live = i_m * BLOCK_M < seqlen
    n_walk = tl.where(live, tl.load(BlockCount + head_row * n_blocks + i_m), 0)
    p_offsets = BlockOffsets + head_row * n_blocks
    if OFFSETS_AHEAD:
        next_offset = tl.load(p_offsets + tl.minimum(1, n_blocks - 1))
    for t in range(1, n_walk):
        if OFFSETS_AHEAD:
            offset = next_offset
            next_offset = tl.load(p_offsets + tl.minimum(t + 1, n_blocks - 1))
        else:
            offset = tl.load(p_offsets + t)
        o_key = (i_m - offset) * BLOCK_N + o_n
        acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, k_base, v_base, o_key, o_key >= 0, o_key >= 0, o_d, m_d,
                                stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, PRECISION, False, EVEN_D)
    if n_walk > 0:
        o_key = i_m * BLOCK_N + o_n
        key_ok = o_key < seqlen
        valid = key_ok[None, :] & (o_key[None, :] <= o_m[:, None])
        acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, k_base, v_base, o_key, key_ok, valid, o_d, m_d,
                                stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, PRECISION, True, EVEN_D)
    n_cols = tl.where(live, tl.load(ColumnCount + head_row * n_blocks + i_m), 0)
    p_columns = Columns + head_row * n_columns
    p_present = BlockPresent + head_row * n_blocks + i_m
    if COLUMNS_AHEAD:
        next_key = tl.load(p_columns + o_n, mask=o_n < n_cols, other=0)
        next_ok = (o_n < n_cols) & (tl.load(p_present - next_key // BLOCK_N, mask=o_n < n_cols, other=1) == 0)
    for c in range(0, n_cols, BLOCK_N):
        if COLUMNS_AHEAD:
            o_key = next_key
            key_ok = next_ok
            m_next = c + BLOCK_N + o_n < n_cols
            next_key = tl.load(p_columns + c + BLOCK_N + o_n, mask=m_next, other=0)
            next_ok = m_next & (tl.load(p_present - next_key // BLOCK_N, mask=m_next, other=1) == 0)
        else:
            o_c = c + o_n
            m_c = o_c < n_cols
            o_key = tl.load(p_columns + o_c, mask=m_c, other=0)
            walked = tl.load(p_present - o_key // BLOCK_N, mask=m_c, other=1)
            key_ok = m_c & (walked == 0)
        if MASKED_LOADS:
            valid = key_ok[None, :] & (o_m[:, None] >= 0)
            acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, k_base, v_base, o_key, key_ok, valid, o_d, m_d,
                                    stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, PRECISION, True, EVEN_D)
        else:
            acc, m_i, l_i = _attend(acc, m_i, l_i, b_q, k_base, v_base, o_key, key_ok, key_ok, o_d, m_d,
                                    stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, PRECISION, False, EVEN_D,
                                    KEY_MASK=True)
    _store(acc, m_i, l_i, Out, Lse, i_b, i_h, n_heads, n_ctx, seqlen, o_m, o_d, m_d,
           stride_ob, stride_oh, stride_on, stride_od, STORE_LSE)


def launch(q, k, v, index, heads, out, offsets_ahead, columns_ahead, masked_loads):
    seqlens, lse_arg, strides, meta, group, scale = sa._launch_setup(q, k, v, out, None, None, None, None)
    n_blocks = index.block_count.shape[-1]
    grid = (triton.cdiv(q.shape[2], 64), q.shape[0] * heads.numel())
    _vs_variant[grid](q, k, v, out, lse_arg, heads, seqlens, index.block_offsets, index.block_count,
                      index.block_present, index.columns, index.column_count, *strides, q.shape[1], heads.numel(),
                      q.shape[2], n_blocks, index.columns.shape[-1], group, scale, BLOCK_M=64, BLOCK_N=64,
                      OFFSETS_AHEAD=offsets_ahead, COLUMNS_AHEAD=columns_ahead, MASKED_LOADS=masked_loads, **meta)


def time_ms(fn, reps: int):
    """Median milliseconds of ``reps`` timed calls of ``fn()`` after one untimed call (the project's CUDA-event
    clock, with no single-call shortcut for slow calls)."""
    config = TimingConfig(warmup=1, min_reps=reps, max_reps=reps, long_call_s=math.inf)
    return time_call(lambda rep: fn(), "cuda", config)


VARIANTS = {  # label: (offsets ahead, columns ahead, masked column loads)
    "current (ahead, chunk-ahead unmasked)": (True, True, False),
    "old (inline offsets, inline masked)": (False, False, True),
    "ahead + inline masked": (True, False, True),
    "ahead + inline unmasked": (True, False, False),
    "ahead + chunk-ahead masked": (True, True, True),
    "inline + chunk-ahead unmasked": (False, True, False),
}


def run_case(n: int, name: str, stats, dev) -> list:
    torch.manual_seed(0)
    q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    vi, si = vertical_slash_indices(name, n, 1, 32, VerticalSlash(1000, 6096), device=dev, stats=stats)
    index = build_vertical_slash_index(n, vi, si)
    heads = torch.arange(32, device=dev, dtype=torch.int32)
    reference, rows = None, []
    reps = 3 if n >= 1 << 20 else 10
    for label, flags in VARIANTS.items():
        out = torch.full_like(q, float("nan"))
        timing = time_ms(lambda: launch(q, k, v, index, heads, out, *flags), reps)
        if reference is None:
            reference = out.clone()
        diff = float((out.float() - reference.float()).abs().max())
        row = dict(n=n, index_set=name, variant=label, ms=timing.median_ms, min_ms=timing.min_ms,
                   max_ms=timing.max_ms, reps=timing.reps, max_diff_vs_current=diff)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    out_dir = os.environ.get("OUT", "/tmp")
    cases = os.environ.get("CASES", "131072:local_heavy,131072:measured,1048576:local_heavy,1048576:measured")
    stats = load_head_stats()
    results = []
    for case in cases.split(","):
        n, name = case.split(":")
        results += run_case(int(n), name, stats, torch.device("cuda"))
        torch.cuda.empty_cache()
        with open(os.path.join(out_dir, "vsprobe.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
