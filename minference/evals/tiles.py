"""Executed-tile density of a method on a prompt: the 64x64 tiles its kernels would load, as a fraction of dense's.

One dense forward with a recording attention function: every layer's real q and k go through the method's online
estimation and index builders (:func:`minference.bench.e2e.head_density`), and the layer still returns dense
attention, so all methods are measured on the same activations. Estimation work is not counted. This is the cost
measure that compares any config with uniform budgets (the eval probe's density covers uniform budgets only).
"""

from __future__ import annotations

import statistics

import torch

from .methods import CONFIG_TYPES, Method
from .models import LoadedModel, method_config, minference_available

PROBE_TYPE = "_evals_tile_probe"


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
    from ..bench.e2e import head_density
    from ..integrations import hf

    model = loaded.model
    config = method_config(model, method, budgets)
    per_layer: dict[int, float] = {}

    def recording(q, k, v, *, settings, seqlens, scaling, module):
        per_layer[module.layer_idx] = statistics.fmean(head_density(q, k, settings.patterns))
        return hf.dense_prefill(q, k, v, settings=settings, seqlens=seqlens, scaling=scaling)

    hf.register_attention_type(PROBE_TYPE, recording)
    minference.unpatch(model)
    try:
        minference.patch(model, config=config, attn_type=PROBE_TYPE, dense_below=0, dense_above=None)
        with torch.inference_mode():
            model(ids.to(model.device), use_cache=False, logits_to_keep=1)
    finally:
        minference.unpatch(model)
        del hf.ATTENTION_TYPES[PROBE_TYPE]
    return statistics.fmean(per_layer.values()) if per_layer else None
