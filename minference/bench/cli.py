"""``minference bench``: ``kernels`` (attention-kernel sweep) and ``e2e`` (end-to-end prefill).

``minference bench kernels`` runs a declared sweep (:data:`minference.bench.shapes.SWEEPS`) with a progress
bar, prints the markdown table and writes ``<out>/<name>.json``, ``.md`` and ``.png`` (the JSON after every
row, so a run cut short still leaves its results). Standalone: ``python -m minference.bench.cli kernels ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Optional, Sequence

from .e2e import add_e2e_parser
from .shapes import INDEX_SETS, SWEEPS, Shape

PATTERN_NAMES = ("vertical_slash", "block_sparse", "a_shape")


def parse_size(text: str) -> int:
    """``"8192"``, ``"8K"``, ``"1M"`` -> tokens (K = 1024). Raises ValueError naming the value."""
    value = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20}.get(value[-1:], 1)
    digits = value[:-1] if scale > 1 else value
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"size must look like 8192, 8K or 1M, got {text!r}")
    return int(digits) * scale


def _sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def _optional_size(text: str) -> Optional[int]:
    return None if text.lower() in ("none", "inf", "all") else parse_size(text)


def _block_sparse_budgets(text: str) -> list[tuple[int, int]]:
    """``"100:64,50:128"`` -> ``[(100, 64), (50, 128)]`` (top_k:block_size pairs). Raises ValueError naming the
    value."""
    budgets = []
    for part in (part.strip() for part in text.split(",")):
        top_k, _, block_size = part.partition(":")
        if not (top_k.isdigit() and block_size.isdigit() and int(top_k) >= 1):
            raise ValueError(f"block-sparse budgets must look like 100:64,50:128 (top_k:block_size), got {text!r}")
        budgets.append((int(top_k), int(block_size)))
    return budgets


def _names(allowed):
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        bad = [name for name in names if name not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return names

    return parse


def _arg_type(fn):
    def parse(text):
        try:
            return fn(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = fn.__name__
    return parse


def add_kernels_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench kernels``."""
    parser.add_argument(
        "--sweep",
        choices=sorted(SWEEPS),
        default="quick",
        help="declared sweep (default quick; full = the 8K-1M grid)",
    )
    parser.add_argument("--n", type=_arg_type(_sizes), help="override the lengths, e.g. 8K,32K,128K")
    parser.add_argument("--batch", type=_arg_type(_sizes), help="override the batch sizes, e.g. 1,4")
    parser.add_argument("--heads", type=int, help="query heads (default from the sweep: 32)")
    parser.add_argument("--kv-heads", type=int, help="key/value heads (default 8)")
    parser.add_argument("--head-dim", type=int, help="head dimension (default 128)")
    parser.add_argument("--patterns", type=_names(PATTERN_NAMES), help="subset of " + ",".join(PATTERN_NAMES))
    parser.add_argument("--index-sets", type=_names(INDEX_SETS), help="subset of " + ",".join(INDEX_SETS))
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention")
    parser.add_argument(
        "--a-shape-pack",
        type=_arg_type(_sizes),
        help="GQA pack sizes for the A-shape rows, e.g. 1,2 (default: the library's choice for the head dim; 1 = unpacked)",
    )
    parser.add_argument(
        "--block-sparse",
        type=_arg_type(_block_sparse_budgets),
        help="block-sparse budgets as top_k:block_size, e.g. 100:64,50:128 (default: the sweep's, 100:64)",
    )
    for name in ("dense", "flex", "random"):
        parser.add_argument(
            f"--{name}-max-n",
            type=_arg_type(_optional_size),
            default=argparse.SUPPRESS,
            help=f"largest N for {name} rows ('none' = no limit; default from the sweep)",
        )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default bf16 on cuda, fp32 on cpu")
    parser.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    parser.add_argument("--name", default="kernels", help="file stem of the outputs (default kernels)")
    parser.add_argument(
        "--max-minutes", type=float, help="stop measuring after this long; the rest is 'skipped'"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--max-reps", type=int, default=25)
    parser.add_argument("--target-seconds", type=float, default=1.0, help="time spent on the reps of one row")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_sweep(args):
    """The sweep the options describe (the named sweep with overrides applied)."""
    from ..patterns import AShape, BlockSparse, VerticalSlash

    sweep = SWEEPS[args.sweep]
    first = sweep.shapes[0]
    ns = args.n or list(dict.fromkeys(s.n for s in sweep.shapes))
    batches = args.batch or list(dict.fromkeys(s.batch for s in sweep.shapes))
    geometry = dict(
        heads=args.heads or first.heads,
        kv_heads=args.kv_heads or first.kv_heads,
        head_dim=args.head_dim or first.head_dim,
    )
    if args.n or args.batch or args.heads or args.kv_heads or args.head_dim:
        shapes = [Shape(n=n, batch=b, **geometry) for b in batches for n in ns]
    else:
        shapes = list(sweep.shapes)
    kinds = {"vertical_slash": VerticalSlash, "block_sparse": BlockSparse, "a_shape": AShape}
    patterns = sweep.patterns
    if args.block_sparse:
        # the given budgets take the place of the sweep's block-sparse patterns
        first = next((i for i, p in enumerate(patterns) if isinstance(p, BlockSparse)), len(patterns))
        others = [p for p in patterns if not isinstance(p, BlockSparse)]
        budgets = [BlockSparse(top_k=top_k, block_size=block_size) for top_k, block_size in args.block_sparse]
        patterns = tuple(others[:first] + budgets + others[first:])
    if args.patterns:
        patterns = tuple(p for p in patterns if any(isinstance(p, kinds[name]) for name in args.patterns))
    changes = dict(shapes=tuple(shapes), patterns=patterns)
    if args.index_sets:
        changes["index_sets"] = tuple(args.index_sets)
    if args.no_flex:
        changes["flex"] = False
    if args.a_shape_pack:
        changes["a_shape_packs"] = tuple(args.a_shape_pack)
    for name in ("dense", "flex", "random"):
        if hasattr(args, f"{name}_max_n"):
            changes[f"{name}_max_n"] = getattr(args, f"{name}_max_n")
    return dataclasses.replace(sweep, **changes)


def run_kernels(args) -> int:
    """Run ``bench kernels``: measure, print the table, write JSON + markdown + PNG."""
    import torch
    from tqdm import tqdm

    from .kernels import DTYPES, plan_rows, run_sweep
    from .report import markdown_table, write_chart, write_json_atomic, write_text_atomic
    from .timing import TimingConfig

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be cuda or cpu, got {device!r}")
    dtype = DTYPES[args.dtype or ("bf16" if device.startswith("cuda") else "fp32")]
    sweep = build_sweep(args)
    timing = TimingConfig(
        warmup=args.warmup,
        min_reps=args.min_reps,
        max_reps=max(args.min_reps, args.max_reps),
        target_s=args.target_seconds,
    )
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    stem = os.path.join(args.out, args.name)
    document = {
        "schema": "minference.bench.kernels/1",
        "sweep": dataclasses.asdict(sweep) | {"patterns": [p.to_dict() for p in sweep.patterns]},
        "argv": sys.argv[1:],
        "complete": False,
        "rows": [],
    }
    collected = []
    bar = tqdm(
        total=plan_rows(sweep, device),
        desc="bench kernels",
        unit="row",
        disable=args.no_progress,
        file=sys.stderr,
    )

    def on_row(row) -> None:
        collected.append(row)
        bar.update(1)
        bar.set_postfix_str(f"{row.n}x{row.batch} {row.method} {row.pattern} {row.index_set}")
        document["machine"] = row.machine
        document["rows"] = [r.as_dict() for r in collected]
        write_json_atomic(stem + ".json", document)

    try:
        rows = run_sweep(sweep, device=device, dtype=dtype, timing=timing, deadline=deadline, on_row=on_row)
    finally:
        bar.close()
    document["rows"] = [r.as_dict() for r in rows]
    document["complete"] = True
    machine = rows[0].machine if rows else {}
    document["machine"] = machine
    table = markdown_table(document["rows"], machine)
    write_json_atomic(stem + ".json", document)
    write_text_atomic(stem + ".md", table)
    write_chart(stem + ".png", document["rows"], title=f"minference kernels, {sweep.name} sweep")
    print(table)
    print(f"wrote {stem}.json, {stem}.md, {stem}.png", file=sys.stderr)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` (with ``kernels`` and ``e2e``) on the top-level ``minference`` sub-parsers."""
    parser = subparsers.add_parser(
        "bench", help="benchmarks: kernel sweep, end-to-end prefill", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="bench_command", required=True)
    kernels = commands.add_parser(
        "kernels",
        help="attention-kernel sweep: table, JSON and a latency chart",
        description="Time every sparse pattern on every index set against SDPA "
        "(FlashAttention-2, cuDNN) and FlexAttention on the same masks.",
    )
    add_kernels_arguments(kernels)
    kernels.set_defaults(run=run_kernels)
    add_e2e_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m minference.bench.cli kernels ...`` without the top-level CLI."""
    parser = argparse.ArgumentParser(prog="minference")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
