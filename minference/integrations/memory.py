"""Memory for million-token prefill on one GPU: token-chunked norms and MLPs, last-token logits, KV cache on CPU.

At 1M tokens with Llama-3-8B shapes (bf16) one hidden state is 8 GB, an RMSNorm's float32 copy 16 GB and the MLP's
three 14336-wide activations 86 GB; the full-vocabulary logits would be 256 GB. Attention itself is never ``N x N``
(the kernels stream keys, and no ``repeat_kv`` copies are made). What remains is handled here:

- :func:`chunk_tokenwise` runs every norm and MLP over ``chunk_size`` tokens at a time, writing into one output;
- :func:`prefill` calls the model with ``logits_to_keep=1`` (only the last position's logits);
- :func:`use_cpu_kv_cache` / :func:`offloaded_cache` keep the KV cache on the CPU during ``generate``;
  :func:`cache_keyword` names the argument a direct forward call passes a cache by.
"""
from __future__ import annotations

import functools
import inspect
from typing import Optional

import torch

from .architectures import architecture, decoder_layers, final_norm

DEFAULT_CHUNK_SIZE = 65536
"""Tokens per norm/MLP chunk: 64K x 14336 x 3 bf16 activations = 5.6 GB for Llama-3-8B."""

_BEFORE_ATTR = "_minference_forward_before"
_NO_INSTANCE_FORWARD = object()


def _chunked(forward, chunk_size: int):
    @functools.wraps(forward)
    def chunked_forward(hidden_states, *args, **kwargs):
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() < 3 or hidden_states.shape[1] <= chunk_size:
            return forward(hidden_states, *args, **kwargs)
        n = hidden_states.shape[1]
        first = forward(hidden_states[:, :chunk_size], *args, **kwargs)
        out = first.new_empty((first.shape[0], n) + tuple(first.shape[2:]))
        out[:, :chunk_size] = first
        del first
        for start in range(chunk_size, n, chunk_size):
            out[:, start : start + chunk_size] = forward(hidden_states[:, start : start + chunk_size], *args, **kwargs)
        return out

    return chunked_forward


def _tokenwise_modules(model) -> list:
    arch = architecture(model)
    modules = []
    for layer in decoder_layers(model, arch):
        modules.append(getattr(layer, arch.mlp))
        modules.extend(getattr(layer, name) for name in arch.norms)
    norm = final_norm(model, arch)
    if norm is not None:
        modules.append(norm)
    return modules


def chunk_tokenwise(model, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Run each decoder layer's norms and MLP, and the final norm, over ``chunk_size`` tokens at a time.

    Exact (these modules act on each token independently). Wraps whatever ``forward`` the module has now, so
    accelerate hooks keep working; :func:`unchunk_tokenwise` restores it.

    Args:
        model: a supported ``*ForCausalLM`` (see :mod:`minference.integrations.architectures`).
        chunk_size: tokens per chunk, ``>= 1``.

    Returns:
        The number of modules wrapped.

    Raises:
        TypeError, ValueError: bad ``chunk_size`` or unsupported model.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    unchunk_tokenwise(model)
    modules = _tokenwise_modules(model)
    for module in modules:
        module.__dict__[_BEFORE_ATTR] = module.__dict__.get("forward", _NO_INSTANCE_FORWARD)
        module.forward = _chunked(module.forward, chunk_size)
    return len(modules)


def unchunk_tokenwise(model) -> int:
    """Undo :func:`chunk_tokenwise`; returns the number of modules restored (0 when none were chunked)."""
    restored = 0
    for module in _tokenwise_modules(model):
        before = module.__dict__.pop(_BEFORE_ATTR, None)
        if before is None:
            continue
        if before is _NO_INSTANCE_FORWARD:
            del module.forward
        else:
            module.forward = before
        restored += 1
    return restored


def use_cpu_kv_cache(model, enable: bool = True) -> None:
    """Make ``model.generate`` keep the KV cache on the CPU (transformers' ``"offloaded"`` cache: each layer's
    K/V move to the GPU only while that layer runs). At 1M tokens an 8B model's cache is 128 GB.
    """
    model.generation_config.cache_implementation = "offloaded" if enable else None


def offloaded_cache(model):
    """A transformers cache that keeps K/V on the CPU, for direct ``model(..., **{cache_keyword(model): cache})``
    calls."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config, offloading=True)
    except TypeError:  # transformers 4.5x: a separate class
        from transformers import OffloadedCache

        return OffloadedCache()


def cache_keyword(model) -> str:
    """The name a model's ``forward`` takes its KV cache by, and its output returns it as: ``cache`` in newer
    transformers (5.24 warns that ``past_key_values`` goes in 5.40), ``past_key_values`` in older ones (5.17)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kwargs):
    """One prefill forward that keeps only the last position's logits (``logits_to_keep=1``) and, unless
    ``use_cache`` is passed, no cache.

    Args:
        input_ids: ``(B, N)`` token ids. attention_mask: optional ``(B, N)`` padding mask.

    Returns:
        The model output; ``logits`` is ``(B, 1, vocab)``.
    """
    kwargs.setdefault("use_cache", False)
    return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, **kwargs)
