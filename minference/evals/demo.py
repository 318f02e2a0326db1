"""``minference demo``: a few-minute, CPU-friendly accuracy check of dense vs MInference on SmolLM2-135M.

Runs a short needle grid (question before the haystack, which this small model needs) and a few passkey prompts
under each method, prints a table with the measured attention density, and writes a needle heatmap PNG.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from . import infinitebench, needle
from .cli import _floats, _ints
from .methods import method_settings, parse_methods
from .models import load_model, minference_available, model_dtype, model_identity
from .plots import needle_heatmap
from .report import by_task, density_table
from .results import ResultStore, atomic_write_text
from .runner import run_examples


SHIPPED_METHODS = "dense,minference:smollm2-135m-instruct,minference@0.3"
"""The shipped model's searched per-head config (density 0.3 at 4K) and uniform budgets at matched density."""
OTHER_METHODS = "dense,minference,minference@0.3"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``demo``."""
    parser = subparsers.add_parser(
        "demo", help="quick needle + passkey check, dense vs MInference", description=__doc__
    )
    parser.add_argument(
        "--model",
        default=None,
        help="shipped model (smollm2, qwen2.5-coder-0.5b), .gguf file, local checkpoint or hub id "
        "(default: SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods (default for the shipped model: {SHIPPED_METHODS}; else {OTHER_METHODS})",
    )
    parser.add_argument("--lengths", type=_ints, default=[1024, 2048])
    parser.add_argument("--depths", type=_floats, default=[0.0, 50.0, 100.0])
    parser.add_argument("--passkeys", type=int, default=2, help="passkey prompts at the longest length")
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    """Run the demo; returns 0 (also when only dense could run, after saying why)."""
    methods = parse_methods(args.methods or (SHIPPED_METHODS if args.model is None else OTHER_METHODS))
    if not minference_available() and any(not m.is_dense for m in methods):
        print("note: minference.patch is not installed, so only dense attention runs", file=sys.stderr)
        methods = [m for m in methods if m.is_dense]
    loaded = load_model(args.model, device=args.device)
    examples = needle.generate(loaded.tokenizer, args.lengths, args.depths, seed=0, question_first=True)
    rng = random.Random(0)
    longest = max(args.lengths)
    for i in range(args.passkeys):
        depth = 100 * i / max(1, args.passkeys - 1)
        examples.append(infinitebench.passkey(loaded.tokenizer, longest, i, rng, depth))
    out = Path(args.out)
    store = ResultStore(out / f"demo-{loaded.name}.json", meta={"model": loaded.name, "benchmark": "demo"})
    store.bind(
        {"model": model_identity(args.model), "dtype": model_dtype(loaded)},
        {"lengths": args.lengths, "depths": args.depths, "passkeys": args.passkeys},
        {m.label: method_settings(m) for m in methods},
    )
    run_examples(loaded, methods, examples, store)
    png = needle_heatmap(store, out / f"demo-{loaded.name}-needle.png", title=f"{loaded.name}: needle")
    report = (
        f"## demo — {loaded.name}\n\n"
        + by_task(store, ["needle", "passkey"])
        + "\n\n"
        + density_table(store)
        + "\n"
    )
    atomic_write_text(out / f"demo-{loaded.name}.md", report)
    print(report)
    print(f"heatmap: {png}")
    return 0
