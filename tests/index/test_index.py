"""Index builders, checked bit for bit against each pattern's mask (its definition) on the CPU."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minference import ops
from minference.index import (
    a_shape_index_mask_rows,
    block_sparse_index_mask_rows,
    block_sparse_keep,
    block_sparse_keeps,
    build_block_sparse_index,
    build_vertical_slash_index,
    vertical_slash_index_mask_rows,
    vertical_slash_keep,
    vertical_slash_keeps,
    vertical_slash_kept_tiles,
)
from minference.patterns import block_sparse as block_sparse_pattern
from minference.patterns import vertical_slash as vertical_slash_pattern
from minference.patterns.vertical_slash import TILES

pytestmark = pytest.mark.kernels

lengths = st.one_of(st.sampled_from([1, 63, 64, 65, 127, 128, 129, 255, 257]), st.integers(1, 330))
tiles = st.sampled_from(TILES)


def assert_same_mask(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    differ = (got != want).nonzero()
    assert differ.numel() == 0, f"{what}: {len(differ)} entries differ, first (b, h, i, j) " \
        f"{differ[:5].tolist()}, kept there: {got[tuple(differ[:5].T)].tolist()}"


def positions(n: int):
    """Query and key positions ``(1, 1, n, 1)`` and ``(1, 1, 1, n)``, for evaluating a predicate densely."""
    return torch.arange(n).view(1, 1, -1, 1), torch.arange(n).view(1, 1, 1, -1)


def batch_heads(batch: int, heads: int):
    return torch.arange(batch).view(-1, 1, 1, 1), torch.arange(heads).view(1, -1, 1, 1)


def kernel_walk(index, n: int) -> torch.Tensor:
    """The mask the vertical-slash kernel's loops produce, slot by slot: per query block ``m`` the first
    ``block_count[m]`` block-diagonal offsets, then the first ``column_count[m]`` columns."""
    batch, heads, blocks = index.block_count.shape
    tile = index.tile
    keep = torch.zeros(batch, heads, n, n, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            for m in range(blocks):
                rows = slice(m * tile, min(n, (m + 1) * tile))
                for slot in range(index.block_count[b, h, m]):
                    key_block = m - int(index.block_offsets[b, h, slot])
                    keep[b, h, rows, key_block * tile : min(n, (key_block + 1) * tile)] = True
                for slot in range(index.column_count[b, h, m]):
                    keep[b, h, rows, int(index.columns[b, h, slot])] = True
    return keep & torch.ones(n, n, dtype=torch.bool).tril()


def tiles_of(mask: torch.Tensor, tile: int, how: str) -> torch.Tensor:
    """``(B, H, R, R)``: tiles of a ``(B, H, n, n)`` mask with any (or, counting entries past n as kept, all)
    entries kept."""
    batch, heads, n, _ = mask.shape
    rows = -(-n // tile)
    padded = torch.full((batch, heads, rows * tile, rows * tile), how == "all", dtype=torch.bool)
    padded[:, :, :n, :n] = mask
    grouped = padded.view(batch, heads, rows, tile, rows, tile)
    return grouped.all(dim=5).all(dim=3) if how == "all" else grouped.any(dim=5).any(dim=3)


@st.composite
def vertical_slash_choices(draw):
    n = draw(lengths)
    batch, heads = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    nv, ns = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    vertical = torch.randint(0, n, (batch, heads, nv), generator=gen)
    slash = torch.randint(0, n, (batch, heads, ns), generator=gen)
    return n, vertical.to(draw(st.sampled_from([torch.int32, torch.int64]))), slash


@settings(max_examples=80, deadline=None)
@given(vertical_slash_choices(), tiles)
def test_vertical_slash_index_walks_exactly_the_pattern_mask(choice, tile):
    n, vertical, slash = choice
    index = build_vertical_slash_index(n, vertical, slash, tile)
    assert index.tile == tile
    walked = vertical_slash_index_mask_rows(index, n, 0, n)
    assert_same_mask(walked, vertical_slash_pattern.mask(n, vertical, slash, tile=tile), "torch backend rows")


@settings(max_examples=60, deadline=None)
@given(vertical_slash_choices(), tiles)
def test_vertical_slash_predicate_evaluated_densely_is_the_definition(choice, tile):
    """The Flex ``mask_mod`` evaluates the predicate one element at a time: all at once, it is the definition."""
    n, vertical, slash = choice
    keep = vertical_slash_keep(build_vertical_slash_index(n, vertical, slash, tile), n)
    i, j = positions(n)
    got = vertical_slash_keeps(keep, *batch_heads(*vertical.shape[:2]), i, j)
    assert_same_mask(got, vertical_slash_pattern.mask(n, vertical, slash, tile=tile), "predicate")


@settings(max_examples=40, deadline=None)
@given(vertical_slash_choices(), tiles)
def test_vertical_slash_predicate_is_the_kernel_walk(choice, tile):
    """The predicate reads which offsets are present and which keys are columns; the kernel reads counts and
    slots. The builder makes them agree; this pins it."""
    n, vertical, slash = choice
    index = build_vertical_slash_index(n, vertical, slash, tile)
    i, j = positions(n)
    got = vertical_slash_keeps(vertical_slash_keep(index, n), *batch_heads(*vertical.shape[:2]), i, j)
    assert_same_mask(got, kernel_walk(index, n), "predicate vs the kernel's walk")


@settings(max_examples=60, deadline=None)
@given(vertical_slash_choices(), tiles)
def test_vertical_slash_tiles_are_the_tiles_the_definition_keeps(choice, tile):
    """The Flex block lists come from these tables: walked or gathered = every tile holding a kept entry, and a
    walked tile below the diagonal keeps all of its entries."""
    n, vertical, slash = choice
    keep = vertical_slash_keep(build_vertical_slash_index(n, vertical, slash, tile), n)
    walked, gathered = vertical_slash_kept_tiles(keep, torch.arange(-(-n // tile)))
    definition = vertical_slash_pattern.mask(n, vertical, slash, tile=tile)
    assert torch.equal(walked | gathered, tiles_of(definition, tile, "any")), "tiles holding a kept entry"
    below = torch.ones(walked.shape[-1], walked.shape[-1], dtype=torch.bool).tril(-1)
    assert not (walked & below & ~tiles_of(definition, tile, "all")).any(), "a walked tile drops an entry"
    assert walked.diagonal(dim1=2, dim2=3).all(), "every diagonal tile is walked"
    assert not (gathered & ~below).any(), "columns are gathered only left of the diagonal tile"


@settings(max_examples=60, deadline=None)
@given(vertical_slash_choices())
def test_the_128_token_grid_keeps_every_entry_of_the_64_token_grid(choice):
    """The 128-token grid only widens diagonal bands (a 64-grid tile-diagonal d lies in 128-grid tile-diagonals
    floor(d / 2) and ceil(d / 2), both crossed), so switching grids never drops an entry."""
    n, vertical, slash = choice
    narrow = ops.vertical_slash_mask(n, vertical, slash, tile=64)
    wide = ops.vertical_slash_mask(n, vertical, slash, tile=128)
    assert not (narrow & ~wide).any()


def test_the_128_token_grid_keeps_the_whole_128_token_diagonal_tile():
    """Row 100 keeps key 10 on the 128-token grid (same 128-token block), not on the 64-token one."""
    nothing = torch.zeros(1, 1, 0, dtype=torch.long)
    diagonal = torch.zeros(1, 1, 1, dtype=torch.long)
    narrow = ops.vertical_slash_mask(200, nothing, diagonal, tile=64)[0, 0]
    wide = ops.vertical_slash_mask(200, nothing, diagonal, tile=128)[0, 0]
    assert wide[100, 10] and not narrow[100, 10]
    assert wide.sum() == 128 * 129 // 2 + 72 * 73 // 2 and narrow.sum() == 3 * 64 * 65 // 2 + 8 * 9 // 2


@settings(max_examples=40, deadline=None)
@given(vertical_slash_choices(), st.integers(1, 100), tiles)
def test_vertical_slash_index_rows_in_chunks_equal_all_rows(choice, chunk, tile):
    n, vertical, slash = choice
    index = build_vertical_slash_index(n, vertical, slash, tile)
    whole = vertical_slash_index_mask_rows(index, n, 0, n)
    parts = [vertical_slash_index_mask_rows(index, n, s, min(n, s + chunk)) for s in range(0, n, chunk)]
    assert torch.equal(torch.cat(parts, dim=2), whole)


@settings(max_examples=60, deadline=None)
@given(vertical_slash_choices())
def test_vertical_slash_mask_holds_every_choice_the_diagonal_and_nothing_above_it(choice):
    n, vertical, slash = choice
    keep = ops.vertical_slash_mask(n, vertical, slash)
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    assert not (keep & (j > i)).any(), "nothing above the diagonal"
    assert keep.diagonal(dim1=2, dim2=3).all(), "every row keeps its diagonal"
    for b in range(vertical.shape[0]):
        for h in range(vertical.shape[1]):
            chosen_column = torch.isin(j, vertical[b, h].long()) & (j <= i)
            chosen_diagonal = torch.isin(i - j, slash[b, h].long()) & (j <= i)
            assert keep[b, h][chosen_column].all(), "every chosen column is kept"
            assert keep[b, h][chosen_diagonal].all(), "every chosen diagonal is kept"


@settings(max_examples=60, deadline=None)
@given(vertical_slash_choices(), tiles)
def test_vertical_slash_index_is_sorted_unique_and_causal(choice, tile):
    n, vertical, slash = choice
    index = build_vertical_slash_index(n, vertical, slash, tile)
    blocks = -(-n // tile)
    for b in range(vertical.shape[0]):
        for h in range(vertical.shape[1]):
            offsets = index.block_offsets[b, h]
            present = offsets[offsets < blocks]
            assert present[0] == 0 and torch.all(present[1:] > present[:-1]), "sorted, unique, with p = 0"
            for m in range(blocks):
                assert index.block_count[b, h, m] == int((present <= m).sum()), "walks only offsets p <= m"
            columns = index.columns[b, h]
            real = columns[columns < n]
            assert torch.equal(real, torch.unique(vertical[b, h].int())), "columns sorted and unique"
            starts = torch.arange(blocks) * tile
            assert torch.equal(index.column_count[b, h].long(), (real.view(1, -1) < starts.view(-1, 1)).sum(1))


@st.composite
def block_choices(draw):
    block_size = draw(st.sampled_from([16, 32, 64]))
    n = draw(lengths)
    blocks = -(-n // block_size)
    batch, heads, slots = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    block_idx = torch.randint(-1, blocks, (batch, heads, blocks, slots), generator=gen)
    return n, block_size, block_idx


@settings(max_examples=60, deadline=None)
@given(block_choices())
def test_block_sparse_index_walks_exactly_the_pattern_mask(choice):
    n, block_size, block_idx = choice
    index = build_block_sparse_index(block_idx)
    walked = block_sparse_index_mask_rows(index, n, block_size, 0, n)
    assert_same_mask(walked, block_sparse_pattern.mask(n, block_idx, block_size), "torch backend rows")


@settings(max_examples=60, deadline=None)
@given(block_choices())
def test_block_sparse_predicate_evaluated_densely_is_the_definition(choice):
    n, block_size, block_idx = choice
    keep = block_sparse_keep(build_block_sparse_index(block_idx), block_size)
    i, j = positions(n)
    got = block_sparse_keeps(keep, *batch_heads(*block_idx.shape[:2]), i, j)
    definition = block_sparse_pattern.mask(n, block_idx, block_size)
    assert_same_mask(got, definition, "predicate")
    assert torch.equal(keep.walked, tiles_of(definition, block_size, "any")), "walked = the tiles holding entries"


@settings(max_examples=40, deadline=None)
@given(block_choices(), st.integers(1, 100))
def test_block_sparse_index_rows_in_chunks_equal_all_rows(choice, chunk):
    n, block_size, block_idx = choice
    index = build_block_sparse_index(block_idx)
    whole = block_sparse_index_mask_rows(index, n, block_size, 0, n)
    parts = [block_sparse_index_mask_rows(index, n, block_size, s, min(n, s + chunk)) for s in range(0, n, chunk)]
    assert torch.equal(torch.cat(parts, dim=2), whole)


@settings(max_examples=30, deadline=None)
@given(vertical_slash_choices(), block_choices(), st.data())
def test_the_ops_masks_are_the_definitions_with_padding(vs_choice, bs_choice, data):
    """The ops' masks are read off the built index (the backends' predicate); the definitions are computed from
    the raw choices. They must agree, padding included."""
    n, vertical, slash = vs_choice
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, n), min_size=vertical.shape[0],
                                              max_size=vertical.shape[0])))
    tile = data.draw(tiles)
    assert_same_mask(ops.vertical_slash_mask(n, vertical, slash, seqlens=lengths, tile=tile),
                     vertical_slash_pattern.mask(n, vertical, slash, seqlens=lengths, tile=tile), "ops mask")
    n, block_size, block_idx = bs_choice
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, n), min_size=block_idx.shape[0],
                                              max_size=block_idx.shape[0])))
    assert_same_mask(ops.block_sparse_mask(n, block_idx, block_size, seqlens=lengths),
                     block_sparse_pattern.mask(n, block_idx, block_size, seqlens=lengths), "ops mask")


@settings(max_examples=60, deadline=None)
@given(block_choices())
def test_block_sparse_index_is_sorted_unique_causal_and_keeps_the_diagonal(choice):
    n, block_size, block_idx = choice
    index = build_block_sparse_index(block_idx)
    batch, heads, blocks, _ = block_idx.shape
    for b in range(batch):
        for h in range(heads):
            for m in range(blocks):
                walked = index.blocks[b, h, m, : index.block_count[b, h, m]]
                listed = block_idx[b, h, m]
                want = torch.unique(torch.cat([listed[(listed >= 0) & (listed <= m)], torch.tensor([m])]))
                assert torch.equal(walked.long(), want), f"query block {m}"


@settings(max_examples=60, deadline=None)
@given(block_choices())
def test_block_sparse_mask_holds_every_listed_block_and_nothing_above_the_diagonal(choice):
    n, block_size, block_idx = choice
    keep = ops.block_sparse_mask(n, block_idx, block_size)
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    assert not (keep & (j > i)).any()
    assert keep.diagonal(dim1=2, dim2=3).all()
    listed = torch.zeros(*block_idx.shape[:3], block_idx.shape[2] + 1, dtype=torch.bool)
    listed.scatter_(3, torch.where(block_idx < 0, block_idx.shape[2], block_idx), True)
    pair_listed = listed[:, :, i.view(-1) // block_size][..., j.view(-1) // block_size]
    assert keep[pair_listed & (j <= i)].all()


@settings(max_examples=60, deadline=None)
@given(lengths, st.lists(st.tuples(st.integers(0, 200), st.integers(1, 400)), min_size=1, max_size=4))
def test_a_shape_index_rows_equal_the_pattern_mask(n, budgets):
    sinks = [s for s, _ in budgets]
    windows = [w for _, w in budgets]
    rows = a_shape_index_mask_rows(torch.tensor(sinks), torch.tensor(windows), n, 0, n)
    keep = ops.a_shape_mask(n, sinks, windows)
    assert torch.equal(rows, keep)
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    for h, (sink, window) in enumerate(budgets):
        meaning = (j <= i) & ((j < sink) | (i - j < window))
        assert torch.equal(keep[0, h], meaning)
