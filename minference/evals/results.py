"""Resumable results: one JSON file per run, rewritten atomically after every record.

Layout: ``{"meta": {...}, "density": {method: {length: value}}, "records": {"method|task|length|index": {...}}}``.
A run interrupted at any point restarts where it stopped: finished records are skipped.

A record is reused only when it was made under the same settings. Two checks guard that:

- :meth:`ResultStore.bind` compares the run's settings (the arguments that change every record, such as the model,
  seed or text source, and each method's config) with those stored in ``meta``; any difference raises ValueError.
- every record carries the fingerprint of what it was computed from (the prompt, answers and metric; a PPL window's
  tokens), and a stored record whose fingerprint differs from this run's example raises ValueError too. This covers
  the grid arguments, which mostly just add cells (more lengths, tasks, methods) but can also change a cell's prompt
  (other needle depths renumber the examples; other PPL samples move the windows).

Refusing rather than recomputing keeps one file homogeneous: its tables never mix records from two settings.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from .._files import atomic_write_text


def fingerprint(content) -> str:
    """A short hash of JSON-serialisable ``content`` (what a record was computed from)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _plain(value):
    """``value`` as it reads back from JSON (tuples become lists), so stored and fresh settings compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _changes(old: dict, new: dict) -> list:
    """``--name stored -> new`` for every key whose value differs between ``old`` and ``new``."""
    return [
        f"{_flag(k) if k != 'config' else 'config file hash'} {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


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
        self.previous_grid: dict = {}  # the grid of the run that last wrote the file (set by bind)

    @staticmethod
    def key(method: str, example_key: str) -> str:
        return f"{method}|{example_key}"

    def bind(self, settings: dict, grid: dict | None = None, methods: dict | None = None) -> None:
        """Tie the store to one run: check its settings against the stored ones, then record them in ``meta``.

        Args:
            settings: the arguments that change every record's prompt or score (``{"seed": 42, ...}``, argparse
                names); a file holds one value of each.
            grid: the arguments that choose the cells (lengths, depths, samples ...): free to change, kept to name
                the likely cause when a stored record's fingerprint no longer matches.
            methods: ``{label: settings}`` per method (e.g. its config file's hash); a label keeps one setting.

        Raises:
            ValueError: the file holds records made before settings were recorded, or under other settings (naming
                each differing argument and asking for another ``--out``).
        """
        settings, grid, methods = _plain(settings), _plain(grid or {}), _plain(methods or {})
        if self.records and "settings" not in self.meta:
            raise ValueError(
                f"{self.path} holds {len(self.records)} records from a version that did not record its settings, so "
                "they cannot be checked against this run: pass another --out (or delete the file)"
            )
        changed = _changes(self.meta.get("settings", settings), settings)
        if changed:
            raise ValueError(
                f"{self.path} holds records made with other settings (stored -> this run: {'; '.join(changed)}); "
                "reusing them would mix settings in one table: pass another --out for this run (or delete the file)"
            )
        known = self.meta.get("method_settings", {})
        for label, value in methods.items():
            if label in known and known[label] != value and self._has_method(label):
                raise ValueError(
                    f"{self.path} holds records of method {label!r} made with other method settings "
                    f"(stored -> this run: {'; '.join(_changes(known[label], value))}); "
                    "pass another --out for this run (or delete the file)"
                )
        self.previous_grid = self.meta.get("grid", {})
        self.meta.update(settings=settings, grid=grid, method_settings={**known, **methods})

    def _has_method(self, label: str) -> bool:
        return label in self.density or any(r.get("method") == label for r in self.records.values())

    def check_fingerprints(self, methods: Iterable[str], fingerprints: dict) -> None:
        """Raise before any work when a stored record of this run's grid was computed from something else.

        Args:
            methods: method labels of the run.
            fingerprints: ``{example_key: fingerprint}`` of the run's examples (or PPL windows).

        Raises:
            ValueError: naming a stale record and the grid arguments that changed since the file was last written.
        """
        stale = [
            self.key(m, k)
            for m in methods
            for k, value in fingerprints.items()
            if self.key(m, k) in self.records and self.records[self.key(m, k)].get("fingerprint") != value
        ]
        if stale:
            raise ValueError(self._stale_message(stale))

    def _stale_message(self, stale: list) -> str:
        changed = _changes(self.previous_grid, self.meta.get("grid", {}))
        cause = (
            f"the grid changed ({'; '.join(changed)}) in a way that changes existing cells (needle --depths renumber "
            "the examples; PPL windows are spread over a span set by --samples and the longest length)"
            if changed
            else "the prompt generator or its input text changed"
        )
        return (
            f"{self.path}: {len(stale)} stored record(s), e.g. {stale[0]!r}, were computed from other prompts than "
            f"this run's: {cause}. Reusing them would mix settings: pass another --out for this run (or delete the file)"
        )

    def done(self, method: str, example_key: str, fingerprint: str | None = None) -> bool:
        """Whether the record exists; with ``fingerprint``, a stored record made from something else raises."""
        record = self.records.get(self.key(method, example_key))
        if record is None:
            return False
        if fingerprint is not None and record.get("fingerprint") != fingerprint:
            raise ValueError(self._stale_message([self.key(method, example_key)]))
        return True

    def add(self, method: str, example_key: str, record: dict, fingerprint: str | None = None) -> None:
        """Add one record (with the fingerprint of what it was computed from) and save the whole file atomically."""
        extra = {"fingerprint": fingerprint} if fingerprint is not None else {}
        self.records[self.key(method, example_key)] = {**record, **extra, "method": method}
        self.save()

    def set_density(self, method: str, length: int, info: dict) -> None:
        self.density.setdefault(method, {})[str(length)] = info
        self.save()

    def merge(self, other: ResultStore) -> None:
        """Add ``other``'s records, densities and skips: one run split over processes or machines, one file each.

        Raises:
            ValueError: ``other`` is another benchmark or model, was made under other settings, holds a method under
                other method settings, or holds a record of the same cell computed from another prompt.
        """
        for name in ("benchmark", "model"):
            if self.meta.get(name) != other.meta.get(name):
                raise ValueError(
                    f"{other.path} is a {name} {other.meta.get(name)!r} result; {self.path} holds {self.meta.get(name)!r}"
                )
        changed = _changes(self.meta.get("settings", {}), other.meta.get("settings", {}))
        if changed:
            raise ValueError(f"{other.path} was made with other settings than {self.path}: {'; '.join(changed)}")
        known = self.meta.setdefault("method_settings", {})
        for label, value in other.meta.get("method_settings", {}).items():
            if other._has_method(label) and self._has_method(label) and known.get(label) != value:
                raise ValueError(
                    f"method {label!r} ran with other settings in {other.path} than in {self.path}: "
                    + "; ".join(_changes(known.get(label) or {}, value))
                )
            if other._has_method(label) or label not in known:
                known[label] = value
        clashes = [
            key for key, record in other.records.items()
            if key in self.records and self.records[key].get("fingerprint") != record.get("fingerprint")
        ]
        if clashes:
            raise ValueError(
                f"{len(clashes)} record(s) of {other.path}, e.g. {clashes[0]!r}, were computed from other prompts than "
                f"the same cells of {self.path}: they cannot share one table"
            )
        for key, record in other.records.items():
            self.records.setdefault(key, record)
        for method, per_length in other.density.items():
            for length, info in per_length.items():
                self.density.setdefault(method, {}).setdefault(length, info)
        self.skipped.update(other.skipped)
        methods = list(self.meta.get("methods", []))
        self.meta["methods"] = methods + [m for m in other.meta.get("methods", []) if m not in methods]

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
    average_over: Iterable[str] | None = None,
    digits: int = 1,
    corner: str = "Method",
) -> str:
    """Methods as rows, tasks or lengths as columns (the published layout); missing cells show ``–``.

    ``Avg.`` is over ``average_over`` (default: every column) where a row has them."""
    columns = list(columns)
    header = [corner] + [str(c) for c in columns] + (["Avg."] if average else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, cells in rows.items():
        values = [cells.get(c) for c in columns]
        shown = [f"{v:.{digits}f}" if v is not None else "–" for v in values]
        if average:
            averaged = columns if average_over is None else set(average_over)
            present = [v for c, v in zip(columns, values) if v is not None and c in averaged]
            shown.append(f"{sum(present) / len(present):.{digits}f}" if present else "–")
        lines.append("| " + " | ".join([method] + shown) + " |")
    return "\n".join(lines)
