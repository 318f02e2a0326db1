"""Decision measured: K/V tiles load through TMA descriptors by default on Hopper."""
# GPU probe: can a Triton attention body with Hopper's TMA loads and warp specialisation pass 80 % of cuDNN?
#
# The design asks the sparse kernels for 80 % of cuDNN's dense TFLOP/s on the tiles they keep. The tile-shape probe
# (``bench/probes/tile_shape_probe.py``, docs/benchmarks.md) showed that the library's body, which loads K/V through pointer
# arithmetic, reaches 80-82 % only with 128 x 128 tiles, and 70-71 % with the 64 x 64 tiles of 64-token indexes. What
# is left is what FlashAttention-3 uses on Hopper: TMA loads (``tl.make_tensor_descriptor`` / host
# ``TensorDescriptor``: one asynchronous copy per tile instead of per-thread addresses) and warp specialisation
# (``tl.range(..., warp_specialize=True)``: producer warps load while consumer warps compute). This probe times a
# dense causal forward written with them, at the tile shapes the sparse kernels could use, against cuDNN and the
# library's own body (A-shape at ``local = N``) in the same process; the library's rows run through pointer loads and
# through its own TMA descriptors (its default on sm90 since this probe's first run, docs/benchmarks.md). Two more pairs separate the cost of reading tile
# positions from an index (what the sparse kernels do): the library's block-sparse kernel with every causal block
# listed, against its body; and the TMA kernel with its tiles addressed through a list of block ids, against the same
# kernel walking them in order. Each output is compared with cuDNN's; a variant this Triton cannot compile is
# recorded with its error, not dropped.
#
# A variant worth adopting must beat the library's body at 64 x 64 (what vertical-slash and 64-token block-sparse use)
# or at 128 x 128 (128-token block-sparse): TMA takes a runtime row offset, so a block id or a block offset read from
# an index can address its tile the same way.
#
# Usage, on a CUDA machine: ``OUT=dir python bench/probes/hopper_body_probe.py`` (writes ``dir/hopperprobe.json``); ``NS``
# picks the lengths (default ``32768,131072``). ``tests/test_probe_kernels.py`` checks every variant against the
# masked float64 reference (``pytest -m kernels``: interpreter on the CPU, bf16 on an sm90 GPU).
from __future__ import annotations

import json
import math
import os

import torch
import triton
import triton.language as tl
from tile_shape_probe import HEAD_DIM, HEADS, KV_HEADS, causal_flops, launch_a_shape  # same shapes, same count
from triton.tools.tensor_descriptor import TensorDescriptor

from minference.kernels.body import LOG2E
# (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize)
VARIANTS = [
    (64, 64, 4, 3, False), (64, 64, 4, 3, True),
    (128, 64, 8, 3, False), (128, 64, 8, 3, True),
    (128, 128, 8, 2, False), (128, 128, 8, 2, True), (128, 128, 8, 3, False), (128, 128, 8, 3, True),
]
# the sparse kernels' tile shapes, with each tile's position read from an index as their walks do
BLOCK_ID_VARIANTS = [(64, 64, 4, 3, False), (128, 128, 8, 3, False)]


@triton.jit
def _online_step(acc, m_i, l_i, q, k, v, scale_log2, offs_m, start_n,
                 BLOCK_N: tl.constexpr, ON_DIAGONAL: tl.constexpr):
    """One key tile of the online softmax; only tiles that cross the diagonal pay for the causal mask."""
    s = tl.dot(q, tl.trans(k)) * scale_log2
    if ON_DIAGONAL:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, m_new, l_i


@triton.jit
def _dense_causal_tma_kernel(desc_q, desc_k, desc_v, desc_o, BlockIds, n_ctx, heads, group, scale_log2,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                             STAGES: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, BLOCK_IDS: tl.constexpr):
    """Dense causal attention over ``(B * H * N, D)`` row views; requires ``BLOCK_M % BLOCK_N == 0`` and
    ``n_ctx % BLOCK_M == 0`` (the probe's lengths). With ``BLOCK_IDS`` the tiles left of the diagonal are addressed
    through ``BlockIds`` (every key block, in order), the way a block-sparse kernel reads its list: same work, plus
    an index load that each tile's address depends on."""
    start_m = tl.program_id(0)
    batch_head = tl.program_id(1)
    batch = batch_head // heads
    kv_row = (batch * (heads // group) + (batch_head % heads) // group) * n_ctx
    q_row = batch_head * n_ctx + start_m * BLOCK_M
    q = desc_q.load([q_row, 0])
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    diagonal = start_m * BLOCK_M
    for walked in tl.range(0, diagonal, BLOCK_N, num_stages=STAGES, warp_specialize=WARP_SPECIALIZE):
        start_n = walked
        if BLOCK_IDS:
            start_n = tl.load(BlockIds + walked // BLOCK_N) * BLOCK_N
        k = desc_k.load([kv_row + start_n, 0])
        v = desc_v.load([kv_row + start_n, 0])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, scale_log2, offs_m, start_n, BLOCK_N, False)
    for start_n in tl.range(diagonal, diagonal + BLOCK_M, BLOCK_N):
        k = desc_k.load([kv_row + start_n, 0])
        v = desc_v.load([kv_row + start_n, 0])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, scale_log2, offs_m, start_n, BLOCK_N, True)
    desc_o.store([q_row, 0], (acc / l_i[:, None]).to(desc_o.dtype))


def tma_attention(q, k, v, block_m: int, block_n: int, warps: int, stages: int, warp_specialize: bool,
                  block_ids: bool = False, out=None):
    """Dense causal ``softmax(q k^T / sqrt(d)) v`` with the TMA kernel; ``q (B, H, N, D)``, ``k, v (B, Hkv, N, D)``
    contiguous, ``N`` a multiple of ``block_m``; ``block_ids`` reads each key tile's position from an index. Writes
    ``out`` (a new NaN-filled tensor if None) and returns it."""
    batch, heads, n_ctx, head_dim = q.shape
    if n_ctx % block_m or block_m % block_n:
        raise ValueError(f"N ({n_ctx}) must be a multiple of BLOCK_M ({block_m}), and BLOCK_M of BLOCK_N ({block_n})")
    out = torch.full_like(q, float("nan")) if out is None else out
    rows = lambda t: t.reshape(-1, head_dim)  # noqa: E731
    desc_q = TensorDescriptor.from_tensor(rows(q), [block_m, head_dim])
    desc_o = TensorDescriptor.from_tensor(rows(out), [block_m, head_dim])
    desc_k = TensorDescriptor.from_tensor(rows(k), [block_n, head_dim])
    desc_v = TensorDescriptor.from_tensor(rows(v), [block_n, head_dim])
    scale_log2 = LOG2E / math.sqrt(head_dim)
    grid = (n_ctx // block_m, batch * heads)
    options = {} if os.environ.get("TRITON_INTERPRET") == "1" else {"num_warps": warps}
    ids = torch.arange(n_ctx // block_n, dtype=torch.int32, device=q.device)
    _dense_causal_tma_kernel[grid](desc_q, desc_k, desc_v, desc_o, ids, n_ctx, heads, heads // k.shape[1],
                                   scale_log2, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim, STAGES=stages,
                                   WARP_SPECIALIZE=warp_specialize, BLOCK_IDS=block_ids, **options)
    return out


def run_length(n: int) -> list:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from minference.bench.timing import time_reps
    from minference.index import build_block_sparse_index
    from minference.kernels import block_sparse as sa

    torch.manual_seed(0)
    q = torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, KV_HEADS, n, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    reps = 4 if n >= 1 << 17 else 10
    flops = causal_flops(n, 0, n)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        k_rep, v_rep = k.repeat_interleave(HEADS // KV_HEADS, 1), v.repeat_interleave(HEADS // KV_HEADS, 1)
        cudnn = lambda: F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True)  # noqa: E731
        cudnn_ms, reference = time_reps(cudnn, reps).median_ms, cudnn()
    rows = [dict(n=n, method="sdpa_cudnn", ms=cudnn_ms, tflops=flops / cudnn_ms / 1e9, share_of_cudnn=1.0)]

    out = torch.empty_like(q)  # every variant writes here, poisoned before its first call
    heads = torch.arange(HEADS, device="cuda", dtype=torch.int32)

    def timed(label: str, run) -> None:
        """One row: ``run()`` writes ``out``; a variant this Triton cannot build is a result too."""
        try:
            out.fill_(float("nan"))
            run()
            diff, has_nan = float((out - reference).abs().max()), bool(out.isnan().any())
            ms = time_reps(run, reps).median_ms
            rows.append(dict(n=n, method=label, ms=ms, tflops=flops / ms / 1e9, share_of_cudnn=cudnn_ms / ms,
                             max_diff=diff, nan=has_nan))
        except Exception as error:
            rows.append(dict(n=n, method=label, error=f"{type(error).__name__}: {str(error)[:300]}"))
        print(json.dumps(rows[-1]), flush=True)

    for block in (64, 128):
        # the library through pointer loads and through its TMA descriptors (its default on sm90 since this probe)
        blocks = n // block
        ids = torch.arange(blocks, device="cuda", dtype=torch.int32).expand(blocks, blocks)
        index = build_block_sparse_index(torch.where(ids <= ids.T, ids, -1).expand(1, HEADS, blocks, blocks))
        for tma in (False, True):
            loads = "TMA" if tma else "pointers"
            timed(f"library body {block}x{block} (A-shape at local = N), {loads}",
                  lambda: launch_a_shape(q, k, v, out, 0, n, block, block, block // 16, 3, 1, tma=tma))
            # the block-sparse kernel with every causal block listed: the body plus its index walk (the index is
            # built once, outside the timing, as the integration builds it once per layer)
            timed(f"library block-sparse {block}-token blocks, every block listed, {loads}",
                  lambda: sa.block_sparse_forward(q, k, v, index, block, heads, out, wide=block == 128,
                                                  launch={"TMA": tma}))
    for block_m, block_n, warps, stages, ws in VARIANTS:
        timed(f"tma {block_m}x{block_n} w{warps} s{stages}" + (" ws" if ws else ""),
              lambda: tma_attention(q, k, v, block_m, block_n, warps, stages, ws, out=out))
    for block_m, block_n, warps, stages, ws in BLOCK_ID_VARIANTS:
        timed(f"tma {block_m}x{block_n} w{warps} s{stages}, tiles addressed through block ids",
              lambda: tma_attention(q, k, v, block_m, block_n, warps, stages, ws, block_ids=True, out=out))
    return rows


def main() -> None:  # run as a script, bench/probes/ is on sys.path: tile_shape_probe imports from there
    out_dir = os.environ.get("OUT", ".")
    rows = []
    for n in (int(x) for x in os.environ.get("NS", "32768,131072").split(",")):
        rows += run_length(n)
    with open(os.path.join(out_dir, "hopperprobe.json"), "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
