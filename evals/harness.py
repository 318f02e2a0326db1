"""Eval harness: run a benchmark through the ``minference eval`` code path, then assert ``thresholds.toml``.

Environment (all optional):
    MINFERENCE_EVAL_MODEL    shipped model (``qwen2.5-coder-0.5b``), local checkpoint or hub id (default: the
                             shipped SmolLM2-135M-Instruct); ``pytest --eval-model NAME`` sets it
    MINFERENCE_EVAL_METHODS  default ``dense,minference,minference@0.1``; for a shipped model the methods (and grid)
                             its thresholds were measured with (:data:`SHIPPED_RUNS`)
    MINFERENCE_EVAL_OUT      results folder (default ``results/evals``; runs resume from it)
    MINFERENCE_EVAL_SAMPLES  examples per task and length (default 10 for RULER/InfiniteBench, 4 windows for PPL)
    MINFERENCE_EVAL_DATA     folder of InfiniteBench jsonl files; MINFERENCE_EVAL_SQUAD / _HOTPOTQA for RULER QA
    MINFERENCE_EVAL_ARGS     extra ``minference eval`` arguments (e.g. ``--rope-scaling 2``)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from minference.evals import cli as eval_cli
from minference.evals.models import model_name
from minference.evals.report import finished_tasks
from minference.evals.results import ResultStore
from minference.evals.runner import ppl_by_method

THRESHOLDS = Path(__file__).with_name("thresholds.toml")
DEFAULT_METHODS = "dense,minference,minference@0.1"
# The shipped models' thresholds come from these methods and grids (thresholds.toml); other budgets or grids would
# judge other rows. Per benchmark, extra ``minference eval`` arguments.
SHIPPED_RUNS = {
    "smollm2-135m-instruct": {"methods": "dense,minference,minference:smollm2-135m-instruct,minference@0.3"},
    "qwen2.5-coder-0.5b-instruct": {
        "methods": "dense,minference:qwen2.5-coder-0.5b-instruct,minference:qwen2.5-coder-0.5b-instruct-mixed-d0.3,"
                   "minference",
        "needle": ["--depths", "0,25,50,75,100"],
        "ruler": ["--samples", "3"],
        "infinitebench": ["--samples", "3"],
        "ppl": ["--samples", "2"],
    },
}


def _shipped_run() -> dict:
    return SHIPPED_RUNS.get(model_name(os.environ.get("MINFERENCE_EVAL_MODEL")), {})


def _shipped_arguments(benchmark: str, keep_samples: bool) -> list:
    """The shipped model's grid arguments for ``benchmark``; ``--samples`` dropped when the caller sets its own."""
    extra = list(_shipped_run().get(benchmark, []))
    if not keep_samples and "--samples" in extra:
        at = extra.index("--samples")
        del extra[at : at + 2]
    return extra


def default_methods() -> str:
    """The methods a run compares when ``MINFERENCE_EVAL_METHODS`` is unset."""
    return _shipped_run().get("methods", DEFAULT_METHODS)


def thresholds(benchmark: str) -> list:
    """``(task, length, min_score, max_drop, method)`` for the configured model and ``benchmark``.

    ``method`` is None for a row every sparse method must meet; a task's sub-table named by a method label holds
    that method's own (tighter) rows, checked on top."""
    table = tomllib.loads(THRESHOLDS.read_text())
    model = model_name(os.environ.get("MINFERENCE_EVAL_MODEL"))
    rows = []
    for task, per_length in table.get(model, {}).get(benchmark, {}).items():
        for key, limit in per_length.items():
            if key.isdigit():
                rows.append((task, int(key), float(limit["min_score"]), float(limit["max_drop"]), None))
            else:
                rows += [(task, int(length), float(own["min_score"]), float(own["max_drop"]), key)
                         for length, own in limit.items()]
    return rows


def run_benchmark(benchmark: str, lengths, tasks=None) -> ResultStore:
    """Run (or resume) ``minference eval BENCHMARK`` for the configured model and return its store."""
    argv = [
        "eval",
        benchmark,
        "--lengths",
        ",".join(map(str, sorted(set(lengths)))),
        "--methods",
        os.environ.get("MINFERENCE_EVAL_METHODS") or default_methods(),
        "--out",
        os.environ.get("MINFERENCE_EVAL_OUT", "results/evals"),
    ]
    if os.environ.get("MINFERENCE_EVAL_MODEL"):
        argv += ["--model", os.environ["MINFERENCE_EVAL_MODEL"]]
    if tasks is not None:
        argv += ["--tasks", ",".join(tasks)]
    samples = os.environ.get("MINFERENCE_EVAL_SAMPLES")
    if samples and benchmark != "needle":
        argv += ["--samples", samples]
    if benchmark == "infinitebench" and os.environ.get("MINFERENCE_EVAL_DATA"):
        argv += ["--data-dir", os.environ["MINFERENCE_EVAL_DATA"]]
    if benchmark == "ruler":
        for flag, env in (("--squad", "MINFERENCE_EVAL_SQUAD"), ("--hotpotqa", "MINFERENCE_EVAL_HOTPOTQA")):
            if os.environ.get(env):
                argv += [flag, os.environ[env]]
    if benchmark == "needle":
        argv += ["--question-first"]
    argv += _shipped_arguments(benchmark, keep_samples=not samples)
    argv += shlex.split(os.environ.get("MINFERENCE_EVAL_ARGS", ""))
    parser = argparse.ArgumentParser()
    eval_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.run(args)
    stem = Path(args.out) / f"{benchmark}-{model_name(args.model)}.json"
    return ResultStore(stem)


def cell_scores(store: ResultStore, task: str, length: int) -> dict:
    """Method -> score of one (task, length) cell; ``average`` averages over the tasks every method finished,
    ``ppl`` gives perplexity."""
    if task == "ppl":
        return {m: points[length] for m, points in ppl_by_method(store).items() if length in points}
    scores = store.scores()
    # an average compares the tasks every method finished
    wanted = finished_tasks(store)[length] if task == "average" else {task}
    out = {}
    for method, cells in scores.items():
        values = [v for (t, n), v in cells.items() if n == length and t in wanted]
        if values:
            out[method] = sum(values) / len(values)
    return out


def check(store: ResultStore, task: str, length: int, min_score: float, max_drop: float,
          method: str | None = None) -> None:
    """Assert every sparse method's cell (or only ``method``'s) against the limits, printing the whole row on failure."""
    scores = cell_scores(store, task, length)
    if task in store.skipped:
        pytest.skip(store.skipped[task])
    assert "dense" in scores, f"no dense result for {task}@{length}: {json.dumps(scores)}"
    dense = scores["dense"]
    sparse = {m: s for m, s in scores.items() if m != "dense" and method in (None, m)}
    assert sparse, f"no {method or 'sparse method'} result for {task}@{length}: {json.dumps(scores)}"
    lower_is_better = task == "ppl"
    for label, score in sparse.items():
        if lower_is_better:
            increase = 100.0 * (score / dense - 1.0)
            assert score <= min_score and increase <= max_drop, (
                f"{label} {task}@{length}: ppl {score:.3f} vs dense {dense:.3f} (+{increase:.2f} %, limit {max_drop} %)"
            )
        else:
            assert score >= min_score and dense - score <= max_drop, (
                f"{label} {task}@{length}: {score:.1f} vs dense {dense:.1f} "
                f"(min {min_score}, max drop {max_drop}); all: {json.dumps(scores)}"
            )
