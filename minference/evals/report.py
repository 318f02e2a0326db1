"""Markdown tables from a result store, in the published layouts (methods as rows)."""

from __future__ import annotations

from collections import defaultdict

from .results import ResultStore, markdown_table
from .runner import ppl_by_method


def _lengths(scores) -> list:
    return sorted({n for cells in scores.values() for _, n in cells})


def by_length(store: ResultStore) -> str:
    """Score per length averaged over tasks (needle, RULER's headline table)."""
    scores = store.scores()
    rows: dict[str, dict[str, float]] = {}
    for method, cells in scores.items():
        per: dict[int, list] = defaultdict(list)
        for (_, n), value in cells.items():
            per[n].append(value)
        rows[method] = {str(n): sum(v) / len(v) for n, v in per.items()}
    return markdown_table(rows, [str(n) for n in _lengths(scores)])


def by_task(store: ResultStore, tasks) -> str:
    """Score per task (columns ``task`` or ``task@length`` when several lengths ran; InfiniteBench, RULER detail)."""
    scores = store.scores()
    lengths = _lengths(scores)
    rows: dict[str, dict[str, float]] = {}
    columns = [t if len(lengths) == 1 else f"{t}@{n}" for t in tasks for n in lengths]
    for method, cells in scores.items():
        rows[method] = {(t if len(lengths) == 1 else f"{t}@{n}"): v for (t, n), v in cells.items()}
    present = [c for c in columns if any(c in r for r in rows.values())]
    return markdown_table(rows, present)


def ppl_table(store: ResultStore) -> str:
    curves = ppl_by_method(store)
    lengths = sorted({n for points in curves.values() for n in points})
    rows = {m: {str(n): v for n, v in points.items()} for m, points in curves.items()}
    return markdown_table(rows, [str(n) for n in lengths], average=False, digits=2)


def density_table(store: ResultStore) -> str:
    """Measured density (and budgets) per method and length."""
    lengths = sorted({int(n) for per in store.density.values() for n in per})
    rows = {}
    for method, per in store.density.items():
        rows[method] = {
            str(n): (100.0 * per[str(n)]["density"])
            for n in lengths
            if str(n) in per and per[str(n)]["density"] is not None
        }
    table = markdown_table(rows, [str(n) for n in lengths], average=False, corner="Density % (measured)")
    tiles = {
        method: {
            str(n): 100.0 * per[str(n)]["tiles"] for n in lengths if per.get(str(n), {}).get("tiles") is not None
        }
        for method, per in store.density.items()
    }
    if any(tiles.values()):
        table += "\n\n" + markdown_table(
            tiles, [str(n) for n in lengths], average=False, corner="Executed tiles % of dense (first prompt)"
        )
    budgets = [
        f"{m} @ {n}: vertical {i['vertical']}, slash {i['slash']}"
        for m, per in store.density.items()
        for n, i in sorted(per.items(), key=lambda x: int(x[0]))
        if i.get("vertical")
    ]
    return table + ("\n\nBudgets: " + "; ".join(budgets) if budgets else "")


def skipped_lines(store: ResultStore) -> str:
    return "\n".join(f"- skipped {reason}" for reason in store.skipped.values())
