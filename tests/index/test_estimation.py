"""Online estimation finds planted structure, always keeps sinks and the local window, and respects budgets."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minference as mi
from minference.patterns import block_sparse, vertical_slash

pytestmark = pytest.mark.kernels


def planted_inputs(n=512, d=64, column=300, offset=200, seed=0):
    """Keys that every late query loves at ``column``; queries that match the key ``offset`` positions back."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, n, d, generator=gen) * 0.1
    k = torch.randn(1, 1, n, d, generator=gen) * 0.1
    direction = torch.randn(d, generator=gen)
    k[0, 0, column] = 4 * direction
    q[0, 0, :] += direction  # head 0: a vertical line at `column`
    shifted = torch.randn(n, d, generator=gen)
    q[0, 1, offset:] = 6 * shifted[: n - offset]
    k[0, 0, : n - offset] += shifted[: n - offset]  # head 1: query i matches key i - offset (a slash)
    return q, k


def test_vertical_slash_estimate_finds_a_planted_column_and_a_planted_diagonal():
    q, k = planted_inputs()
    pattern = mi.VerticalSlash(vertical=35, slash=105, sink=30, local=100)
    vertical, slash = vertical_slash.estimate(q, k, [pattern, pattern], [0, 1])
    assert 300 in vertical[0, 0].tolist()
    assert 200 in slash[0, 1].tolist()


def test_vertical_slash_estimate_always_keeps_sinks_and_local_window_within_budget():
    q, k = planted_inputs()
    patterns = [mi.VerticalSlash(vertical=40, slash=120, sink=30, local=100),
                mi.VerticalSlash(vertical=10, slash=5, sink=4, local=2)]
    vertical, slash = vertical_slash.estimate(q, k, patterns, [0, 1])
    assert vertical.shape == (1, 2, 40) and slash.shape == (1, 2, 120) and vertical.dtype == torch.int32
    assert set(range(30)) <= set(vertical[0, 0].tolist()) and set(range(100)) <= set(slash[0, 0].tolist())
    assert set(range(4)) <= set(vertical[0, 1].tolist()) and {0, 1} <= set(slash[0, 1].tolist())
    assert len(set(vertical[0, 1].tolist())) == 10 and len(set(slash[0, 1].tolist())) == 5


def test_vertical_slash_estimate_stays_inside_each_sequence():
    q, k = planted_inputs()
    q, k = q.expand(2, -1, -1, -1).contiguous(), k.expand(2, -1, -1, -1).contiguous()
    pattern = mi.VerticalSlash(vertical=200, slash=300, sink=30, local=100)
    vertical, slash = vertical_slash.estimate(q, k, [pattern], [0], seqlens=torch.tensor([512, 90]))
    assert vertical[1].max() < 90 and slash[1].max() < 90
    assert vertical[0].max() >= 90


def test_vertical_slash_estimate_uses_the_last_queries_of_short_sequences():
    q, k = planted_inputs(n=20, column=5, offset=3)
    vertical, slash = vertical_slash.estimate(q, k, [mi.VerticalSlash(vertical=50, slash=50)], [1])
    assert vertical.shape == (1, 1, 20) and set(vertical[0, 0].tolist()) == set(range(20))


def test_block_sparse_estimate_finds_a_planted_block_and_stays_causal():
    gen = torch.Generator().manual_seed(0)
    n, d = 640, 64
    q = torch.randn(1, 1, n, d, generator=gen) * 0.1
    k = torch.randn(1, 1, n, d, generator=gen) * 0.1
    direction = torch.randn(d, generator=gen)
    k[0, 0, 192:256] += 3 * direction  # key block 3
    q[0, 0, 256:] += direction
    block_idx = block_sparse.estimate(q, k, [mi.BlockSparse(top_k=2)], [0])
    assert block_idx.shape == (1, 1, 10, 2)
    for m in range(4, 10):
        assert 3 in block_idx[0, 0, m].tolist()
    rows = torch.arange(10).view(10, 1)
    assert torch.all((block_idx[0, 0] <= rows) | (block_idx[0, 0] == -1))
    assert block_idx[0, 0, 0].tolist() == [0, -1], "query block 0 has a single causal candidate"


@pytest.mark.parametrize("n, block_size", [(256, 64), (200, 64), (130, 32), (64, 128)])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_block_pooling_is_the_mean_of_each_blocks_valid_tokens(n, block_size, padded, transposed):
    gen = torch.Generator().manual_seed(n + block_size)
    x = torch.randn(2, n, 3, 16, generator=gen).to(torch.float16)
    x = x.transpose(1, 2) if transposed else x.transpose(1, 2).contiguous()
    lengths = torch.tensor([n, max(1, n - 70)]) if padded else None
    pooled = block_sparse._pool(x, block_size, lengths)
    blocks = -(-n // block_size)
    expected = torch.zeros(2, 3, blocks, 16, dtype=torch.float64)
    for b in range(2):
        length = n if lengths is None else int(lengths[b])
        for r in range(blocks):
            tokens = x[b, :, r * block_size : min((r + 1) * block_size, length)].double()
            if tokens.shape[1]:
                expected[b, :, r] = tokens.mean(dim=1)
    torch.testing.assert_close(pooled.double(), expected, rtol=1e-6, atol=1e-6)


def test_block_sparse_estimate_of_any_head_list_equals_one_head_at_a_time():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 8, 320, 32, generator=gen)
    k = torch.randn(1, 2, 320, 32, generator=gen)
    patterns = [mi.BlockSparse(top_k=3), mi.BlockSparse(top_k=2), mi.BlockSparse(top_k=4)]
    heads = [6, 1, 2]  # not consecutive, two KV groups
    together = block_sparse.estimate(q, k, patterns, heads)
    for i, (head, pattern) in enumerate(zip(heads, patterns)):
        alone = block_sparse.estimate(q, k, [pattern], [head])
        assert torch.equal(together[:, i : i + 1, :, : alone.shape[-1]], alone)
        assert torch.all(together[:, i : i + 1, :, alone.shape[-1] :] == -1)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 6), st.integers(1, 40), st.booleans(), st.data())
def test_diagonal_sums_equal_their_definition(batch, heads, rows, n, padded, data):
    """The strided-view diagonal sums equal the sum along each diagonal written out term by term (float64)."""
    lengths = [data.draw(st.integers(1, n)) if padded else n for _ in range(batch)]
    probs = torch.rand(batch, heads, rows, n, dtype=torch.float64)
    expected = torch.zeros(batch, heads, n, dtype=torch.float64)
    for b, length in enumerate(lengths):
        for r in range(rows):
            for o in range(n):
                column = length - rows + r - o
                if column >= 0:
                    expected[b, :, o] += probs[b, :, r, column]
    got = vertical_slash.diagonal_sums(probs, torch.tensor(lengths) if padded else None)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
