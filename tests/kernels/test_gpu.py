"""GPU tier: long contexts in bf16, determinism, int64 offsets, no host synchronisation on the hot path."""
import pytest
import torch
import torch.nn.functional as F

import minference as mi
from helpers import random_qkv
from minference import ops, reference
from minference.index import build_vertical_slash_index, vertical_slash_index_mask_rows
from minference.patterns import vertical_slash

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def check_rows(out, q, k, v, mask_rows, rows, what):
    """Rows ``[start, end)`` of a long-context output against the float32 reference over the same mask, with the
    tolerance from PyTorch's own bf16 error on those rows."""
    start, end = rows
    truth, _ = reference.attention(q.float(), k.float(), v.float(), mask=mask_rows, rows=rows)
    low, _ = reference.attention(q, k, v, mask=mask_rows, rows=rows, upcast=False)
    torch_err = (low.float() - truth).abs().max().item()
    floor = 2 * (truth.to(q.dtype).float() - truth).abs().max().item()
    err = (out[:, :, start:end].float() - truth).abs().max().item()
    assert err <= 2 * torch_err + floor, f"{what} rows {rows}: error {err:.3g} > 2 x {torch_err:.3g} + {floor:.3g}"


@pytest.mark.parametrize("n", [32768, 131072])
def test_long_context_vertical_slash_in_bf16_matches_the_reference(n):
    q, k, v = random_qkv(1, 4, 2, n, 128, torch.bfloat16, seed=n)
    pattern = mi.VerticalSlash(vertical=1000, slash=6096)
    vertical, slash = vertical_slash.estimate(q, k, [pattern] * 4, [0, 1, 2, 3])
    out = ops.vertical_slash_attention(q, k, v, vertical, slash, out=torch.full_like(q, float("nan")))
    assert not out.isnan().any()
    tile = ops.default_vertical_slash_tile(q)
    if torch.cuda.get_device_capability()[0] == 9:
        assert tile == 128, "Hopper runs bf16 vertical-slash heads on the 128-token grid"
    index = build_vertical_slash_index(n, vertical, slash, tile)
    rows = lambda a, b: vertical_slash_index_mask_rows(index, n, a, b)  # noqa: E731
    for span in [(0, 512), (n // 2, n // 2 + 512), (n - 512, n)]:
        check_rows(out, q, k, v, rows, span, f"vertical-slash N={n}")


@pytest.mark.parametrize("n", [32768, 131072])
def test_long_context_a_shape_and_block_sparse_in_bf16_match_the_reference(n):
    q, k, v = random_qkv(1, 4, 1, n, 128, torch.bfloat16, seed=n + 1)
    out = ops.a_shape_attention(q, k, v, 128, 3968, out=torch.full_like(q, float("nan")))
    a_rows = lambda a, b: mi.index.a_shape_index_mask_rows(  # noqa: E731
        torch.full((4,), 128, device="cuda"), torch.full((4,), 3968, device="cuda"), n, a, b)
    check_rows(out, q, k, v, a_rows, (n - 512, n), f"a-shape N={n}")
    blocks = n // 64
    block_idx = torch.randint(-1, blocks, (1, 4, blocks, 32), device="cuda")
    out = ops.block_sparse_attention(q, k, v, block_idx, out=torch.full_like(q, float("nan")))
    index = mi.index.build_block_sparse_index(block_idx)
    b_rows = lambda a, b: mi.index.block_sparse_index_mask_rows(index, n, 64, a, b)  # noqa: E731
    check_rows(out, q, k, v, b_rows, (n - 512, n), f"block-sparse N={n}")


def test_dense_heads_of_a_mixed_list_run_through_sdpa():
    """Without lse, Dense heads are SDPA's own output (one call: every K/V head serves two of them); with lse they
    run through the window kernel, within twice SDPA's own bf16 error of the float32 truth."""
    q, k, v = random_qkv(1, 8, 2, 4096, 128, torch.bfloat16, seed=8)
    patterns = [mi.VerticalSlash(500, 1000), mi.Dense(), mi.AShape(64, 1024), mi.Dense()] * 2
    dense = [1, 3, 5, 7]
    sdpa = F.scaled_dot_product_attention(q[:, dense], k, v, is_causal=True, enable_gqa=True)
    assert torch.equal(mi.sparse_attention(q, k, v, patterns)[:, dense], sdpa)
    kernel, _ = mi.sparse_attention(q, k, v, patterns, return_lse=True)
    truth = F.scaled_dot_product_attention(q[:, dense].float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    sdpa_err = (sdpa.float() - truth).abs().max().item()
    floor = 2 * (truth.to(q.dtype).float() - truth).abs().max().item()
    assert (kernel[:, dense].float() - truth).abs().max().item() <= 2 * sdpa_err + floor


def test_repeated_runs_are_bit_identical():
    q, k, v = random_qkv(2, 8, 2, 8192, 128, torch.bfloat16, seed=5)
    patterns = [mi.VerticalSlash(500, 1000), mi.BlockSparse(20), mi.AShape(64, 1024), mi.Dense()] * 2
    first, first_lse = mi.sparse_attention(q, k, v, patterns, return_lse=True)
    for _ in range(3):
        again, again_lse = mi.sparse_attention(q, k, v, patterns, return_lse=True)
        assert torch.equal(first, again) and torch.equal(first_lse, again_lse)


def test_hot_path_does_not_synchronise_with_the_host():
    q, k, v = random_qkv(1, 8, 2, 16384, 128, torch.bfloat16, seed=6)
    patterns = [mi.VerticalSlash(500, 1000), mi.BlockSparse(20), mi.AShape(64, 1024), mi.Dense()] * 2
    mi.sparse_attention(q, k, v, patterns, validate=False)  # compile first: JIT may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        mi.sparse_attention(q, k, v, patterns, validate=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_offsets_past_int32_are_correct():
    """q holds 2^32 elements (1M tokens x 32 heads x 128): int32 offsets would wrap for the last heads."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip(f"needs 24 GiB free, has {free / 2**30:.1f}")
    n, hq, hkv, d = 1 << 20, 32, 8, 128
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    out = ops.a_shape_attention(q, k, v, 64, 128, out=torch.full_like(q, float("nan")))
    mask = lambda a, b: mi.index.a_shape_index_mask_rows(  # noqa: E731
        torch.full((2,), 64, device="cuda"), torch.full((2,), 128, device="cuda"), n, a, b)
    check_rows(out[:, -2:], q[:, -2:], k[:, -1:], v[:, -1:], mask, (n - 128, n), "a-shape, last heads of 1M")
