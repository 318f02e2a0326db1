"""Offline kernel-aware pattern search: which pattern and budget each head should use, at what kernel cost.

>>> from minference.search import search                                          # doctest: +SKIP
>>> config = search(model, tokenizer, task="kv_retrieval", length=4096, target_density=0.3, work_dir="scores")

Pipeline: :mod:`.prompts` (calibration ids) -> :mod:`.capture` (dense forward, q/k/v per layer) ->
:mod:`.scoring` (per head and candidate: attention mass kept over all rows and over the last query block, output
error, kernel tiles from the index builders) -> :mod:`.choose` (equal-cost comparison on ``min`` of the two
recalls, global budget) -> :mod:`.runner` (resumable, config with provenance).
"""
from .candidates import TileCosts, candidate_space
from .capture import StopCapture, capture_layers
from .choose import best_at_cost, choose_budget, choose_min_recall, objective, summarize, upper_hull
from .prompts import calibration_ids
from .runner import SearchSettings, build_config, choose_config, load_table, score_examples, search
from .scoring import score_layer

__all__ = [
    "SearchSettings",
    "StopCapture",
    "TileCosts",
    "best_at_cost",
    "build_config",
    "calibration_ids",
    "candidate_space",
    "capture_layers",
    "choose_budget",
    "choose_config",
    "choose_min_recall",
    "load_table",
    "objective",
    "score_examples",
    "score_layer",
    "search",
    "summarize",
    "upper_hull",
]
