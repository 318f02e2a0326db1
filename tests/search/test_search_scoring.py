"""The search's scores against the kernels' truth (the index mask rows), and its choice on planted patterns."""
from __future__ import annotations

import pytest
import torch
from search_planted import PLANTED, planted_qkv, planted_retrieval_qkv

from minference.search import TileCosts, candidate_space, choose_budget, score_layer
from minference.search.candidates import a_shape_tiles, block_sparse_tiles, dense_tiles
from minference.search.choose import objective
from minference.search.scoring import _indices, _mask_rows


def _dense_probs(q, k):
    group = q.shape[1] // k.shape[1]
    kk = k[0].repeat_interleave(group, dim=0)
    n = q.shape[2]
    scores = q[0] @ kk.transpose(-1, -2) / q.shape[-1] ** 0.5
    return scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


@pytest.mark.parametrize("n", [1, 77, 300])
def test_recall_equals_mass_inside_the_kernel_mask(n):
    torch.manual_seed(n)
    q, k, v = torch.randn(1, 4, n, 16) * 1.5, torch.randn(1, 2, n, 16) * 1.5, torch.randn(1, 2, n, 16)
    candidates = candidate_space(n)
    assert (n > 128) == any(c.name == "block_sparse" and c.block_size == 128 for c in candidates)
    scores = score_layer(q, k, v, candidates, error_rows=0)
    indices = _indices(q, k, candidates, None)
    probs = _dense_probs(q, k)
    last = (-(-n // 64) - 1) * 64  # first row of the last query block
    for slot, candidate in enumerate(candidates):
        mask = _mask_rows(candidate, indices[slot], n, 0, 4)
        expected = torch.ones(4) if mask is None else (probs * mask).sum(dim=(1, 2)) / n
        got = torch.tensor([scores[h][slot]["recall"] for h in range(4)])
        assert torch.allclose(got, expected.float(), atol=1e-5), (candidate, got, expected)
        expected = torch.ones(4) if mask is None else (probs * mask)[:, last:].sum(dim=(1, 2)) / (n - last)
        got = torch.tensor([scores[h][slot]["recall_last"] for h in range(4)])
        assert torch.allclose(got, expected.float(), atol=1e-5), (candidate, got, expected)


def test_streaming_in_small_chunks_gives_the_same_scores(monkeypatch):
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 200, 16), torch.randn(1, 2, 200, 16), torch.randn(1, 2, 200, 16)
    candidates = candidate_space(200)
    whole = score_layer(q, k, v, candidates)
    monkeypatch.setattr("minference.search.scoring.WORK_BYTES", 1 << 14)  # one head and one 64-row chunk at a time
    chunked = score_layer(q, k, v, candidates)
    for head_a, head_b in zip(whole, chunked):
        for a, b in zip(head_a, head_b):
            assert a["tiles"] == b["tiles"] and a["error"] == b["error"]
            assert abs(a["recall"] - b["recall"]) < 1e-9, (a, b)
            assert abs(a["recall_last"] - b["recall_last"]) < 1e-9, (a, b)


def test_full_budget_keeps_everything_and_matches_dense_output():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 2, 130, 16), torch.randn(1, 2, 130, 16), torch.randn(1, 2, 130, 16)
    dense = [c for c in candidate_space(130) if c.name == "dense"]
    scores = score_layer(q, k, v, dense, error_rows=130)
    for head in scores:
        assert head[0]["recall"] == pytest.approx(1.0) and head[0]["error"] == 0.0
        assert head[0]["tiles"] == dense_tiles(130)


def test_block_sparse_tiles_count_listed_blocks_and_both_estimation_terms():
    from minference.index import build_block_sparse_index

    # 3 query blocks of 64; head 0 lists its diagonal only, head 1 every causal block
    ids = torch.tensor([[[[0, -1, -1], [1, -1, -1], [2, -1, -1]], [[0, -1, -1], [0, 1, -1], [0, 1, 2]]]],
                       dtype=torch.int32)
    tiles = block_sparse_tiles(build_block_sparse_index(ids))
    assert [t["walked"] for t in tiles] == [3.0, 6.0]
    assert all(t["block_pairs"] == 9 / 8192 and t["pooled_blocks"] == 3.0 and t["estimate"] == 0.0 for t in tiles)
    # the same lists of 128-token blocks: each listed block is one 128 x 128 tile
    wide = block_sparse_tiles(build_block_sparse_index(ids), 128)
    assert [t["wide"] for t in wide] == [3.0, 6.0] and all(t["walked"] == 0.0 for t in wide)
    assert all(t["block_pairs"] == 9 / 8192 and t["pooled_blocks"] == 3.0 for t in wide)
    with pytest.raises(ValueError, match="block_size must be one of"):
        block_sparse_tiles(build_block_sparse_index(ids), 32)


def test_a_shape_tiles_follow_the_kernel_walk():
    # 3 query blocks, sink 64 (1 block), window 64: block 0 walks {0}, block 1 {0, 1}, block 2 {0, 1, 2}
    assert a_shape_tiles(192, 64, 64)["walked"] == 1 + 2 + 3
    assert a_shape_tiles(192, 0, 1)["walked"] == 3
    assert a_shape_tiles(192, 0, 192)["walked"] == dense_tiles(192)["walked"]


def test_planted_patterns_are_recovered():
    n = 2048
    q, k, v = planted_qkv(n, seed=0)
    candidates = candidate_space(n)
    scores = score_layer(q, k, v, candidates, error_rows=0)
    costs = TileCosts()
    chosen = choose_budget(candidates, [scores], 0.35, costs, dense_cost=costs.cost(dense_tiles(n)))[0]
    got = [candidates[slot].name for slot in chosen]
    assert got == list(PLANTED), [(candidates[s], round(scores[h][s]["recall"], 4)) for h, s in enumerate(chosen)]
    for head, slot in enumerate(chosen):
        assert scores[head][slot]["recall"] > 0.8, (head, candidates[slot], scores[head][slot])


def test_last_rows_that_need_a_far_column_get_vertical_slash():
    # all-rows recall prefers an A-shape window; the last 64 rows need a far column that only vertical-slash keeps
    n = 2048
    q, k, v = planted_retrieval_qkv(n)
    candidates = [c for c in candidate_space(n) if c.name in ("a_shape", "vertical_slash", "dense")]
    scores = score_layer(q, k, v, candidates, error_rows=64)
    all_rows = [[{key: value for key, value in item.items() if key != "recall_last"} for item in head] for head in scores]
    costs = TileCosts()
    dense_cost = costs.cost(dense_tiles(n))
    for density in (0.3, 0.4):
        old = choose_budget(candidates, [all_rows], density, costs, dense_cost=dense_cost)[0][0]
        new = choose_budget(candidates, [scores], density, costs, dense_cost=dense_cost)[0][0]
        old_score, new_score = scores[0][old], scores[0][new]
        assert candidates[old].name == "a_shape" and candidates[new].name == "vertical_slash", (
            candidates[old], old_score, candidates[new], new_score)
        assert old_score["recall"] > new_score["recall"] - 0.005  # all rows alone: the A-shape is at least as good
        assert old_score["recall_last"] < 0.1 and new_score["recall_last"] > 0.95  # ... but loses the answer's key
        assert objective(new_score) > objective(old_score)
        assert new_score["error"] < old_score["error"]  # and the last rows' output follows


def test_score_layer_rejects_bad_arguments():
    q = torch.randn(1, 2, 64, 16)
    with pytest.raises(ValueError, match="error_rows"):
        score_layer(q, q, q, candidate_space(64), error_rows=-1)
    with pytest.raises(ValueError, match=r"\(1, H, N, D\)"):
        score_layer(q.expand(2, -1, -1, -1), q, q, candidate_space(64))
    with pytest.raises(TypeError, match=r"candidates\[0\]"):
        score_layer(q, q, q, ["dense"])
    from minference.patterns import BlockSparse

    with pytest.raises(ValueError, match=r"candidates\[0\].*block_size in \(64, 128\) only, got 32"):
        score_layer(q, q, q, [BlockSparse(top_k=1, block_size=32)])
