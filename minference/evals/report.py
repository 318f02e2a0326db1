"""Markdown tables from a result store, in the published layouts (methods as rows)."""

from __future__ import annotations

from collections import defaultdict

from .results import ResultStore, markdown_table
from .runner import ppl_by_method


def _lengths(scores) -> list:
    return sorted({n for cells in scores.values() for _, n in cells})


def complete_cells(store: ResultStore) -> set:
    """``(method, task, length)`` cells holding as many records as the fullest method's cell of that task and length
    (a run stopped part-way leaves a cell with fewer, whose score is not comparable yet)."""
    counts: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record in store.records.values():
        counts[(record["task"], int(record["length"]))][record["method"]] += 1
    return {
        (method, task, n)
        for (task, n), per_method in counts.items()
        for method, count in per_method.items()
        if count == max(per_method.values())
    }


def finished_tasks(store: ResultStore) -> dict:
    """Per length, the tasks whose cell every method completed, so averages compare like with like."""
    complete = complete_cells(store)
    methods = {record["method"] for record in store.records.values()}
    finished: dict[int, set] = defaultdict(set)
    for _, task, n in complete:
        if all((m, task, n) in complete for m in methods):
            finished[n].add(task)
    return finished


def unfinished_note(store: ResultStore) -> str:
    """One line per length where some task is missing or partial for some method (empty when none is)."""
    finished = finished_tasks(store)
    tasks_at: dict[int, set] = defaultdict(set)
    for record in store.records.values():
        tasks_at[int(record["length"])].add(record["task"])
    return "\n".join(
        f"Averages at {n} are over the {len(finished[n])} tasks every method finished "
        f"(not finished by every method: {', '.join(sorted(tasks - finished[n]))})."
        for n, tasks in sorted(tasks_at.items())
        if tasks - finished[n]
    )


def average_by_length(store: ResultStore) -> dict[str, dict[int, float]]:
    """``{method: {length: mean score}}`` over the tasks every method completed at that length."""
    finished = finished_tasks(store)
    averages: dict[str, dict[int, float]] = {}
    for method, cells in store.scores().items():
        per: dict[int, list] = defaultdict(list)
        for (task, n), value in cells.items():
            if task in finished[n]:
                per[n].append(value)
        averages[method] = {n: sum(v) / len(v) for n, v in per.items()}
    return averages


def by_length(store: ResultStore) -> str:
    """Score per length averaged over tasks (needle, RULER's headline table); at each length only over the tasks
    every method finished, with a note naming the others."""
    averages = average_by_length(store)
    rows = {method: {str(n): v for n, v in per.items()} for method, per in averages.items()}
    table = markdown_table(rows, [str(n) for n in _lengths(store.scores())])
    note = unfinished_note(store)
    return table + ("\n\n" + note if note else "")


def by_task(store: ResultStore, tasks) -> str:
    """Score per task (columns ``task`` or ``task@length`` when several lengths ran; InfiniteBench, RULER detail).
    Cells a method has not completed show ``–``; the average is over the cells every method completed."""
    scores = store.scores()
    lengths = _lengths(scores)

    def column(task: str, n: int) -> str:
        return task if len(lengths) == 1 else f"{task}@{n}"

    complete = complete_cells(store)
    rows = {
        method: {column(t, n): v for (t, n), v in cells.items() if (method, t, n) in complete}
        for method, cells in scores.items()
    }
    present = [c for c in (column(t, n) for t in tasks for n in lengths) if any(c in r for r in rows.values())]
    finished = finished_tasks(store)
    shared = [column(t, n) for n in lengths for t in tasks if t in finished[n]]
    return markdown_table(rows, present, average_over=shared)


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
