"""From per-head candidate scores to one pattern per head: equal-cost comparison and a global budget.

Every head has a list of candidates with a cost (weighted tiles, see :class:`~minference.search.candidates.TileCosts`)
and an :func:`objective`: the attention mass kept, taken as the smaller of the recall over all query rows and the
recall over the last query block (the rows that produce the next token). Everything below compares candidates by
that objective ("recall" in the names). Two ways to choose:

- :func:`choose_min_recall`: per head, the cheapest candidate that keeps at least ``min_recall``;
- :func:`choose_budget`: a global budget ``target_density x (dense cost of all heads)`` spread over heads greedily by
  marginal recall per unit of cost, walking each head's upper convex hull of (cost, recall); then leftover budget
  buys the best affordable upgrade per head. The budget is a cap: a step that gains less than ``min_slope`` recall per
  dense-head's worth of cost is not taken.

Exact ties go to the lower cost, then the simpler pattern kind (A-shape, vertical-slash, block-sparse, dense), then
the earlier candidate, so the choice is deterministic.
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence

from .candidates import TileCosts, kind_rank

RECALL_TOLERANCE = 1e-6
"""Recalls closer than this count as equal (float noise must not buy a costlier pattern)."""

def objective(score: dict) -> float:
    """What the choice maximises per head: ``min(recall, recall_last)``.

    All-rows recall alone rewards patterns that serve the many early rows (A-shape windows keep most of their mass)
    while dropping far keys the last rows need to answer; last-block recall alone is 64 rows of evidence and says
    nothing about the rows that build the context. The minimum values a candidate by its weaker side, needs no weight
    to tune, and equals the all-rows recall whenever the last rows keep at least as much. Scores without
    ``recall_last`` (hand-made tables) are valued by ``recall``; stored score files always carry it (the runner
    refuses older ones).
    """
    return min(score["recall"], score.get("recall_last", score["recall"]))


MIN_SLOPE = 0.01
"""Default smallest recall gain worth a dense head's cost (1 % recall for the price of running the head densely)."""


def average_scores(examples: Sequence[Sequence[Sequence[dict]]]) -> list[list[dict]]:
    """Mean over examples of one layer's ``scores[head][slot]`` (tiles, recall, recall_last, error).

    Raises:
        ValueError: no examples, examples with different heads or candidates, or some with ``recall_last`` and some
            without (scores of different versions).
    """
    if not examples:
        raise ValueError("examples must hold at least one example's scores")
    shape = [len(head) for head in examples[0]]
    for example in examples:
        if [len(head) for head in example] != shape:
            raise ValueError("examples must score the same heads and candidates")
    count = len(examples)
    averaged = []
    for head in range(len(shape)):
        row = []
        for slot in range(shape[head]):
            items = [example[head][slot] for example in examples]
            tiles = {key: sum(item["tiles"][key] for item in items) / count for key in items[0]["tiles"]}
            entry = {
                "tiles": tiles,
                "recall": sum(item["recall"] for item in items) / count,
                "error": sum(item["error"] for item in items) / count,
            }
            has_last = ["recall_last" in item for item in items]
            if any(has_last) and not all(has_last):
                raise ValueError("examples mix scores with and without recall_last (different score versions)")
            if all(has_last):
                entry["recall_last"] = sum(item["recall_last"] for item in items) / count
            row.append(entry)
        averaged.append(row)
    return averaged


def _order(candidates: Sequence, scores: Sequence[dict], costs: TileCosts) -> list[int]:
    return sorted(
        range(len(candidates)),
        key=lambda s: (costs.cost(scores[s]["tiles"]), -objective(scores[s]), kind_rank(candidates[s]), s),
    )


def upper_hull(candidates: Sequence, scores: Sequence[dict], costs: TileCosts) -> list[int]:
    """Slots on the upper concave hull of (cost, recall), by increasing cost and strictly increasing recall."""
    frontier: list[int] = []
    for slot in _order(candidates, scores, costs):
        if frontier and objective(scores[slot]) <= objective(scores[frontier[-1]]) + RECALL_TOLERANCE:
            continue
        frontier.append(slot)
    hull: list[int] = []
    for slot in frontier:
        while len(hull) >= 2:
            (c0, r0), (c1, r1) = ((costs.cost(scores[s]["tiles"]), objective(scores[s])) for s in hull[-2:])
            c2, r2 = costs.cost(scores[slot]["tiles"]), objective(scores[slot])
            if (r1 - r0) * (c2 - c0) <= (r2 - r0) * (c1 - c0):  # hull[-1] lies on or below the chord
                hull.pop()
            else:
                break
        hull.append(slot)
    return hull


def best_at_cost(candidates: Sequence, scores: Sequence[dict], cost: float, costs: TileCosts) -> int:
    """The slot keeping the most attention among candidates costing at most ``cost`` (the cheapest if none does).

    Recalls within :data:`RECALL_TOLERANCE` of the best count as the best; the cheapest of those wins.
    """
    order = _order(candidates, scores, costs)
    affordable = [s for s in order if costs.cost(scores[s]["tiles"]) <= cost * (1 + 1e-12)]
    if not affordable:
        return order[0]
    best = max(objective(scores[s]) for s in affordable)
    return next(s for s in affordable if objective(scores[s]) >= best - RECALL_TOLERANCE)


def choose_min_recall(
    candidates: Sequence, table: Sequence[Sequence[Sequence[dict]]], min_recall: float, costs: TileCosts
) -> list[list[int]]:
    """Per layer and head, the cheapest slot with recall ``>= min_recall`` (the best recall if none reaches it).

    Raises:
        ValueError: ``min_recall`` outside ``(0, 1]``.
    """
    if not 0 < min_recall <= 1:
        raise ValueError(f"min_recall must lie in (0, 1], got {min_recall}")
    chosen = []
    for layer in table:
        row = []
        for scores in layer:
            order = _order(candidates, scores, costs)
            enough = [s for s in order if objective(scores[s]) >= min_recall - RECALL_TOLERANCE]
            row.append(enough[0] if enough else max(order, key=lambda s: objective(scores[s])))
        chosen.append(row)
    return chosen


def choose_budget(
    candidates: Sequence,
    table: Sequence[Sequence[Sequence[dict]]],
    target_density: float,
    costs: TileCosts,
    *,
    dense_cost: float,
    min_slope: float = MIN_SLOPE,
) -> list[list[int]]:
    """Spread ``target_density x dense_cost x heads`` over all heads of ``table[layer][head][slot]``.

    Args:
        candidates: the patterns behind the slots.
        table: averaged scores per layer, head and slot.
        target_density: the budget as a fraction of dense attention's cost, in ``(0, 1]``.
        costs: tile weights.
        dense_cost: the cost of one head running densely (the budget's unit).
        min_slope: smallest recall gain per ``dense_cost`` of extra cost worth taking.

    Returns:
        ``chosen[layer][head]`` slots. If even the cheapest candidates exceed the budget, they are returned.

    Raises:
        ValueError: ``target_density`` outside ``(0, 1]``, ``dense_cost <= 0`` or ``min_slope < 0``.
    """
    if not 0 < target_density <= 1:
        raise ValueError(f"target_density must lie in (0, 1], got {target_density}")
    if not dense_cost > 0:
        raise ValueError(f"dense_cost must be > 0, got {dense_cost}")
    if min_slope < 0:
        raise ValueError(f"min_slope must be >= 0, got {min_slope}")
    heads = [(layer, head) for layer in range(len(table)) for head in range(len(table[layer]))]
    budget = target_density * dense_cost * len(heads)
    hulls = {key: upper_hull(candidates, table[key[0]][key[1]], costs) for key in heads}
    position = {key: 0 for key in heads}

    def point(key, step):
        scores = table[key[0]][key[1]][hulls[key][step]]
        return costs.cost(scores["tiles"]), objective(scores)

    used = sum(point(key, 0)[0] for key in heads)
    queue: list = []

    def push(key):
        step = position[key]
        if step + 1 < len(hulls[key]):
            (c0, r0), (c1, r1) = point(key, step), point(key, step + 1)
            slope = (r1 - r0) / max(c1 - c0, 1e-30) * dense_cost
            if slope >= min_slope:
                heapq.heappush(queue, (-slope, key, step))

    for key in heads:
        push(key)
    while queue:
        _, key, step = heapq.heappop(queue)
        extra = point(key, step + 1)[0] - point(key, step)[0]
        if used + extra > budget * (1 + 1e-12):
            continue  # this head's next hull step does not fit; its later steps cost more still
        used += extra
        position[key] = step + 1
        push(key)

    chosen = {key: hulls[key][position[key]] for key in heads}
    for key in sorted(heads, key=lambda k: -max(0.0, point(k, min(position[k] + 1, len(hulls[k]) - 1))[1]
                                               - point(k, position[k])[1])):
        scores = table[key[0]][key[1]]
        current = chosen[key]
        current_cost = costs.cost(scores[current]["tiles"])
        upgrade = best_at_cost(candidates, scores, current_cost + max(0.0, budget - used), costs)
        gain = objective(scores[upgrade]) - objective(scores[current])
        extra = costs.cost(scores[upgrade]["tiles"]) - current_cost
        if gain > RECALL_TOLERANCE and gain * dense_cost >= min_slope * max(extra, 0.0):
            used += extra
            chosen[key] = upgrade
    return [[chosen[(layer, head)] for head in range(len(table[layer]))] for layer in range(len(table))]


def summarize(
    table: Sequence[Sequence[Sequence[dict]]], chosen: Sequence[Sequence[int]], costs: TileCosts, dense_cost: float
) -> dict:
    """Mean ``density`` (cost / dense cost), ``recall``, ``recall_last``, ``objective`` and ``error`` of
    ``chosen[layer][head]`` slots in ``table`` (``recall_last`` falls back to ``recall`` where a score lacks it).

    Raises:
        ValueError: ``chosen`` does not match the table's layers and heads.
    """
    if [len(row) for row in chosen] != [len(layer) for layer in table]:
        raise ValueError("chosen must list one slot per head of every layer of table")
    picks = [table[layer][head][slot] for layer, row in enumerate(chosen) for head, slot in enumerate(row)]
    count = len(picks)
    return {
        "density": sum(costs.cost(p["tiles"]) for p in picks) / (dense_cost * count),
        "recall": sum(p["recall"] for p in picks) / count,
        "recall_last": sum(p.get("recall_last", p["recall"]) for p in picks) / count,
        "objective": sum(objective(p) for p in picks) / count,
        "error": sum(p["error"] for p in picks) / count,
    }
