"""The plan sparse_attention runs: head groups, indexes, the grid, tile counts and the dense decision."""
import torch

import minference as mi
from minference import ops
from minference.index.tiles import causal_tiles, executed_tiles
from minference.planning import SHORT_PROMPT, TOO_DENSE, plan

PATTERNS = [mi.VerticalSlash(8, 8), mi.BlockSparse(top_k=2), mi.AShape(4, 16), mi.Dense()]


def qkv(n=256, heads=4, kv_heads=2, head_dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, n, head_dim, generator=gen), torch.randn(1, kv_heads, n, head_dim, generator=gen),
            torch.randn(1, kv_heads, n, head_dim, generator=gen))


def test_the_plan_partitions_the_heads_by_launch():
    q, k, _ = qkv()
    layer = plan(q, k, PATTERNS)
    assert layer.vertical_slash_heads == [0] and layer.block_sparse_heads == {64: [1]}
    assert layer.window_heads == [2, 3] and layer.sdpa_heads == [], "off the GPU dense heads join the window launch"
    assert layer.dense is None and layer.tiles is None, "nothing counted without a threshold"
    assert layer.vertical_slash_index.tile == layer.grid == 64 and set(layer.block_indexes) == {64}


def test_running_the_plan_is_sparse_attention():
    q, k, v = qkv()
    assert torch.equal(ops.run(plan(q, k, PATTERNS), q, k, v), mi.sparse_attention(q, k, v, PATTERNS))


def test_the_dense_decisions_and_their_counts_are_in_the_plan():
    q, k, _ = qkv()
    assert plan(q, k, PATTERNS, dense_below=512).dense == SHORT_PROMPT
    counted = plan(q, k, PATTERNS, dense_above=0.0)
    assert counted.dense == TOO_DENSE and counted.tiles.causal == causal_tiles(256) * 4
    expected = executed_tiles(256, PATTERNS, counted.vertical_slash_index, counted.block_indexes)
    assert counted.tiles.executed(counted.grid) == float(expected)
    assert plan(q, k, PATTERNS, dense_above=10.0).dense is None
    assert plan(q, k, PATTERNS, dense_above=0.0, return_lse=True).dense is None, "SDPA cannot stand in with lse"
