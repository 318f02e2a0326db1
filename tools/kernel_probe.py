"""Quick kernel timing probe on a GPU: dense SDPA (flash, cuDNN) vs our kernels on fixed index sets.

Kept for the kernel-tuning notes in docs/benchmarks.md; the full suite lives in bench/.
Usage: python tools/kernel_probe.py [--sweep] [N ...]   (--sweep: time the vertical-slash kernel per launch config)
"""
import json
import sys

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import minference as mi
from minference import ops
from minference.index import build_vertical_slash_index
from minference.kernels.vertical_slash import vertical_slash_forward
from minference.patterns import vertical_slash


def tflops(n, heads, d, ms, density=1.0):
    return 2 * 2 * heads * d * n * n / 2 * density / (ms * 1e-3) / 1e12


def main(lengths):
    hq, hkv, d = 32, 8, 128
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    rows = []
    for n in lengths:
        q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        timings = {}
        for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel(backend):
                    fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    timings[name] = triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")
            except RuntimeError as err:
                timings[name] = float("nan")
                print(name, "failed:", str(err)[:200])
        vertical = torch.arange(1000, device="cuda").expand(1, hq, -1).contiguous()
        slash = torch.arange(6096, device="cuda").expand(1, hq, -1).contiguous()
        index = build_vertical_slash_index(n, vertical, slash)
        out = torch.empty_like(q)
        heads = torch.arange(hq, dtype=torch.int32, device="cuda")
        timings["vs_kernel_local_heavy"] = triton.testing.do_bench(
            lambda: vertical_slash_forward(q, k, v, index, heads, out), warmup=50, rep=200, return_mode="median")
        tiles = (index.block_count.sum() + (index.column_count + 63).div(64, rounding_mode="floor").sum()).item()
        causal_tiles = hq * sum(m + 1 for m in range(-(-n // 64)))
        density = tiles / causal_tiles
        pattern = mi.VerticalSlash(1000, 6096)
        timings["vs_estimate_index"] = triton.testing.do_bench(
            lambda: build_vertical_slash_index(n, *vertical_slash.estimate(q, k, [pattern] * hq, list(range(hq)))),
            warmup=10, rep=50, return_mode="median")
        timings["a_shape_128_3968"] = triton.testing.do_bench(
            lambda: ops.a_shape_attention(q, k, v, 128, 3968, validate=False, out=out), warmup=50, rep=200,
            return_mode="median")
        timings["vs_end_to_end_random"] = triton.testing.do_bench(
            lambda: mi.sparse_attention(q, k, v, pattern, validate=False, out=out), warmup=10, rep=50,
            return_mode="median")
        for warps, stages in SWEEP:
            launch = {"num_warps": warps, "num_stages": stages}
            timings[f"vs_kernel_w{warps}_s{stages}"] = triton.testing.do_bench(
                lambda: vertical_slash_forward(q, k, v, index, heads, out, launch=launch), warmup=25, rep=100,
                return_mode="median")
        row = {"n": n, "density_local_heavy": density, **timings}
        row["dense_tflops_cudnn"] = tflops(n, hq, d, timings["sdpa_cudnn"])
        row["dense_tflops_flash"] = tflops(n, hq, d, timings["sdpa_flash"])
        row["vs_kernel_kept_tflops"] = tflops(n, hq, d, timings["vs_kernel_local_heavy"], density)
        rows.append(row)
        print(json.dumps(row))
        torch.cuda.empty_cache()
    return rows


SWEEP = []

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--sweep" in args:
        args.remove("--sweep")
        SWEEP = [(4, 2), (4, 3), (4, 4), (8, 2), (8, 3)]
    main([int(x) for x in args] or [32768, 131072])
