"""Repository-wide pytest set-up.

The Triton interpreter must be chosen before any kernel module is imported, so it is decided here, at the very
start of collection: without a CUDA device the kernels run under ``TRITON_INTERPRET=1`` on the CPU.
"""
import os


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if not _cuda_visible():
    os.environ.setdefault("TRITON_INTERPRET", "1")

MARKERS_NEEDING_TIME_OR_GPU = ("gpu", "bench", "eval", "slow")


def pytest_collection_modifyitems(config, items):
    """Without an explicit ``-m``, deselect what needs a GPU or a long time (CI and laptops)."""
    if config.getoption("-m"):
        return
    kept, deselected = [], []
    for item in items:
        heavy = any(item.get_closest_marker(name) for name in MARKERS_NEEDING_TIME_OR_GPU)
        (deselected if heavy else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
