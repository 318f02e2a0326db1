"""Choosing per head from (cost, recall) tables: hull, equal-cost comparison, global budget, thresholds."""
from __future__ import annotations

import random

import pytest

from minference.patterns import AShape, BlockSparse, Dense, VerticalSlash
from minference.search import TileCosts, best_at_cost, choose_budget, choose_min_recall, upper_hull
from minference.search.choose import average_scores, objective

CANDIDATES = [AShape(sink=0, local=64), VerticalSlash(64, 100), BlockSparse(4), VerticalSlash(128, 100), Dense(),
              BlockSparse(2)]
COSTS = TileCosts()


def _scores(points):
    return [{"tiles": {"walked": c, "gathered": 0.0, "estimate": 0.0}, "recall": r, "error": 0.0} for c, r in points]


def test_upper_hull_drops_dominated_and_concave_points():
    scores = _scores([(1, 0.5), (2, 0.9), (3, 0.91), (4, 1.0), (10, 1.0), (2.5, 0.6)])
    assert upper_hull(CANDIDATES, scores, COSTS) == [0, 1, 3]


def test_best_at_cost_prefers_cheaper_then_simpler_on_ties():
    scores = _scores([(2, 0.8), (2, 0.8), (1, 0.8), (3, 0.95), (10, 1.0), (1, 0.3)])
    assert best_at_cost(CANDIDATES, scores, 2.0, COSTS) == 2  # equal recall: the cheapest
    assert best_at_cost(CANDIDATES, scores, 3.0, COSTS) == 3
    assert best_at_cost(CANDIDATES, scores, 0.5, COSTS) == 2  # nothing affordable: the cheapest (then best recall)
    tie = _scores([(2, 0.8), (2, 0.8)] + [(9, 0.0)] * 4)
    assert best_at_cost(CANDIDATES, tie, 2.0, COSTS) == 0  # same cost and recall: A-shape before vertical-slash


def test_min_recall_takes_the_cheapest_head_pattern_that_reaches_it():
    table = [[_scores([(1, 0.5), (2, 0.96), (3, 0.97), (5, 1.0), (10, 1.0), (1, 0.2)])]]
    assert choose_min_recall(CANDIDATES, table, 0.95, COSTS) == [[1]]
    assert choose_min_recall(CANDIDATES, table, 0.999, COSTS) == [[3]]
    with pytest.raises(ValueError, match="min_recall"):
        choose_min_recall(CANDIDATES, table, 0.0, COSTS)


def _random_table(rng, layers=3, heads=4):
    table = []
    for _ in range(layers):
        layer = []
        for _ in range(heads):
            points = sorted((rng.uniform(1, 9), rng.random()) for _ in range(5))
            layer.append(_scores(points + [(10.0, 1.0)]))
        table.append(layer)
    return table


@pytest.mark.parametrize("seed", range(5))
def test_budget_is_respected_and_more_budget_never_keeps_less(seed):
    rng = random.Random(seed)
    table = _random_table(rng)
    floor = sum(min(s["tiles"]["walked"] for s in head) for layer in table for head in layer) / (12 * 10.0)
    previous = -1.0
    for density in (0.3, 0.5, 0.7, 0.9, 1.0):
        chosen = choose_budget(CANDIDATES, table, density, COSTS, dense_cost=10.0, min_slope=0.0)
        picks = [table[l][h][s] for l, row in enumerate(chosen) for h, s in enumerate(row)]
        cost = sum(p["tiles"]["walked"] for p in picks) / (12 * 10.0)
        recall = sum(p["recall"] for p in picks)
        assert cost <= max(density, floor) + 1e-9, (density, cost)
        assert recall >= previous - 1e-12
        previous = recall
    assert previous == pytest.approx(12.0)  # the whole dense budget buys every head's best


def test_budget_is_a_cap_not_a_target():
    table = [[_scores([(1, 0.999), (2, 0.9995), (9, 0.0), (9, 0.0), (10, 1.0), (9, 0.0)])]]
    assert choose_budget(CANDIDATES, table, 1.0, COSTS, dense_cost=10.0) == [[0]]
    assert choose_budget(CANDIDATES, table, 1.0, COSTS, dense_cost=10.0, min_slope=0.0) == [[4]]


def test_choose_budget_rejects_bad_arguments():
    table = _random_table(random.Random(0), 1, 1)
    for kwargs, word in (({"target_density": 0.0}, "target_density"), ({"target_density": 1.5}, "target_density"),
                         ({"dense_cost": 0.0}, "dense_cost"), ({"min_slope": -1.0}, "min_slope")):
        args = {"target_density": 0.5, "dense_cost": 10.0, **kwargs}
        with pytest.raises(ValueError, match=word):
            choose_budget(CANDIDATES, table, args.pop("target_density"), COSTS, **args)


def test_tile_costs_parse_and_weigh():
    costs = TileCosts.parse("walked=0.01, gathered=0.02,unit=ms")
    assert costs == TileCosts(walked=0.01, gathered=0.02, estimate=1.0, unit="ms")
    assert costs.cost({"walked": 100, "gathered": 10, "estimate": 1}) == pytest.approx(2.2)
    for bad in ("walk=1", "walked", "walked=-1", "walked=inf", "block_pairs=-1", "pooled_blocks=nan"):
        with pytest.raises(ValueError):
            TileCosts.parse(bad)


def test_each_estimator_has_its_own_weight_and_the_default_prices_both_alike():
    vertical_slash = {"walked": 100, "gathered": 10, "estimate": 4}
    block_sparse = {"walked": 100, "gathered": 0.0, "estimate": 0.0, "block_pairs": 2, "pooled_blocks": 64}
    legacy_block_sparse = {"walked": 100, "gathered": 0.0, "estimate": 2}  # scores written before the split
    default = TileCosts()
    assert default.cost(vertical_slash) == 114 and default.cost(block_sparse) == 102
    assert default.cost(legacy_block_sparse) == 102
    timed = TileCosts.parse("walked=1,gathered=1,estimate=10,block_pairs=100,pooled_blocks=0.5,unit=ns")
    assert timed.cost(vertical_slash) == 150
    assert timed.cost(block_sparse) == 100 + 200 + 32
    assert TileCosts(estimate=10).cost(block_sparse) == 120  # block_pairs follows estimate unless given


def test_a_128_x_128_tile_costs_four_64_x_64_tiles_unless_calibrated():
    wide = {"walked": 0.0, "gathered": 0.0, "estimate": 0.0, "block_pairs": 0.5, "pooled_blocks": 32, "wide": 25}
    assert TileCosts().cost(wide) == 100.5
    assert TileCosts.parse("wide=3.6").cost(wide) == pytest.approx(90.5)
    # in time units it follows the walked tile's time, as block_pairs follows estimate
    assert TileCosts.parse("walked=0.01,estimate=0,unit=ms").cost(wide) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="wide must be a finite number"):
        TileCosts.parse("wide=-1")


def test_summarize_averages_density_recall_and_error():
    from minference.search import summarize

    table = [[_scores([(2, 0.5), (4, 1.0)]), _scores([(6, 0.7), (8, 0.9)])]]
    table[0][1][0]["error"] = 0.25
    got = summarize(table, [[1, 0]], COSTS, dense_cost=10.0)
    assert got == pytest.approx({"density": 0.5, "recall": 0.85, "recall_last": 0.85, "objective": 0.85, "error": 0.125})
    table[0][0][1]["recall_last"] = 0.6  # the last rows keep less: the objective follows them
    got = summarize(table, [[1, 0]], COSTS, dense_cost=10.0)
    assert got == pytest.approx({"density": 0.5, "recall": 0.85, "recall_last": 0.65, "objective": 0.65, "error": 0.125})
    with pytest.raises(ValueError, match="chosen"):
        summarize(table, [[1]], COSTS, dense_cost=10.0)


def test_choice_weighs_the_last_rows():
    # A-shape keeps more over all rows but little on the last rows; vertical-slash is good on both at the same cost
    a_shape, vertical_slash = [AShape(sink=64, local=256), VerticalSlash(256, 100)]
    scores = _scores([(5, 0.97), (5, 0.93)])
    scores[0]["recall_last"], scores[1]["recall_last"] = 0.70, 0.96
    table = [[scores]]
    assert objective(scores[0]) == 0.70 and objective(scores[1]) == 0.93
    assert best_at_cost([a_shape, vertical_slash], scores, 5.0, COSTS) == 1
    assert choose_budget([a_shape, vertical_slash], table, 0.5, COSTS, dense_cost=10.0) == [[1]]
    assert choose_min_recall([a_shape, vertical_slash], table, 0.9, COSTS) == [[1]]
    for item in scores:
        del item["recall_last"]  # all-rows recall alone prefers the A-shape
    assert best_at_cost([a_shape, vertical_slash], scores, 5.0, COSTS) == 0


def test_average_scores_keeps_recall_last_and_refuses_mixed_versions():
    new = [_scores([(1, 0.8)])]
    new[0][0]["recall_last"] = 0.6
    other = [_scores([(1, 0.6)])]
    other[0][0]["recall_last"] = 0.4
    assert average_scores([new, other])[0][0]["recall_last"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="recall_last"):
        average_scores([new, [_scores([(1, 0.6)])]])
