"""Decision measured: the dense path (dense_below, Dense heads) keeps SDPA's default dispatch."""
# GPU probe: which SDPA backend does the default dispatch pick for the integration's dense path, and what does it
# cost against each backend pinned? The integration runs prompts below ``dense_below`` and Dense heads through
# ``F.scaled_dot_product_attention(..., enable_gqa=True)`` with the default dispatch; the e2e baselines pin cuDNN.
#
# Usage, on a CUDA machine: ``OUT=dir python bench/probes/sdpa_dispatch_probe.py`` (writes ``dir/sdpaprobe.json``); ``NS``
# picks the lengths (default ``8192,32000,131072``). Shapes: batch 1, 32 query / 8 K/V heads, head_dim 128, bf16, q/k/v
# as transformers hands them over (``(B, N, H, D)`` projections transposed to ``(B, H, N, D)`` views).
import json
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from minference.bench.timing import time_reps

PINNED = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
          "efficient": SDPBackend.EFFICIENT_ATTENTION}


def inputs(n: int):
    gen = torch.Generator(device="cuda").manual_seed(0)

    def projection(heads):
        return torch.randn(1, n, heads, 128, device="cuda", dtype=torch.bfloat16, generator=gen).transpose(1, 2)

    return projection(32), projection(8), projection(8)


def attend(q, k, v, backend=None):
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def main():
    out_dir = os.environ.get("OUT", "/tmp")
    rows = []
    for n in (int(x) for x in os.environ.get("NS", "8192,32000,131072").split(",")):
        q, k, v = inputs(n)
        reference = attend(q, k, v, PINNED["cudnn"]).float()
        for name, backend in [("default", None), *PINNED.items()]:
            try:
                out = attend(q, k, v, backend)
            except RuntimeError as error:
                rows.append(dict(n=n, backend=name, error=str(error).splitlines()[0][:200]))
                continue
            timing = time_reps(lambda: attend(q, k, v, backend), 3 if n > 65536 else 20)
            diff = float((out.float() - reference).abs().max())
            rows.append(dict(n=n, backend=name, ms=timing.median_ms, min_ms=timing.min_ms, reps=timing.reps,
                             max_diff_vs_cudnn=diff))
            print(json.dumps(rows[-1]), flush=True)
        with open(os.path.join(out_dir, "sdpaprobe.json"), "w") as f:
            json.dump(dict(torch=torch.__version__, cudnn=torch.backends.cudnn.version(),
                           gpu=torch.cuda.get_device_name(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
