"""``sparse_attention(dense_above=...)``: exact dense attention when the estimated indices would be too dense to pay,
the patterns' own mask otherwise, decided on the executed-tile count the kernels would walk."""
import pytest
import torch

import minference as mi
from helpers import assert_matches_reference, poisoned_like, random_qkv
from minference import ops
from minference.kernels import launch
from minference.index import build_block_sparse_index, build_vertical_slash_index
from minference.index.tiles import a_shape_tiles, causal_tiles, executed_tiles, vertical_slash_tiles
from minference.patterns import block_sparse as block_sparse_pattern
from minference.patterns import vertical_slash as vertical_slash_pattern

N = 300
ASHAPE = mi.AShape(sink=64, local=64)


def inputs(batch=1, hq=4, hkv=2, n=N, seed=0):
    return random_qkv(batch, hq, hkv, n, 32, torch.float32, seed, device="cpu")


def dense(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def a_shape_density(n=N):
    return a_shape_tiles(n, ASHAPE.sink, ASHAPE.local) / causal_tiles(n)


def test_a_layer_above_the_threshold_runs_exact_dense_attention():
    q, k, v = inputs()
    out = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_above=a_shape_density() - 0.01)
    torch.testing.assert_close(out, dense(q, k, v))


def test_a_layer_at_or_below_the_threshold_keeps_its_mask():
    q, k, v = inputs()
    sparse = ops.sparse_attention(q, k, v, ASHAPE, backend="torch")
    for threshold in (a_shape_density(), 1.0, 5.0):
        out = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_above=threshold)
        assert torch.equal(out, sparse), threshold
    assert (sparse - dense(q, k, v)).abs().max() > 1e-3, "the A-shape mask must differ from dense for this test"


def test_zero_threshold_makes_every_sparse_call_dense_and_writes_into_out():
    q, k, v = inputs(batch=2)
    patterns = [mi.VerticalSlash(8, 8, sink=4, local=16), ASHAPE, mi.BlockSparse(top_k=1), mi.Dense()]
    out = poisoned_like(q)
    result = ops.sparse_attention(q, k, v, patterns, backend="torch", dense_above=0.0, out=out)
    assert result is out
    torch.testing.assert_close(out, dense(q, k, v))


def test_fallback_is_ignored_where_sdpa_cannot_stand_in():
    """With lse requested or padded rows, the sparse kernels run even above the threshold (their result is exact
    for the mask; SDPA gives neither lse nor per-sequence lengths)."""
    q, k, v = inputs()
    out, lse = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_above=0.0, return_lse=True)
    assert_matches_reference(out, q, k, v, ops.a_shape_mask(N, [64] * 4, [64] * 4), lse=lse)
    seqlens = torch.tensor([N - 20], dtype=torch.int32)
    padded = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_above=0.0, seqlens=seqlens)
    reference = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", seqlens=seqlens)
    assert torch.equal(padded[:, :, : N - 20], reference[:, :, : N - 20])


def test_executed_tiles_count_what_each_launch_walks():
    q, k, v = inputs(batch=2)
    vs, bs = mi.VerticalSlash(8, 40, sink=4, local=16), mi.BlockSparse(top_k=2, block_size=32)
    patterns = [vs, ASHAPE, bs, mi.Dense()]
    vertical, slash = vertical_slash_pattern.estimate(q, k, [vs], [0])
    vs_index = build_vertical_slash_index(N, vertical, slash)
    bs_index = build_block_sparse_index(block_sparse_pattern.estimate(q, k, [bs], [2]))
    counted = executed_tiles(N, patterns, vs_index, {32: bs_index})
    others = (
        bs_index.block_count.sum().item() / 4  # a 32 x 32 block is a quarter of a 64 x 64 tile
        + 2 * (a_shape_tiles(N, 64, 64) + causal_tiles(N))  # batch of two
    )
    assert float(counted) == pytest.approx(vertical_slash_tiles(vs_index).sum().item() + others)
    wide_index = build_vertical_slash_index(N, vertical, slash, 128)  # a 128 x 128 tile is four of 64 x 64
    counted = executed_tiles(N, patterns, wide_index, {32: bs_index})
    assert float(counted) == pytest.approx(4 * vertical_slash_tiles(wide_index).sum().item() + others)


@pytest.mark.parametrize("bad", [-0.1, "0.5", True, float("nan")])
def test_bad_threshold_is_refused_by_name(bad):
    q, k, v = inputs()
    with pytest.raises(ValueError, match="dense_above must be None or a number >= 0"):
        ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_above=bad)


def test_a_prompt_shorter_than_dense_below_runs_dense_without_estimating(monkeypatch):
    q, k, v = inputs()

    def never(*args, **kwargs):
        raise AssertionError("estimation ran below dense_below")

    monkeypatch.setattr(vertical_slash_pattern, "estimate", never)
    monkeypatch.setattr(block_sparse_pattern, "estimate", never)
    patterns = [mi.VerticalSlash(vertical=64, slash=64), mi.BlockSparse(top_k=1), ASHAPE, ASHAPE]
    out = ops.sparse_attention(q, k, v, patterns, backend="torch", dense_below=N + 1)
    torch.testing.assert_close(out, dense(q, k, v))
    written = ops.sparse_attention(q, k, v, patterns, backend="torch", dense_below=N + 1, out=poisoned_like(q))
    torch.testing.assert_close(written, dense(q, k, v))


def test_a_prompt_of_dense_below_tokens_or_more_keeps_its_mask():
    q, k, v = inputs()
    sparse = ops.sparse_attention(q, k, v, ASHAPE, backend="torch")
    for threshold in (0, N):
        out = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_below=threshold)
        assert torch.equal(out, sparse)
    assert not torch.allclose(sparse, dense(q, k, v)), "the A-shape mask must differ from dense for this test to bite"


def test_dense_below_is_ignored_where_sdpa_cannot_stand_in():
    q, k, v = inputs(batch=2)
    seqlens = torch.tensor([N, N - 50])
    sparse, lse = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", return_lse=True)
    out, lse2 = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", return_lse=True, dense_below=N + 1)
    assert torch.equal(out, sparse) and torch.equal(lse, lse2)
    padded = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", seqlens=seqlens)
    out = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", seqlens=seqlens, dense_below=N + 1)
    assert torch.equal(out, padded)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4096"])
def test_a_bad_dense_below_names_the_argument(bad):
    q, k, v = inputs()
    with pytest.raises(ValueError, match="dense_below"):
        ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_below=bad)


def test_a_batch_of_window_heads_is_counted_for_every_row():
    """With no index to read the batch from, window and dense heads still count once per batch row, so a batch of
    two does not halve the executed share the threshold sees."""
    q, k, v = inputs(batch=2)
    assert executed_tiles(N, [ASHAPE] * 4, None, {}, batch=2) == 2 * 4 * a_shape_tiles(N, 64, 64)
    out = ops.sparse_attention(q, k, v, ASHAPE, backend="torch", dense_above=a_shape_density() - 0.01)
    torch.testing.assert_close(out, dense(q, k, v))


@pytest.mark.parametrize("spread, counted, grid", [
    (False, True, 128),   # one band of diagonals: the 128-token cover is 3 % larger, and runs faster
    (True, True, 64),     # isolated diagonals: the 128-token cover is 72 % larger
    (True, False, 128),   # no tile count (no dense_above): the length rule, which this short prompt passes
])
def test_the_tile_count_picks_the_grid_where_wide_programs_run(monkeypatch, spread, counted, grid):
    """Where 128 x 128 programs can run (stood in for on the CPU), the ``dense_above`` count also picks the grid of
    the vertical-slash heads by their cover (``WIDE_GRID_MAX_COVER``), and the output is that grid's mask."""
    n = 2048
    q, k, v = inputs(n=n)
    offsets = torch.arange(0, n - 100, n // 5) if spread else torch.arange(0, 1536)
    vertical, slash = torch.arange(128).expand(1, 4, -1), offsets.expand(1, 4, -1)
    monkeypatch.setattr(launch, "wide_grid_possible", lambda q: True)
    monkeypatch.setattr(vertical_slash_pattern, "estimate", lambda *args, **kwargs: (vertical, slash))
    grids = []
    real_rows = ops.vertical_slash_index_mask_rows
    monkeypatch.setattr(ops, "vertical_slash_index_mask_rows",
                        lambda index, *args: grids.append(index.tile) or real_rows(index, *args))
    pattern = mi.VerticalSlash(128, offsets.numel(), sink=1, local=1)
    out = ops.sparse_attention(q, k, v, pattern, backend="torch", dense_above=10.0 if counted else None)
    assert set(grids) == {grid}
    assert_matches_reference(out, q, k, v, ops.vertical_slash_mask(n, vertical, slash, tile=grid),
                             what=f"grid {grid}")
    if counted:
        wide = executed_tiles(n, [], build_vertical_slash_index(n, vertical, slash, 128), {})
        narrow = executed_tiles(n, [], build_vertical_slash_index(n, vertical, slash, 64), {})
        assert (float(wide) <= ops.WIDE_GRID_MAX_COVER * float(narrow)) == (grid == 128)
    fixed = ops.sparse_attention(q, k, v, pattern, backend="torch", dense_above=10.0, vertical_slash_tile=64)
    assert_matches_reference(fixed, q, k, v, ops.vertical_slash_mask(n, vertical, slash, tile=64), what="fixed 64")
