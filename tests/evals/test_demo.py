"""``minference demo``: its defaults and the line that says how many tiles each sparse method skipped."""
import argparse

from minference.evals import demo
from minference.evals.results import ResultStore


def test_the_demo_reads_one_long_prompt_per_task_by_default():
    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers())
    args = parser.parse_args(["demo"])
    assert args.lengths == [3072] and args.depths == [25.0, 75.0] and args.passkeys == 0 and args.ppl_windows == 1
    assert args.gpu_length == [131072] and not args.no_gpu_timing


def test_skipped_tiles_are_reported_per_sparse_method_and_length(tmp_path):
    store = ResultStore(tmp_path / "demo.json")
    store.set_density("dense", 3072, {"density": 1.0, "tiles": 1.0})
    store.set_density("minference:smollm2-135m-instruct", 3072, {"density": None, "tiles": 0.3125})
    store.set_density("minference:smollm2-135m-instruct", 1024, {"density": None, "tiles": 0.75})
    assert demo._skipped_line(store) == (
        "minference:smollm2-135m-instruct skipped 25 % of the attention tiles at 1024 tokens; "
        "minference:smollm2-135m-instruct skipped 69 % of the attention tiles at 3072 tokens."
    )
    dense_only = ResultStore(tmp_path / "dense.json")
    dense_only.set_density("dense", 3072, {"density": 1.0, "tiles": 1.0})
    assert demo._skipped_line(dense_only) == "No method skipped attention tiles."
