"""``minference config show CONFIG [--heatmap PNG]``: the pattern mix of a config per layer, and a layers x heads map.

The table has one row per layer: how many heads use each pattern, and (for searched configs) the mean density and
attention recall the search measured. The heatmap colours each (layer, head) cell by pattern and writes its budget.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import config as config_io

PATTERNS = ("a_shape", "vertical_slash", "block_sparse", "dense")

COLOURS = {"a_shape": "#8fbc8f", "vertical_slash": "#6495ed", "block_sparse": "#f4a460", "dense": "#b0b0b0"}
SHORT = {"a_shape": "A", "vertical_slash": "VS", "block_sparse": "BS", "dense": "D"}


def _short(value: int) -> str:
    return str(value) if value < 1000 else f"{value / 1000:.3g}K"


def budget_label(entry: dict) -> str:
    """A compact budget: ``sink/local`` for A-shape, ``vertical/slash`` for vertical-slash, ``kTOP`` for blocks
    (``kTOPxSIZE`` for blocks other than 64 tokens)."""
    pattern = entry["pattern"]
    if pattern == "a_shape":
        return f"{_short(entry.get('sink', 128))}/{_short(entry.get('local', 3968))}"
    if pattern == "vertical_slash":
        return f"{_short(entry.get('vertical', 1000))}/{_short(entry.get('slash', 6096))}"
    if pattern == "block_sparse":
        block_size = entry.get("block_size", 64)
        return f"k{entry.get('top_k', 100)}" + ("" if block_size == 64 else f"x{block_size}")
    return "dense"


def mix_table(layers: list, provenance: dict | None = None) -> str:
    """The per-layer pattern mix of ``layers[layer][head]`` entry dicts as a fixed-width text table (plus density and
    recall columns when ``provenance`` holds the search's per-head ``scores``)."""
    scores = (provenance or {}).get("scores")
    header = ["layer"] + [SHORT[p] for p in PATTERNS] + (["density", "recall"] if scores else []) + ["budgets"]
    rows = []
    for index, layer in enumerate(layers):
        counts = [sum(entry["pattern"] == p for entry in layer) for p in PATTERNS]
        row = [str(index)] + [str(c) for c in counts]
        if scores:
            layer_scores = scores[index]
            row += [f"{sum(s['density'] for s in layer_scores) / len(layer_scores):.3f}",
                    f"{sum(s['recall'] for s in layer_scores) / len(layer_scores):.4f}"]
        labels: dict = {}
        for entry in layer:
            label = f"{SHORT[entry['pattern']]} {budget_label(entry)}"
            labels[label] = labels.get(label, 0) + 1
        row.append(", ".join(f"{n}x {label}" for label, n in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))))
        rows.append(row)
    total = [sum(entry["pattern"] == p for layer in layers for entry in layer) for p in PATTERNS]
    footer = ["all"] + [str(c) for c in total]
    if scores:
        footer += [f"{provenance.get('density', float('nan')):.3f}", f"{provenance.get('recall', float('nan')):.4f}"]
    footer.append("")
    widths = [max(len(r[i]) for r in [header, footer] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i < len(header) - 1 else cell for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header] + rows + [footer]]
    return "\n".join(lines)


def draw_heatmap(layers: list, path: str, title: str = "") -> None:
    """Save a layers x heads PNG: colour = pattern, text = budget.

    Raises:
        ValueError: layers have different head counts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    heads = {len(layer) for layer in layers}
    if len(heads) != 1:
        raise ValueError(f"layers must have the same number of heads to draw a heatmap, got {sorted(heads)}")
    n_heads, n_layers = heads.pop(), len(layers)
    grid = [[PATTERNS.index(entry["pattern"]) for entry in layer] for layer in layers]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.65 * n_heads + 2), max(3.0, 0.28 * n_layers + 1.5)))
    ax.imshow(grid, cmap=ListedColormap([COLOURS[p] for p in PATTERNS]), vmin=0, vmax=len(PATTERNS) - 1,
              aspect="auto", interpolation="nearest")
    fontsize = max(3.0, min(7.0, 220.0 / max(n_heads, n_layers)))
    for row, layer in enumerate(layers):
        for col, entry in enumerate(layer):
            ax.text(col, row, budget_label(entry), ha="center", va="center", fontsize=fontsize)
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.tick_params(labelsize=fontsize + 1)
    ax.legend(handles=[Patch(color=COLOURS[p], label=p) for p in PATTERNS], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _title(provenance: dict) -> str:
    if not provenance:
        return ""
    parts = [provenance.get("model") or "", provenance.get("task", ""), f"N={provenance.get('length', '?')}"]
    if "density" in provenance:
        parts.append(f"density {provenance['density']:.3f}, recall {provenance['recall']:.4f}")
    return "  ".join(p for p in parts if p)


def run_show(args: argparse.Namespace) -> int:
    loaded = config_io.load(args.config)
    layers, provenance = loaded.to_list(), dict(loaded.metadata)
    if provenance:
        print(_title(provenance))
    print(mix_table(layers, provenance))
    if args.heatmap:
        draw_heatmap(layers, args.heatmap, _title(provenance))
        print(f"heatmap written to {args.heatmap}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``config`` (with its ``show`` sub-command) on the ``minference`` command line."""
    parser = subparsers.add_parser("config", help="inspect pattern configs")
    actions = parser.add_subparsers(dest="config_command", required=True)
    show = actions.add_parser("show", help="print the pattern mix per layer, optionally draw a heatmap")
    show.add_argument("config", help="config JSON file or registry name (upstream MInference files are imported)")
    show.add_argument("--heatmap", metavar="PNG", help="also draw a layers x heads heatmap to this PNG")
    show.set_defaults(run=run_show)
    return parser
