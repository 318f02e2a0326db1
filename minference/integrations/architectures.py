"""Which transformers architectures we patch, and where their parts live (a small quirk table by ``model_type``).

Every supported model runs its own attention module (projections, RoPE, cache update) and calls the registered
attention function, so the table only records where the decoder layers and their token-wise parts (norms, MLP)
are. What differs between them is handled by that attention call itself: Phi-3 fuses its q/k/v projection, Qwen3
normalises q and k per head, Mistral, Qwen2 and Phi-3 may pass a ``sliding_window``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """Attribute paths inside a ``*ForCausalLM`` model (dotted, from the model) and inside each decoder layer."""

    layers: str = "model.layers"
    attention: str = "self_attn"
    mlp: str = "mlp"
    norms: tuple = ("input_layernorm", "post_attention_layernorm")
    final_norm: str = "model.norm"
    sliding_window: bool = False
    """Whether some configs of this family use sliding-window layers (served exactly, see ``hf.attention_forward``)."""


ARCHITECTURES = {
    "llama": Architecture(),
    "mistral": Architecture(sliding_window=True),
    "qwen2": Architecture(sliding_window=True),
    "qwen3": Architecture(sliding_window=True),
    "phi3": Architecture(sliding_window=True),
}
"""``config.model_type`` -> :class:`Architecture`."""


def _get_path(root, path: str):
    for name in path.split("."):
        root = getattr(root, name)
    return root


def architecture(model) -> Architecture:
    """The quirk-table entry of a transformers model.

    Raises:
        TypeError: ``model`` has no ``config.model_type``.
        ValueError: the architecture is not supported (the message lists the supported ones).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type is None:
        raise TypeError(f"model must be a transformers model with config.model_type, got {type(model).__name__}")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model_type {model_type!r} is not supported by minference; supported: {sorted(ARCHITECTURES)}"
        )
    return ARCHITECTURES[model_type]


def decoder_layers(model, arch: Architecture) -> list:
    """The model's decoder layers, in order.

    Raises:
        ValueError: the model lacks the attribute path the quirk table names.
    """
    try:
        return list(_get_path(model, arch.layers))
    except AttributeError:
        raise ValueError(
            f"model {type(model).__name__} has no {arch.layers!r}; pass the *ForCausalLM model, not a sub-module"
        ) from None


def final_norm(model, arch: Architecture):
    """The norm after the last layer, or ``None`` when the model has none at that path."""
    try:
        return _get_path(model, arch.final_norm)
    except AttributeError:
        return None
