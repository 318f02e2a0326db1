"""The pictures: the needle heatmap (lengths × depths, one panel per method), the PPL-vs-length curve and the
score-vs-length curve of RULER and InfiniteBench; each written atomically."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .._files import atomic_write
from .results import ResultStore


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, plt, **options) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees half a picture), then close it."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight", **options))
    finally:
        plt.close(fig)


def _length_label(n: int) -> str:
    return (
        f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else (f"{n / 1024:g}Ki" if n % 1024 == 0 else str(n))
    )


def needle_cells(store: ResultStore) -> dict:
    """``{method: {(depth, length): [scores]}}`` of the needle records (passkeys carry a depth too: left out)."""
    cells: dict[str, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for record in store.records.values():
        if record.get("task") == "needle" and "depth" in record.get("meta", {}):
            cells[record["method"]][(float(record["meta"]["depth"]), int(record["length"]))].append(
                record["score"]
            )
    return cells


def needle_heatmap(store: ResultStore, path, title: str = "") -> Path:
    """One heatmap per method: rows = depth %, columns = context length, colour = mean score (red 0 → green 1)."""
    plt = _pyplot()
    cells = needle_cells(store)
    if not cells:
        raise ValueError("the store holds no needle records")
    methods = list(cells)
    # constrained layout keeps the shared colour bar and the suptitle from overlapping the panels' labels
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods) + 1, 4), squeeze=False, layout="constrained")
    for column, (ax, method) in enumerate(zip(axes[0], methods)):
        depths = sorted({d for d, _ in cells[method]})
        lengths = sorted({n for _, n in cells[method]})
        grid = [
            [(sum(v) / len(v)) if (v := cells[method].get((d, n))) else float("nan") for n in lengths]
            for d in depths
        ]
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), [_length_label(n) for n in lengths], rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_xlabel("context length (tokens)")
        if column == 0:
            ax.set_ylabel("depth (%)")
        ax.set_title(method)
    fig.colorbar(image, ax=axes[0].tolist(), label="score")
    if title:
        fig.suptitle(title)
    return _save(fig, path, plt)


def _curves(curves: dict[str, dict[int, float]]):
    """``(plt, fig, ax)`` with one line per method of ``{method: {length: value}}`` against context length."""
    if not curves:
        raise ValueError("curves must not be empty")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in curves.items():
        lengths = sorted(points)
        ax.plot(lengths, [points[n] for n in lengths], marker="o", label=method)
    ax.set_xlabel("context length (tokens)")
    return plt, fig, ax


def ppl_curve(curves: dict[str, dict[int, float]], path, title: str = "") -> Path:
    """Perplexity against context length, one line per method (log-scale y like the published figure)."""
    plt, fig, ax = _curves(curves)
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path, plt)


def score_curve(curves: dict[str, dict[int, float]], path, title: str = "", note: str = "") -> Path:
    """Average score (0-100) against context length, one line per method (RULER's and InfiniteBench's headline);
    ``note`` goes under the axes (e.g. which tasks an average covers)."""
    plt, fig, ax = _curves(curves)
    lengths = sorted({n for points in curves.values() for n in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [_length_label(n) for n in lengths])
    ax.minorticks_off()
    ax.set_ylabel("average score")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, va="top", wrap=True)
    return _save(fig, path, plt)
