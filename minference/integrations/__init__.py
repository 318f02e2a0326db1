"""Framework integrations. Importing this package registers the ``"minference"`` attention with transformers."""
from .hf import (
    ATTENTION_TYPES,
    ATTN_IMPLEMENTATION,
    DEFAULT_DENSE_BELOW,
    LayerSettings,
    is_patched,
    patch,
    register_attention_type,
    unpatch,
)

__all__ = [
    "ATTENTION_TYPES",
    "ATTN_IMPLEMENTATION",
    "DEFAULT_DENSE_BELOW",
    "LayerSettings",
    "is_patched",
    "patch",
    "register_attention_type",
    "unpatch",
]
