"""Resumable results: one JSON file per run, rewritten atomically after every record.

Layout: ``{"meta": {...}, "density": {method: {length: value}}, "records": {"method|task|length|index": {...}}}``.
A run interrupted at any point restarts where it stopped: finished records are skipped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from .._files import atomic_write_text


class ResultStore:
    """Records of one run, keyed by ``method|task|length|index``."""

    def __init__(self, path, meta: dict | None = None):
        self.path = Path(path)
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
        else:
            data = {"meta": {}, "density": {}, "records": {}, "skipped": {}}
        self.meta = {**data.get("meta", {}), **(meta or {})}
        self.density: dict[str, dict[str, dict]] = data.get("density", {})
        self.records: dict[str, dict] = data.get("records", {})
        self.skipped: dict[str, str] = data.get("skipped", {})

    @staticmethod
    def key(method: str, example_key: str) -> str:
        return f"{method}|{example_key}"

    def done(self, method: str, example_key: str) -> bool:
        return self.key(method, example_key) in self.records

    def add(self, method: str, example_key: str, record: dict) -> None:
        """Add one record and save the whole file atomically."""
        self.records[self.key(method, example_key)] = {**record, "method": method}
        self.save()

    def set_density(self, method: str, length: int, info: dict) -> None:
        self.density.setdefault(method, {})[str(length)] = info
        self.save()

    def save(self) -> None:
        data = {"meta": self.meta, "density": self.density, "skipped": self.skipped, "records": self.records}
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))

    def scores(self) -> dict[str, dict[tuple, float]]:
        """Mean score per method and (task, length): × 100 for accuracies, as is for ``ppl`` records."""
        cells: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
        for record in self.records.values():
            cells[record["method"]][(record["task"], int(record["length"]))].append(float(record["score"]))
        scale = lambda task: 1.0 if task == "ppl" else 100.0
        return {
            m: {cell: scale(cell[0]) * sum(v) / len(v) for cell, v in by.items()} for m, by in cells.items()
        }


def markdown_table(
    rows: dict[str, dict[str, float]],
    columns: Iterable[str],
    *,
    average: bool = True,
    digits: int = 1,
    corner: str = "Method",
) -> str:
    """Methods as rows, tasks or lengths as columns (the published layout); missing cells show ``–``."""
    columns = list(columns)
    header = [corner] + [str(c) for c in columns] + (["Avg."] if average else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, cells in rows.items():
        values = [cells.get(c) for c in columns]
        shown = [f"{v:.{digits}f}" if v is not None else "–" for v in values]
        if average:
            present = [v for v in values if v is not None]
            shown.append(f"{sum(present) / len(present):.{digits}f}" if present else "–")
        lines.append("| " + " | ".join([method] + shown) + " |")
    return "\n".join(lines)
