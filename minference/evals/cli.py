"""``minference eval needle|ruler|infinitebench|ppl``: run a benchmark, sparse vs dense, and write results.

Writes ``{out}/{benchmark}-{model}.json`` (resumable), ``.md`` (tables) and a ``.png`` (needle heatmap, PPL or
average score against length).
``minference eval report A.json B.json --out DIR`` merges the files of one run split over processes or machines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import infinitebench, needle, ruler
from .methods import method_settings, parse_methods
from .models import load_model, model_dtype, model_identity, path_or_name
from .plots import needle_heatmap, ppl_curve, score_curve
from .report import (
    average_by_length,
    by_length,
    by_task,
    density_table,
    ppl_table,
    skipped_lines,
    unfinished_note,
)
from .results import ResultStore, atomic_write_text
from .runner import ppl_by_method, run_examples, run_ppl


def _ints(text: str) -> list:
    try:
        values = [int(float(x)) for x in text.replace("k", "000").replace("K", "000").split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _floats(text: str) -> list:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list:
    return [x.strip() for x in text.split(",") if x.strip()]


def _common(parser: argparse.ArgumentParser, lengths: str) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="shipped model (smollm2, qwen2.5-coder-0.5b), .gguf file, local checkpoint or hub id "
        "(default: SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--dtype", default="auto", help="auto | float32 | float16 | bfloat16")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    parser.add_argument("--rope-scaling", type=float, default=None, help="YaRN factor to stretch the context")
    parser.add_argument(
        "--methods",
        default="dense,minference,minference@0.1",
        help="comma-separated: dense, minference, minference@DENSITY, minference:CONFIG.json",
    )
    parser.add_argument(
        "--lengths", type=_ints, default=_ints(lengths), help=f"context lengths (default {lengths})"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="results/evals", help="output folder")
    parser.add_argument(
        "--text-dir", default=None, help="folder of .txt files for natural text (default Gutenberg)"
    )
    parser.add_argument(
        "--no-chat-template", action="store_true", help="feed prompts raw even if a template exists"
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` and its benchmark sub-commands; returns the ``eval`` parser."""
    parser = subparsers.add_parser("eval", help="accuracy evals: sparse vs dense", description=__doc__)
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)

    p = benchmarks.add_parser("needle", help="needle in a haystack (heatmap)")
    _common(p, "1024,2048,4096,8192")
    p.add_argument("--depths", type=_floats, default=list(needle.DEFAULT_DEPTHS))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--question-first", action="store_true", help="also ask the question before the haystack")
    p.set_defaults(run=run)

    p = benchmarks.add_parser("ruler", help="RULER, 13 tasks")
    _common(p, "4096,8192")
    p.add_argument("--tasks", type=_names, default=list(ruler.TASKS))
    p.add_argument("--samples", type=int, default=25)
    p.add_argument("--squad", default=None, help="SQuAD v2 dev JSON or datasets name (qa_1)")
    p.add_argument("--hotpotqa", default=None, help="HotpotQA dev JSON or datasets name (qa_2)")
    p.set_defaults(run=run)

    p = benchmarks.add_parser("infinitebench", help="InfiniteBench, the published 10 tasks")
    _common(p, "8192")
    p.add_argument("--tasks", type=_names, default=list(infinitebench.TASKS))
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--data-dir", default=None, help="folder with the published {task}.jsonl files")
    p.set_defaults(run=run)

    p = benchmarks.add_parser("ppl", help="perplexity vs length (curve)")
    _common(p, "1024,2048,4096,8192")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument(
        "--pg19", default=None, help="PG-19 through datasets (name or local path); default Gutenberg"
    )
    p.add_argument("--chunk", type=int, default=4096, help="tokens per LM-head/loss chunk")
    p.set_defaults(run=run)

    p = benchmarks.add_parser(
        "report", help="merge result files of one benchmark and model; rewrite the tables and plot"
    )
    p.add_argument("results", nargs="+", help="results JSON files written by minference eval")
    p.add_argument("--out", default="results/evals", help="output folder")
    p.set_defaults(run=run_report)
    return parser


RECORD_ARGS = {
    "needle": ("seed", "text_dir", "no_chat_template", "question_first"),
    "ruler": ("seed", "text_dir", "no_chat_template", "squad", "hotpotqa"),
    "infinitebench": ("seed", "no_chat_template", "data_dir"),
    "ppl": ("text_dir", "pg19"),
}
"""Per benchmark, the arguments that change every record's prompt or score (besides the model, its dtype and
``--rope-scaling``): a results file holds one value of each. ``--device`` and ``--chunk`` are left out on purpose:
they change rounding, not what is computed, so a run may move between machines and still resume."""

PATH_ARGS = ("text_dir", "data_dir", "squad", "hotpotqa", "pg19")
"""Of those, the ones naming files or folders (recorded as absolute paths when they exist here)."""

GRID_ARGS = ("lengths", "tasks", "samples", "depths", "rounds")
"""Arguments that choose which cells run: they may change between runs; each record's fingerprint then decides."""


def _with_extension(stem: Path, extension: str) -> Path:
    """``stem`` + ``extension``: model names hold dots (``qwen2.5-coder-0.5b-instruct``), which ``with_suffix``
    would take for an extension and cut."""
    return stem.with_name(stem.name + extension)


def run_settings(args, loaded) -> dict:
    """The settings every record of this run depends on, by argparse name (see :data:`RECORD_ARGS`)."""
    settings = {
        "model": model_identity(args.model),
        "dtype": model_dtype(loaded),
        "rope_scaling": args.rope_scaling,
    }
    for name in RECORD_ARGS[args.benchmark]:
        value = getattr(args, name)
        settings[name] = path_or_name(value) if name in PATH_ARGS else value
    return settings


def open_store(args, loaded, methods, stem: Path) -> ResultStore:
    """The run's results file, checked against this run's settings (refuses records made under others)."""
    store = ResultStore(
        _with_extension(stem, ".json"),
        meta={"model": loaded.name, "benchmark": args.benchmark, "methods": [m.label for m in methods]},
    )
    grid = {name: getattr(args, name) for name in GRID_ARGS if hasattr(args, name)}
    store.bind(run_settings(args, loaded), grid, {m.label: method_settings(m) for m in methods})
    return store


def write_report(store: ResultStore, stem: Path) -> str:
    """``{stem}.md`` (the tables) and ``{stem}.png`` (the benchmark's picture) from ``store``; returns the markdown."""
    benchmark, name = store.meta["benchmark"], store.meta["model"]
    sections = []
    if benchmark == "ppl":
        sections.append(f"Perplexity ({store.meta.get('text_source')}):\n\n" + ppl_table(store))
        ppl_curve(ppl_by_method(store), _with_extension(stem, ".png"), title=f"{name}: PPL vs length")
    else:
        sections.append(by_length(store))
        if benchmark == "needle":
            needle_heatmap(store, _with_extension(stem, ".png"), title=name)
        else:
            ordered = list(store.meta.get("grid", {}).get("tasks") or [])  # the benchmark's order first
            tasks = ordered + sorted({r["task"] for r in store.records.values()} - set(ordered))
            sections.append(by_task(store, tasks))
            score_curve(average_by_length(store), _with_extension(stem, ".png"), title=f"{name}: {benchmark}",
                        note=unfinished_note(store))
    sections.append(density_table(store))
    if store.skipped:
        sections.append(skipped_lines(store))
    report = f"## {benchmark} — {name}\n\n" + "\n\n".join(sections) + "\n"
    atomic_write_text(_with_extension(stem, ".md"), report)
    return report


def merge_results(paths, out) -> tuple[ResultStore, str]:
    """One results file from several of the same benchmark and model (a run split over processes or machines),
    written to ``{out}/{benchmark}-{model}.json`` with its tables and plot; a file already there is merged too, so
    nothing it holds is lost. Returns the merged store and its markdown tables.

    Raises:
        ValueError: no paths, a path that is not a results file, or files that cannot share one table (see
            :meth:`ResultStore.merge`).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths must name at least one results JSON file")
    for path in paths:
        if not path.is_file():
            raise ValueError(f"paths: {path} is not a results file")
    stores = [ResultStore(path) for path in paths]
    for path, store in zip(paths, stores):
        if "benchmark" not in store.meta or "model" not in store.meta:
            raise ValueError(f"paths: {path} is not a results file of minference eval (no benchmark/model in meta)")
    merged = stores[0]
    stem = Path(out) / f"{merged.meta['benchmark']}-{merged.meta['model']}"
    destination = _with_extension(stem, ".json")
    if destination.is_file() and all(not destination.samefile(p) for p in paths):
        stores.append(ResultStore(destination))
    for store in stores[1:]:
        merged.merge(store)
    merged.path = destination
    merged.save()
    return merged, write_report(merged, stem)


def run_report(args) -> int:
    """``minference eval report``: merge result files and rewrite their tables and plots."""
    merged, report = merge_results(args.results, args.out)
    print(report)
    print(f"results: {merged.path}")
    return 0


def run(args) -> int:
    """Run the chosen benchmark and print its tables."""
    methods = parse_methods(args.methods)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, rope_scaling=args.rope_scaling)
    chat = not args.no_chat_template
    stem = Path(args.out) / f"{args.benchmark}-{loaded.name}"
    store = open_store(args, loaded, methods, stem)
    if args.benchmark == "ppl":
        run_ppl(
            loaded,
            methods,
            args.lengths,
            args.samples,
            store,
            pg19=args.pg19,
            text_dir=args.text_dir,
            chunk=args.chunk,
        )
    else:
        if args.benchmark == "needle":
            examples = needle.generate(
                loaded.tokenizer,
                args.lengths,
                args.depths,
                args.rounds,
                seed=args.seed,
                text_dir=args.text_dir,
                question_first=args.question_first,
                use_chat_template=chat,
            )
            skipped = {}
        elif args.benchmark == "ruler":
            examples, skipped = ruler.generate(
                loaded.tokenizer,
                args.tasks,
                args.lengths,
                args.samples,
                seed=args.seed,
                text_dir=args.text_dir,
                squad=args.squad,
                hotpotqa=args.hotpotqa,
                use_chat_template=chat,
            )
        else:
            examples, skipped = infinitebench.generate(
                loaded.tokenizer,
                args.tasks,
                args.lengths,
                args.samples,
                seed=args.seed,
                data_dir=args.data_dir,
                use_chat_template=chat,
            )
        store.skipped.update(skipped)
        run_examples(loaded, methods, examples, store, use_chat_template=chat)
    report = write_report(store, stem)
    print(report)
    print(f"results: {_with_extension(stem, '.json')}")
    return 0
