"""``minference demo``: what the library does, in a few minutes on a laptop CPU.

At the longest context the shipped SmolLM2-135M-Instruct reads within a few minutes on a 2-core CPU (3K tokens by
default), it runs dense attention and the model's searched per-head config side by side on needles in a haystack
(and pass keys with ``--passkeys``) and the perplexity of a Gutenberg window, and reports each score next to the share of attention tiles
the sparse run skipped. Where a CUDA GPU is present it also times one prefill of a long prompt (128K tokens by default, the
model's RoPE stretched with YaRN), dense cuDNN against MInference. Results go to ``--out`` (JSON, markdown, a needle
heatmap); a rerun resumes from them.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

from . import infinitebench, needle
from .cli import _floats, _ints
from .methods import method_settings, parse_methods
from .models import load_model, minference_available, model_dtype, model_identity
from .plots import needle_heatmap
from .report import by_task, density_table, ppl_table
from .results import ResultStore, atomic_write_text
from .runner import run_examples, run_ppl

SHIPPED_METHODS = "dense,minference:smollm2-135m-instruct"
"""The shipped model's searched per-head config (density 0.3 at 4K)."""
OTHER_METHODS = "dense,minference"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``demo``."""
    parser = subparsers.add_parser(
        "demo", help="dense vs MInference on the shipped small model: accuracy, tiles skipped, GPU prefill time",
        description=__doc__,
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
    parser.add_argument("--lengths", type=_ints, default=[3072], help="context lengths in tokens (default 3072)")
    parser.add_argument("--depths", type=_floats, default=[25.0, 75.0], help="needle depths in %%")
    parser.add_argument("--passkeys", type=int, default=0, help="pass-key prompts at the longest length (default 0)")
    parser.add_argument("--ppl-windows", type=int, default=1, help="perplexity windows at the longest length")
    parser.add_argument(
        "--gpu-length", type=_ints, default=[131072],
        help="prompt length of the timed GPU prefill (default 128K; skipped without a GPU)",
    )
    parser.add_argument("--no-gpu-timing", action="store_true", help="skip the timed prefill on a GPU")
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)
    return parser


def _accuracy(args, loaded, methods, out: Path) -> str:
    examples = needle.generate(loaded.tokenizer, args.lengths, args.depths, seed=0, question_first=True)
    rng = random.Random(0)
    longest = max(args.lengths)
    for i in range(args.passkeys):
        depth = 100 * i / max(1, args.passkeys - 1) if args.passkeys > 1 else 50.0
        examples.append(infinitebench.passkey(loaded.tokenizer, longest, i, rng, depth))
    store = ResultStore(out / f"demo-{loaded.name}.json", meta={"model": loaded.name, "benchmark": "demo"})
    store.bind(
        {"model": model_identity(args.model), "dtype": model_dtype(loaded)},
        {"lengths": args.lengths, "depths": args.depths, "passkeys": args.passkeys},
        {m.label: method_settings(m) for m in methods},
    )
    run_examples(loaded, methods, examples, store)
    needle_heatmap(store, out / f"demo-{loaded.name}-needle.png", title=f"{loaded.name}: needle")
    section = "Scores (0-100):\n\n" + by_task(store, ["needle", "passkey"])
    if args.ppl_windows > 0:
        ppl_store = ResultStore(out / f"demo-{loaded.name}-ppl.json", meta={"model": loaded.name, "benchmark": "ppl"})
        ppl_store.bind(
            {"model": model_identity(args.model), "dtype": model_dtype(loaded)},
            {"lengths": [longest], "samples": args.ppl_windows},
            {m.label: method_settings(m) for m in methods},
        )
        run_ppl(loaded, methods, [longest], args.ppl_windows, ppl_store)
        section += "\n\nPerplexity (lower is better):\n\n" + ppl_table(ppl_store)
    return section + "\n\n" + density_table(store) + "\n\n" + _skipped_line(store)


def _skipped_line(store: ResultStore) -> str:
    parts = []
    for method, per in store.density.items():
        for n, info in sorted(per.items(), key=lambda item: int(item[0])):
            if info.get("tiles") is not None and info["tiles"] < 1.0:
                parts.append(f"{method} skipped {100 * (1 - info['tiles']):.0f} % of the attention tiles at {n} tokens")
    return ("; ".join(parts) + ".") if parts else "No method skipped attention tiles."


def _gpu_timing(args, loaded, methods) -> str:
    """One timed prefill per length, dense cuDNN vs the sparse method, through the end-to-end benchmark."""
    from ..bench import e2e

    config = next((m.config for m in methods if m.attn_type == "minference"), None)
    context = loaded.max_length or max(args.gpu_length)
    scaling = max(1.0, max(args.gpu_length) / context)
    settings = e2e.E2ESettings(
        lengths=tuple(args.gpu_length),
        methods=("dense_cudnn", "minference"),
        model=args.model or "smollm2",
        rope_scaling=scaling if scaling > 1.0 else None,
        config=config,
        runs=2,
        density_max_len=max(args.gpu_length),
    )
    document = e2e.run(settings, progress=True)
    return "Prefill on the GPU (seconds, median of 2):\n\n" + e2e.markdown(document)


def run(args) -> int:
    """Run the demo; returns 0 (also when only dense could run, after saying why)."""
    methods = parse_methods(args.methods or (SHIPPED_METHODS if args.model is None else OTHER_METHODS))
    if not minference_available() and any(not m.is_dense for m in methods):
        print("note: minference.patch is not installed, so only dense attention runs", file=sys.stderr)
        methods = [m for m in methods if m.is_dense]
    loaded = load_model(args.model, device=args.device)
    out = Path(args.out)
    report = f"## demo — {loaded.name}\n\n" + _accuracy(args, loaded, methods, out) + "\n"
    if torch.cuda.is_available() and not args.no_gpu_timing and any(not m.is_dense for m in methods):
        report += "\n" + _gpu_timing(args, loaded, methods) + "\n"
    atomic_write_text(out / f"demo-{loaded.name}.md", report)
    print(report)
    print(f"results: {out}")
    return 0
