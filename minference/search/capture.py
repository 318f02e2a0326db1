"""Run a transformers model densely and hand each layer's q, k, v (after RoPE) to a callback.

The hook is an attention function registered with transformers' ``AttentionInterface`` as ``minference_capture``:
it passes ``(layer_idx, q (B, Hq, N, D), k (B, Hkv, N, D), v, scaling)`` to the active callback and then computes
the layer's output with transformers' SDPA attention, so the forward stays dense and exact. Nothing is stored
here: the callback decides what to keep (the search scores the layer and drops it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

CAPTURE_NAME = "minference_capture"

LayerCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float | None], None]
"""``callback(layer_idx, q, k, v, scaling)``; raising :class:`StopCapture` ends the forward early."""

_callbacks: list = []


class StopCapture(Exception):
    """Raised by a callback once it has every layer it needs; :func:`capture_layers` swallows it."""


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _callbacks:
        _callbacks[-1](module.layer_idx, query, key, value, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CAPTURE_NAME, _capture_attention)
    try:  # transformers >= 4.53 builds masks per attention implementation
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    except ImportError:
        return
    ALL_MASK_ATTENTION_FUNCTIONS.register(CAPTURE_NAME, sdpa_mask)


def _set_implementation(model, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # older transformers read the config attribute at every forward
        model.config._attn_implementation = name


@contextmanager
def _attention_implementation(model, name: str):
    previous = model.config._attn_implementation
    _set_implementation(model, name)
    try:
        yield
    finally:
        _set_implementation(model, previous)


def capture_layers(model, input_ids: Sequence[int], callback: LayerCallback) -> bool:
    """Run ``model`` on one sequence of ``input_ids`` and call ``callback`` for every attention layer, in order.

    Args:
        model: a transformers causal LM whose attention goes through ``AttentionInterface`` (Llama, Qwen2, Mistral,
            Phi-3, ...); its layers must carry ``layer_idx``.
        input_ids: the token ids of one prompt.
        callback: see :data:`LayerCallback`.

    Returns:
        ``True`` if the forward ran to the end, ``False`` if the callback stopped it with :class:`StopCapture`.

    Raises:
        TypeError: ``callback`` is not callable.
        ValueError: ``input_ids`` is empty.
    """
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if len(input_ids) == 0:
        raise ValueError("input_ids must not be empty")
    _register()
    device = next(model.parameters()).device
    ids = torch.as_tensor(list(input_ids), dtype=torch.long, device=device).view(1, -1)
    _callbacks.append(callback)
    try:
        with _attention_implementation(model, CAPTURE_NAME), torch.no_grad():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        return True
    except StopCapture:
        return False
    finally:
        _callbacks.pop()
