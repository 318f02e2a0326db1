"""FlexAttention baselines run on exactly our kernels' masks: mask_mod and block lists checked against each
pattern's definition on the CPU, small N."""

from __future__ import annotations

import pytest
import torch

flex_attention = pytest.importorskip("torch.nn.attention.flex_attention")

from minference.bench.flex import (  # noqa: E402
    FLEX_BLOCK,
    a_shape_block_mask,
    block_sparse_block_mask,
    vertical_slash_block_mask,
)
from minference.bench.index_sets import block_sparse_indices, vertical_slash_indices  # noqa: E402
from minference.index import build_block_sparse_index, build_vertical_slash_index  # noqa: E402
from minference.ops import a_shape_mask  # noqa: E402
from minference.patterns import BlockSparse, VerticalSlash  # noqa: E402
from minference.patterns import block_sparse as block_sparse_pattern  # noqa: E402
from minference.patterns import vertical_slash as vertical_slash_pattern  # noqa: E402

N = 600  # not a multiple of 64 or 128


def _check(block_mask, reference: torch.Tensor, exact_full: bool = False) -> None:
    """``mask_mod`` evaluated densely is ``reference``; the block lists hold exactly its non-empty 128-blocks, and
    every 'full' block keeps all its elements (``exact_full``: full = every such block below the diagonal)."""
    batch, heads = reference.shape[:2]
    got = flex_attention.create_mask(block_mask.mask_mod, batch, heads, N, N, device="cpu")
    assert torch.equal(got, reference), f"mask_mod differs in {(got != reference).sum().item()} places"
    rows = -(-N // FLEX_BLOCK)
    padded = torch.zeros(batch, heads, rows * FLEX_BLOCK, rows * FLEX_BLOCK, dtype=torch.bool)
    padded[:, :, :N, :N] = reference
    tiles = padded.view(batch, heads, rows, FLEX_BLOCK, rows, FLEX_BLOCK)
    any_kept = tiles.any(dim=5).any(dim=3)
    listed = block_mask.to_dense().bool()
    assert torch.equal(listed.expand_as(any_kept), any_kept), (
        "block lists differ from the mask's non-empty blocks"
    )
    full = torch.zeros_like(any_kept)
    count, index = block_mask.full_kv_num_blocks, block_mask.full_kv_indices
    for b in range(count.shape[0]):
        for h in range(count.shape[1]):
            for m in range(rows):
                full[b, h, m, index[b, h, m, : count[b, h, m]].long()] = True
    padded[:, :, N:, :] = True  # rows past N do not exist, so they cannot make a block partial
    all_kept = tiles.all(dim=5).all(dim=3)
    assert bool((all_kept | ~full.expand_as(all_kept)).all()), "a 'full' block has masked elements"
    if exact_full:
        below = torch.ones(rows, rows, dtype=torch.bool).tril(-1)
        missing = (all_kept & below & ~full).nonzero()
        assert missing.numel() == 0, f"blocks (b, h, m, k) kept whole but not listed full: {missing[:5].tolist()}"


def _mask_mod_traces(block_mask, reference: torch.Tensor) -> None:
    """FlexAttention compiles ``mask_mod``: it must trace into one graph (no host reads, no Python branches on
    tensors), and the traced function must still be the mask."""
    batch, heads, n, _ = reference.shape
    traced = torch.compile(block_mask.mask_mod, backend="eager", fullgraph=True)
    got = traced(torch.arange(batch).view(-1, 1, 1, 1), torch.arange(heads).view(1, -1, 1, 1),
                 torch.arange(n).view(1, 1, -1, 1), torch.arange(n).view(1, 1, 1, -1))
    assert torch.equal(got, reference), f"traced mask_mod differs in {(got != reference).sum().item()} places"


@pytest.mark.parametrize("tile", [64, 128])
def test_vertical_slash_block_mask_is_our_mask(tile):
    vertical_idx, slash_idx = vertical_slash_indices(
        "random", N, 1, 2, VerticalSlash(20, 60, sink=4, local=8)
    )
    index = build_vertical_slash_index(N, vertical_idx, slash_idx, tile)
    block_mask, density = vertical_slash_block_mask(index, N)
    definition = vertical_slash_pattern.mask(N, vertical_idx, slash_idx, tile=tile)
    # 20 columns never fill a 128-key block, so every block kept whole is one the diagonals cover: listed full
    _check(block_mask, definition, exact_full=True)
    _mask_mod_traces(block_mask, definition)
    assert 0 < density <= 1


@pytest.mark.parametrize("block_size, top_k", [(64, 3), (32, 12)])
def test_block_sparse_block_mask_is_our_mask(block_size, top_k):
    block_idx = block_sparse_indices("random", N, 1, 2, BlockSparse(top_k=top_k, block_size=block_size))
    block_mask, _ = block_sparse_block_mask(build_block_sparse_index(block_idx), N, block_size)
    definition = block_sparse_pattern.mask(N, block_idx, block_size)
    _check(block_mask, definition, exact_full=True)
    _mask_mod_traces(block_mask, definition)


def test_a_shape_block_mask_is_our_mask():
    block_mask, density = a_shape_block_mask(N, 16, 200, "cpu")
    _check(block_mask, a_shape_mask(N, 16, 200))
    _mask_mod_traces(block_mask, a_shape_mask(N, 16, 200))
    assert density < 1
