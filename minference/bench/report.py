"""Benchmark output: the machine line, the markdown table, the JSON document (written atomically) and the log-log
latency charts of the kernel and end-to-end benchmarks."""

from __future__ import annotations

import datetime
import math
import platform
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch

from .._files import atomic_write, atomic_write_json, atomic_write_text

COLUMNS = (
    ("N", "n"),
    ("batch", "batch"),
    ("method", "method"),
    ("pattern", "pattern"),
    ("budget", "budget"),
    ("index set", "index_set"),
    ("density", "density"),
    ("ms", "ms"),
    ("est+index ms", "estimate_ms"),
    ("TFLOP/s dense-eq", "dense_tflops"),
    ("TFLOP/s kept", "kept_tflops"),
    ("kept % of cuDNN", "kept_share_of_cudnn"),
    ("× FA2", "speedup_vs_sdpa_flash"),
    ("× cuDNN", "speedup_vs_sdpa_cudnn"),
    ("× Flex", "speedup_vs_flex"),
)
"""(header, row key) of the markdown table, in order."""


def write_json_atomic(path: str, document: Any, indent: Optional[int] = 1) -> None:
    """Write ``document`` as JSON; readers see the old file or the new one, never a partial one.

    Raises:
        ValueError: ``document`` holds NaN or infinity. TypeError: it holds something JSON cannot represent.
    """
    atomic_write_json(path, document, indent=indent, allow_nan=False, default=_jsonable)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_text(path, text)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _size(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _cell(key: str, row: Mapping) -> str:
    value = row.get(key)
    if key == "n":
        return _size(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if key == "ms":
        text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
        return ("~" + text) if row.get("extrapolated") else text
    if key == "density":
        return f"{value:.1%}" if value < 10 else f"{value:.0f}×"
    if key == "kept_share_of_cudnn":
        return f"{value:.0%}"
    if key.startswith("speedup"):
        return f"{value:.2f}×"
    if key.endswith("tflops"):
        return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
    if key == "estimate_ms":
        return f"{value:.3g}"
    return str(value)


def source_commit() -> Optional[str]:
    """The checkout's short commit, ``+dirty`` when tracked files differ from it; None outside a git checkout.

    Figures are only comparable between runs of known kernels, and the version number does not change per commit.
    """
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        # an installed copy inside some other repository (a venv in a checkout) must not report that repository
        if commit.returncode != 0 or Path(commit.stdout.split()[0]).resolve() != root:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.split()[1] + ("+dirty" if dirty.stdout.strip() else "")


def machine_info(device, dtype: Optional[torch.dtype] = None) -> dict:
    """GPU (or CPU) name and the versions that matter, for every row and report header of the kernel sweeps and
    the end-to-end benchmark (``dtype``: the inputs' dtype where one sweep has one)."""
    import triton

    from ..kernels.launch import tma_wanted

    device = torch.device(device)
    info = {
        "commit": source_commit(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        **({"dtype": str(dtype).replace("torch.", "")} if dtype is not None else {}),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            capability=f"sm{props.major}{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info.update(gpu=f"CPU ({platform.processor() or platform.machine()})", cuda=None)
    # how the kernels load K/V tiles here: an A/B of the two (MINFERENCE_TMA=0 / 1) is otherwise two identical files
    info["kv_loads"] = "TMA" if tma_wanted(device) else "pointers"
    return info


def machine_line(machine: Mapping) -> str:
    """``GPU | CUDA | torch | triton | dtype | K/V loads | date | commit`` as one line."""
    parts = [
        machine.get("gpu", "?"),
        f"CUDA {machine.get('cuda') or '–'}",
        f"torch {machine.get('torch', '?')}",
        f"triton {machine.get('triton', '?')}",
        f"{machine.get('dtype', '')}",
        f"K/V via {machine['kv_loads']}" if machine.get("kv_loads") else "",
        machine.get("date", ""),
        f"commit {machine['commit']}" if machine.get("commit") else "",
    ]
    return " | ".join(p for p in parts if p)


def markdown_table(rows: Sequence[Mapping], machine: Optional[Mapping] = None) -> str:
    """A markdown table of measured rows (skipped/failed rows are listed below it with their reason)."""
    done = [r for r in rows if r.get("status") == "ok"]
    lines = []
    if machine:
        lines += [f"**{machine_line(machine)}**", ""]
    lines.append("| " + " | ".join(h for h, _ in COLUMNS) + " |")
    lines.append(
        "|"
        + "|".join("---" if k in ("method", "pattern", "budget", "index_set") else "---:" for _, k in COLUMNS)
        + "|"
    )
    for row in done:
        lines.append("| " + " | ".join(_cell(k, row) for _, k in COLUMNS) + " |")
    if any(r.get("extrapolated") for r in done):
        lines += ["", "`~` extrapolated ∝ N² from the largest measured N (dense baselines only)."]
    other = [r for r in rows if r.get("status") != "ok"]
    if other:
        lines += ["", "Not measured:"]
        for r in other:
            what = " ".join(x for x in (r["method"], r.get("pattern"), r.get("index_set")) if x)
            lines.append(f"- {_size(r['n'])}×{r['batch']} {what}: {r['status']}")
    return "\n".join(lines) + "\n"


def series_label(row: Mapping) -> str:
    """One chart line per method: ``method`` for baselines, ``method pattern/index set`` otherwise."""
    parts = [row["method"]]
    if row.get("pattern") and row["pattern"] != "dense":
        parts.append(f"{row['pattern']}/{row.get('index_set')}")
    return " ".join(parts)


PATTERN_COLOURS = {"vertical_slash": "tab:blue", "block_sparse": "tab:green", "a_shape": "tab:purple"}
DENSE_COLOURS = {"sdpa_flash": "tab:red", "sdpa_cudnn": "black", "sdpa": "tab:gray"}
INDEX_SET_MARKERS = {"local_heavy": "o", "measured": "s", "measured_qwen": "D", "random": "x", "static": "^"}


def line_style(label: str) -> dict:
    """Colour = pattern (dense baselines: their own colour, dashed), line = ours solid / Flex dotted, marker = index
    set: fourteen lines stay tellable apart, which matplotlib's ten-colour cycle does not manage."""
    method, _, rest = label.partition(" ")
    if method in DENSE_COLOURS:
        return dict(color=DENSE_COLOURS[method], linestyle="--", linewidth=2, marker="o", markersize=3)
    pattern, _, index_set = rest.partition("/")
    return dict(
        color=PATTERN_COLOURS.get(pattern, "tab:orange"),
        linestyle=":" if method == "flex" else "-",
        linewidth=1.2,
        marker=INDEX_SET_MARKERS.get(index_set, "o"),
        markersize=4,
    )


@dataclass(frozen=True)
class Series:
    """One line of a chart: its legend label, its ``(x, y)`` points (any order) and matplotlib line options."""

    label: str
    points: Sequence[tuple[float, float]]
    style: Mapping[str, Any] = field(default_factory=dict)


def write_log_log_chart(
    path: str,
    panels: Sequence[tuple[str, Sequence[Series]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    x_base: int = 10,
    panel_size: tuple[float, float] = (7.0, 4.5),
    legend_outside: bool = False,
    dpi: int = 110,
) -> None:
    """A log-log line chart with one panel per ``(panel title, lines)`` side by side, written atomically as PNG.

    ``x_base`` 2 puts the x ticks on powers of two (sequence lengths); ``legend_outside`` moves the legend right of
    each panel, for more lines than fit over the data.

    Raises:
        ValueError: no panels. ImportError: matplotlib is not installed.
    """
    if not panels:
        raise ValueError("a chart needs at least one panel")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = panel_size
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    for ax, (panel_title, lines) in zip(axes[0], panels):
        for line in lines:
            points = sorted(line.points)
            ax.plot([x for x, _ in points], [y for _, y in points], label=line.label, **line.style)
        ax.set_xscale("log", base=x_base)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if panel_title:
            ax.set_title(panel_title)
        elif len(panels) == 1:  # a lone untitled panel carries the chart's title, closer to the data
            ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if legend_outside:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=8)
    if title and (len(panels) > 1 or panels[0][0]):
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def write_chart(path: str, rows: Iterable[Mapping], title: str = "") -> None:
    """Kernel latency vs N, log-log, one line per method and one panel per batch size
    (:func:`write_log_log_chart`)."""
    done = [r for r in rows if r.get("status") == "ok" and r.get("ms")]
    panels = []
    for batch in sorted({r["batch"] for r in done}) or [1]:
        points: dict[str, list] = {}
        for row in done:
            if row["batch"] == batch:
                points.setdefault(series_label(row), []).append((row["n"], row["ms"]))
        lines = [Series(label, line, line_style(label)) for label, line in sorted(points.items())]
        panels.append((f"batch {batch}", lines))
    write_log_log_chart(path, panels, xlabel="sequence length N", ylabel="latency (ms)", title=title, x_base=2,
                        panel_size=(9.5, 5.0), legend_outside=True, dpi=110)
