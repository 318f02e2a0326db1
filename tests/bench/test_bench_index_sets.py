"""Index sets for the kernel benchmarks: shapes, ranges, forced choices, determinism, monotone density."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from minference.bench import index_sets
from minference.bench.density import block_sparse_density, vertical_slash_density
from minference.bench.index_sets import (
    block_sparse_indices,
    index_set_label,
    load_head_stats,
    slash_weights,
    vertical_slash_indices,
)
from minference.bench.shapes import INDEX_SETS
from minference.index import build_block_sparse_index, build_vertical_slash_index
from minference.patterns import BlockSparse, VerticalSlash

VS = VerticalSlash(vertical=40, slash=200, sink=8, local=32)


@pytest.mark.parametrize("index_set", INDEX_SETS)
@pytest.mark.parametrize("n", [100, 1000])
def test_vertical_slash_sets_are_valid_estimator_outputs(index_set, n):
    vertical_idx, slash_idx = vertical_slash_indices(index_set, n, 2, 3, VS, seed=1)
    assert vertical_idx.shape == (2, 3, min(VS.vertical, n)) and vertical_idx.dtype == torch.int32
    assert slash_idx.shape == (2, 3, min(VS.slash, n)) and slash_idx.dtype == torch.int32
    for chosen, forced in ((vertical_idx, VS.sink), (slash_idx, VS.local)):
        assert int(chosen.min()) >= 0 and int(chosen.max()) < n, (int(chosen.min()), int(chosen.max()))
        for row in chosen.flatten(0, 1):
            assert row.unique().numel() == row.numel(), "choices repeat inside one head"
            assert set(range(min(forced, n))) <= set(row.tolist()), "forced sinks / local diagonals missing"


@pytest.mark.parametrize("index_set", INDEX_SETS)
@pytest.mark.parametrize("n, block_size", [(1000, 64), (300, 32)])
def test_block_sparse_sets_are_causal_block_lists(index_set, n, block_size):
    pattern = BlockSparse(top_k=5, block_size=block_size)
    block_idx = block_sparse_indices(index_set, n, 2, 3, pattern, seed=1)
    rows = -(-n // block_size)
    assert block_idx.shape == (2, 3, rows, min(5, rows)) and block_idx.dtype == torch.int32
    own = torch.arange(rows).view(1, 1, -1, 1)
    assert bool((block_idx >= -1).all()) and bool((block_idx <= own).all()), "a block id is out of range"
    assert bool((block_idx[:, :, 5:] >= 0).any(dim=-1).all()), "a query block chose nothing"


@pytest.mark.parametrize("index_set", INDEX_SETS)
def test_density_is_monotone_in_the_budget(index_set):
    n = 2048
    previous = None
    for slash in (64, 256, 1024, 2048):
        vertical_idx, slash_idx = vertical_slash_indices(index_set, n, 1, 4, VerticalSlash(50, slash, 8, 32))
        density = vertical_slash_density(build_vertical_slash_index(n, vertical_idx, slash_idx), n)
        if previous is not None:
            assert bool((density >= previous).all()), (slash, density.tolist(), previous.tolist())
        previous = density
    previous = None
    for top_k in (1, 4, 16, 32):
        block_idx = block_sparse_indices(index_set, n, 1, 4, BlockSparse(top_k=top_k))
        density = block_sparse_density(build_block_sparse_index(block_idx), n)
        if previous is not None:
            assert bool((density >= previous).all()), (top_k, density.tolist(), previous.tolist())
        previous = density


def test_local_heavy_is_sparser_than_random_at_long_n():
    n = 8192
    pattern = VerticalSlash(100, 500)
    local = vertical_slash_density(
        build_vertical_slash_index(n, *vertical_slash_indices("local_heavy", n, 1, 2, pattern)), n
    )
    rand = vertical_slash_density(
        build_vertical_slash_index(n, *vertical_slash_indices("random", n, 1, 2, pattern)), n
    )
    assert float(local.max()) < 0.5 * float(rand.min()), (local.tolist(), rand.tolist())


def test_same_seed_same_choices_other_seed_other_choices():
    first = vertical_slash_indices("measured", 4096, 1, 2, VS, seed=3)
    again = vertical_slash_indices("measured", 4096, 1, 2, VS, seed=3)
    other = vertical_slash_indices("measured", 4096, 1, 2, VS, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])


def test_measured_set_reads_the_shipped_capture():
    stats = load_head_stats()
    assert stats is not None, "minference/bench/data/smollm2_8k_head_stats.json is missing"
    assert stats["tokens"] == 8192 and len(stats["layers"]) == 30 and len(stats["layers"][0]) == 9
    assert index_set_label("measured") == "measured"
    for head in stats["layers"][0]:
        assert len(head["slash"]) == len(stats["slash_edges"]) - 1 and 0 <= head["sink_mass"] <= 1.0
        assert 0.0 <= head["temperature"] <= 1.0


@pytest.mark.parametrize("index_set", ["measured", "measured_qwen"])
def test_measured_set_falls_back_to_synthetic_without_data(monkeypatch, tmp_path, index_set):
    monkeypatch.setitem(index_sets.MEASURED_FILES, index_set, str(tmp_path / "missing.json"))
    assert load_head_stats(index_set=index_set) is None
    assert index_set_label(index_set) == "synthetic"
    vertical_idx, slash_idx = vertical_slash_indices(index_set, 512, 1, 2, VS)
    assert vertical_idx.shape == (1, 2, VS.vertical) and int(slash_idx.max()) < 512


def test_each_measured_set_reads_its_own_capture(monkeypatch, tmp_path):
    """The ``stats`` a sweep passes describe ``measured``; ``measured_qwen`` always reads its own file."""
    smollm2 = load_head_stats()
    other = json.loads(json.dumps(smollm2))
    for layer in other["layers"]:
        for head in layer:
            head["slash"] = [1.0] + [1e-9] * (len(head["slash"]) - 1)  # all mass on the diagonal
            head["temperature"] = 0.0
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    monkeypatch.setitem(index_sets.MEASURED_FILES, "measured_qwen", str(path))
    mine = vertical_slash_indices("measured_qwen", 4096, 1, 2, VS, stats=smollm2)
    from_other = vertical_slash_indices("measured", 4096, 1, 2, VS, stats=other)
    from_smollm2 = vertical_slash_indices("measured", 4096, 1, 2, VS, stats=smollm2)
    assert all(torch.equal(a, b) for a, b in zip(mine, from_other))
    assert not torch.equal(mine[1], from_smollm2[1])


def test_slash_weights_follow_the_bins_then_a_decaying_tail():
    edges = [0, 1, 2, 4, 8, 16]
    profile = {"slash": [1.0, 0.5, 0.25, 0.125, 0.0625]}
    log_w = slash_weights(profile, edges, 64)
    assert log_w.shape == (64,)
    assert torch.allclose(
        log_w[:16].exp(),
        torch.tensor([1, 0.5, 0.25, 0.25, 0.125, 0.125, 0.125, 0.125] + [0.0625] * 8, dtype=torch.float64),
    )
    tail = log_w[16:]
    assert bool((tail[1:] <= tail[:-1]).all()) and float(tail[0].exp()) < 0.0625


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="index_set"):
        vertical_slash_indices("nope", 64, 1, 1, VS)
    with pytest.raises(ValueError, match="n must be >= 1"):
        vertical_slash_indices("random", 0, 1, 1, VS)
    with pytest.raises(TypeError, match="batch"):
        block_sparse_indices("random", 64, 1.5, 1, BlockSparse())
    with pytest.raises(TypeError, match="pattern"):
        block_sparse_indices("random", 64, 1, 1, VS)


def test_rows_on_the_128_token_grid_say_so_and_count_its_tiles(monkeypatch):
    """Where the library runs vertical-slash on the 128-token grid, its row says so and its density counts that
    grid's tiles; past the length rule's bound the row keeps the 64-token grid and its label."""
    from minference import ops
    from minference.kernels import launch
    from minference.bench.kernels import pattern_cases
    from minference.bench.shapes import Shape, Sweep

    monkeypatch.setattr(launch, "wide_grid_possible", lambda q: True)  # a device that runs 128 x 128 programs
    shape = Shape(n=1024, heads=2, kv_heads=1)
    pattern = VerticalSlash(40, 200, sink=4, local=16)
    sweep = Sweep("t", (shape,), (pattern,), index_sets=("local_heavy",))
    (wide,) = pattern_cases(pattern, sweep, shape, "cpu", None)
    vertical, slash = vertical_slash_indices("local_heavy", 1024, 1, 2, pattern)
    assert wide[0].endswith(", tile=128")
    wide_density = float(vertical_slash_density(build_vertical_slash_index(1024, vertical, slash, 128), 1024).mean())
    narrow_density = float(vertical_slash_density(build_vertical_slash_index(1024, vertical, slash, 64), 1024).mean())
    assert wide[1] == pytest.approx(wide_density) and wide_density != pytest.approx(narrow_density)
    longer = Shape(n=ops.WIDE_GRID_MAX_TOKENS + 1, heads=2, kv_heads=1)
    ((label, _, _, _),) = pattern_cases(pattern, dataclasses.replace(sweep, shapes=(longer,)), longer, "cpu", None)
    assert not label.endswith(", tile=128"), "past the length rule's bound the op runs the 64-token grid"
