"""Decision measured: diagonal sums through a strided view; GQA packing of A-shape heads."""
# GPU probe for the notes in docs/benchmarks.md, one process: (1) vertical-slash estimation with the strided-view
# diagonal sums (library) against the gather it replaced, with a check that both choose the same indices; (2) the
# A-shape kernel with ``gqa_pack`` 1 and 2 at ``local = N`` (how ``sparse_attention`` runs Dense heads) against cuDNN.
# Usage, on a CUDA machine: ``OUT=dir python bench/probes/estimate_and_pack_probe.py`` (writes ``dir/estpack.json``).
import json
import math
import os

import torch

from minference import ops
from minference.bench.timing import time_reps
from minference.patterns import vertical_slash as vs
from minference.patterns import VerticalSlash


def gather_diagonals(probs, lengths):
    batch, heads, rows, n = probs.shape
    last_pos = lengths.view(-1, 1) - rows + torch.arange(rows, device=probs.device).view(1, -1)
    src = last_pos.view(batch, 1, rows, 1) - torch.arange(n, device=probs.device).view(1, 1, 1, n)
    return probs.gather(3, src.clamp_min(0).expand_as(probs)).masked_fill_(src < 0, 0.0).sum(dim=2)


def estimation_row(n: int, dev) -> dict:
    torch.manual_seed(0)
    q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
    pats = [VerticalSlash(1000, 6096)] * 32
    heads = list(range(32))
    reps = 5 if n >= 1 << 20 else 20
    new_ms = time_reps(lambda: vs.estimate(q, k, pats, heads), reps).median_ms
    vi_new, si_new = vs.estimate(q, k, pats, heads)
    original = vs.diagonal_sums
    vs.diagonal_sums = lambda probs, lengths=None: gather_diagonals(
        probs, torch.full((probs.shape[0],), probs.shape[-1], device=probs.device) if lengths is None else lengths)
    try:
        old_ms = time_reps(lambda: vs.estimate(q, k, pats, heads), reps).median_ms
        vi_old, si_old = vs.estimate(q, k, pats, heads)
    finally:
        vs.diagonal_sums = original
    same_sets = [bool(torch.equal(si_new[0, h].sort().values, si_old[0, h].sort().values)) for h in heads]
    # the sums themselves, for four query heads of one K/V head
    s = torch.matmul(q[:, :4, -64:], k[:, :1].transpose(-1, -2)).float() / math.sqrt(128)
    rows = torch.arange(n - 64, n, device=dev)
    s[..., n - 64:].masked_fill_(rows.view(1, -1) > rows.view(-1, 1), float("-inf"))
    p = torch.softmax(s, -1)
    a, b = vs.diagonal_sums(p), gather_diagonals(p, torch.full((1,), n, device=dev))
    return dict(n=n, estimate_strided_ms=new_ms, estimate_gather_ms=old_ms, speedup=old_ms / new_ms,
                slash_sets_identical_heads=sum(same_sets), vertical_identical=bool(torch.equal(vi_new, vi_old)),
                diag_sum_max_abs_diff=float((a - b).abs().max()), diag_sum_max=float(b.abs().max()))


def dense_window_row(n: int, dev) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = torch.empty_like(q)
    row = dict(n=n, case="a_shape local=N (dense heads)")
    for pack in (1, 2):
        row[f"pack{pack}_ms"] = time_reps(
            lambda: ops.a_shape_attention(q, k, v, 0, n, validate=False, out=out, gqa_pack=pack), 5).median_ms
    k_expanded, v_expanded = k.repeat_interleave(4, 1), v.repeat_interleave(4, 1)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        row["cudnn_ms"] = time_reps(lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k_expanded, v_expanded, is_causal=True), 5).median_ms
    return row


def main():
    dev = torch.device("cuda")
    results = []
    for make, lengths in ((estimation_row, (32768, 131072, 1048576)), (dense_window_row, (32768, 131072))):
        for n in lengths:
            results.append(make(n, dev))
            print(json.dumps(results[-1]), flush=True)
            torch.cuda.empty_cache()
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "estpack.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
