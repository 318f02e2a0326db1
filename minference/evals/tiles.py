"""Executed-tile density of a method on a prompt: the tiles its kernels would load, as a fraction of dense's (64 x 64
tiles, or 128 x 128 for vertical-slash heads where the op runs them on that grid: CUDA half precision up to 256K).

One dense forward with a recording attention function: every layer's real q and k go through the method's online
estimation and index builders (:func:`minference.bench.e2e.layer_densities`), and the layer still returns dense
attention, so all methods are measured on the same activations. Estimation work is not counted. This is the cost
measure that compares any config with uniform budgets (the eval probe's density covers uniform budgets only).
"""

from __future__ import annotations

import statistics

import torch

from .methods import CONFIG_TYPES, Method
from .models import LoadedModel, method_config, minference_available


def executed_tiles(loaded: LoadedModel, method: Method, ids: torch.Tensor, budgets: tuple | None = None):
    """Mean over layers and heads of the executed-tile density of ``method`` on ``ids (1, N)``.

    1.0 for dense; None for attention types without a per-head config (``streaming``, ``inf_llm`` ...) or without
    the model integration. ``budgets`` are the matched-density ``(vertical, slash)``, as for
    :func:`~minference.evals.models.apply_attention`.
    """
    if method.is_dense:
        return 1.0
    if method.attn_type not in CONFIG_TYPES or not minference_available():
        return None
    import minference

    from ..bench.e2e import layer_densities
    from ..integrations import hf

    model = loaded.model
    minference.unpatch(model)
    per_layer = layer_densities(
        model,
        method_config(model, method, budgets),
        lambda: model(ids.to(model.device), use_cache=False, logits_to_keep=1),
        prefill=hf.dense_prefill,
        dense_below=0,
        dense_above=None,
    )
    return statistics.fmean(per_layer.values()) if per_layer else None
