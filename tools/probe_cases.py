"""The ``CASES`` loop the vertical-slash probes share: ``N:index_set`` pairs from the environment, one row list per
case, the JSON rewritten after each case so a probe cut short by its time limit still leaves what it measured."""
import json
import os

import torch

from minference.bench.index_sets import load_head_stats


def run_cases(run_case, default_cases: str, filename: str) -> list:
    """``run_case(n, index_set, stats) -> rows`` for each case of ``CASES`` (default ``default_cases``), written
    to ``$OUT/filename``."""
    out_dir = os.environ.get("OUT", "/tmp")
    stats = load_head_stats()
    results = []
    for case in os.environ.get("CASES", default_cases).split(","):
        n, name = case.split(":")
        results += run_case(int(n), name, stats)
        torch.cuda.empty_cache()
        with open(os.path.join(out_dir, filename), "w") as f:
            json.dump(results, f, indent=1)
    return results
