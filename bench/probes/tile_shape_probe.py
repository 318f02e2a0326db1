"""Decision measured: the body's 64 x 64 tiles on 4 warps and 3 stages (launch_options)."""
# GPU probe: how fast the library's attention body can run on this card, by tile shape, for the notes in
# docs/benchmarks.md (the "kept TFLOP/s" target).
#
# The A-shape kernel with ``sink = 0, local = N`` is dense causal attention written with the body every sparse kernel
# shares (``_attend``), and it accepts any ``BLOCK_M``/``BLOCK_N``. Timing it at several tile shapes, warps, stages and
# GQA packs, next to cuDNN and FlashAttention-2 through SDPA in the same process, bounds what the sparse kernels can reach
# with that body. The same shapes run on A-shape (128, 4096) too. SDPA's default dispatch with ``enable_gqa=True``
# (no ``repeat_kv`` copy) is timed for the Dense heads of mixed pattern lists. Every output is compared with cuDNN's.
#
# Usage, on a CUDA machine: ``OUT=dir python bench/probes/tile_shape_probe.py`` (writes ``dir/tileprobe.json``); ``NS`` picks
# the lengths (default ``32768,131072``).
import json
import os

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from minference.bench.timing import time_reps
from minference.kernels.a_shape import _a_shape_kernel
from minference.kernels.body import launch_setup

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
# (BLOCK_M, BLOCK_N, num_warps, num_stages, PACK); the first two are the library's unpacked and packed programs
SHAPES = [
    (64, 64, 4, 3, 1), (64, 64, 8, 3, 2),
    (64, 128, 4, 2, 1), (64, 128, 4, 3, 1), (64, 128, 8, 2, 2),
    (128, 64, 8, 3, 1), (128, 128, 8, 2, 1), (128, 128, 8, 3, 1),
]


def launch_a_shape(q, k, v, out, sink: int, local: int, block_m: int, block_n: int, warps: int, stages: int,
                   pack: int, tma: bool = False) -> None:
    """``_a_shape_kernel`` over all heads with one budget, ``pack`` query heads of one K/V head per program, K/V
    loaded through pointers or (``tma``) tensor descriptors."""
    n_ctx = q.shape[2]
    group = HEADS // KV_HEADS
    heads = torch.arange(HEADS, device=q.device, dtype=torch.int32)  # consecutive heads share a K/V head
    n_programs = HEADS // pack
    sinks = torch.full((n_programs,), sink, device=q.device, dtype=torch.int32)
    locals_ = torch.full((n_programs,), local, device=q.device, dtype=torch.int32)
    launch = {"num_warps": warps, "num_stages": stages, "TMA": tma}
    seqlens, lse_arg, strides, meta, _, scale, descs = launch_setup(q, k, v, out, None, None, None, launch,
                                                                        pack * block_m, block_n)
    grid = (triton.cdiv(n_ctx, block_m), q.shape[0] * n_programs)
    _a_shape_kernel[grid](q, k, v, *descs, out, lse_arg, heads, seqlens, sinks, locals_, *strides, HEADS,
                             n_programs, n_ctx, group, scale, BLOCK_M=block_m, BLOCK_N=block_n, PACK=pack, **meta)


def causal_flops(n: int, sink: int, local: int) -> float:
    """Multiply-adds x 4 of the pairs the mask keeps, all heads (what a perfect kernel would compute)."""
    rows = torch.arange(n, dtype=torch.float64)
    kept = torch.minimum(rows + 1, torch.clamp(rows + 1, max=local) + torch.clamp(rows + 1 - local, min=0,
                                                                                  max=sink)).sum().item()
    return 4.0 * HEADS * HEAD_DIM * kept


def run_length(n: int, dev) -> list:
    torch.manual_seed(0)
    q = torch.randn(1, HEADS, n, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, KV_HEADS, n, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    k_rep, v_rep = k.repeat_interleave(HEADS // KV_HEADS, 1), v.repeat_interleave(HEADS // KV_HEADS, 1)
    reps = 4 if n >= 1 << 17 else 10
    rows = []
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn_ms = time_reps(lambda: F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True), reps).median_ms
        reference = F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True)
    dense_flops = causal_flops(n, 0, n)
    rows.append(dict(n=n, method="sdpa_cudnn", ms=cudnn_ms, tflops=dense_flops / cudnn_ms / 1e9))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        flash_ms = time_reps(lambda: F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True), reps).median_ms
    rows.append(dict(n=n, method="sdpa_flash", ms=flash_ms, tflops=dense_flops / flash_ms / 1e9,
                     vs_cudnn=cudnn_ms / flash_ms))
    for label, backends in (("sdpa_default_enable_gqa", None), ("sdpa_cudnn_enable_gqa", SDPBackend.CUDNN_ATTENTION),
                            ("sdpa_flash_enable_gqa", SDPBackend.FLASH_ATTENTION)):
        def gqa():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        try:
            if backends is None:
                ms, out = time_reps(gqa, reps).median_ms, gqa()
            else:
                with sdpa_kernel(backends):
                    ms, out = time_reps(gqa, reps).median_ms, gqa()
            rows.append(dict(n=n, method=label, ms=ms, tflops=dense_flops / ms / 1e9, vs_cudnn=cudnn_ms / ms,
                             max_diff_vs_cudnn=float((out.float() - reference.float()).abs().max())))
        except RuntimeError as error:
            rows.append(dict(n=n, method=label, error=str(error)[:300]))
        print(json.dumps(rows[-1]), flush=True)
    for case, sink, local in (("dense", 0, n), ("a_shape", 128, 4096)):
        flops = causal_flops(n, sink, local)
        case_reference = reference if case == "dense" else None
        for block_m, block_n, warps, stages, pack in SHAPES:
            out = torch.full_like(q, float("nan"))
            row = dict(n=n, method=f"ours {case}", block_m=block_m, block_n=block_n, warps=warps, stages=stages,
                       pack=pack)
            try:
                ms = time_reps(lambda: launch_a_shape(q, k, v, out, sink, local, block_m, block_n, warps, stages,
                                                pack), reps).median_ms
            except Exception as error:  # OutOfResources for shapes whose buffers overflow shared memory
                row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            share = (flops / ms) / (dense_flops / cudnn_ms)
            row.update(ms=ms, tflops_kept=flops / ms / 1e9, kept_vs_cudnn_tflops=share,
                       nan_rows=int(out.isnan().any(-1).sum()))
            if case_reference is not None:
                row["max_diff_vs_cudnn"] = float((out.float() - case_reference.float()).abs().max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    dev = torch.device("cuda")
    results = []
    for n in (int(x) for x in os.environ.get("NS", "32768,131072").split(",")):
        results += run_length(n, dev)
        torch.cuda.empty_cache()
        with open(os.path.join(os.environ.get("OUT", "/tmp"), "tileprobe.json"), "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                           rows=results), f, indent=1)


if __name__ == "__main__":
    main()
