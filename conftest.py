"""Repository-wide pytest set-up.

The Triton interpreter must be chosen before any kernel module is imported, so it is decided here, at the very
start of collection: without a CUDA device the kernels run under ``TRITON_INTERPRET=1`` on the CPU.
"""
import os
from pathlib import Path


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if not _cuda_visible():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:  # GPU runs pay a Triton compile per new shape: "no-shrink" reports the first failing example as drawn
    from hypothesis import Phase, settings

    settings.register_profile("no-shrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])
except ImportError:  # the main-job install has no hypothesis
    pass

def pytest_addoption(parser):
    parser.addoption(
        "--eval-model",
        default=None,
        help="model whose thresholds the eval suites assert (smollm2, qwen2.5-coder-0.5b, a .gguf file or a "
        "checkpoint folder); the same as MINFERENCE_EVAL_MODEL (evals/harness.py)",
    )


def pytest_configure(config):
    model = config.getoption("--eval-model")
    if model:  # before collection: each eval suite reads its thresholds when it is imported
        os.environ["MINFERENCE_EVAL_MODEL"] = model


MARKERS_NEEDING_TIME_OR_GPU = ("gpu", "bench", "eval", "slow", "vllm")  # vllm: minutes of real engines
SUITES = ("bench", "evals")


def _inside_suites(config, arg: str) -> bool:
    path = (Path(config.invocation_params.dir) / str(arg).split("::")[0]).resolve()
    try:
        return path.relative_to(config.rootpath).parts[:1] in {(suite,) for suite in SUITES}
    except ValueError:
        return False


def pytest_collection_modifyitems(config, items):
    """Without an explicit ``-m``, deselect what needs a GPU or a long time (CI and laptops), unless the run names
    only the benchmark or eval suites (``pytest bench/ --benchmark-compare`` means what it says)."""
    if config.getoption("-m"):
        return
    if config.args and all(_inside_suites(config, arg) for arg in config.args):
        return
    kept, deselected = [], []
    for item in items:
        heavy = any(item.get_closest_marker(name) for name in MARKERS_NEEDING_TIME_OR_GPU)
        (deselected if heavy else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
