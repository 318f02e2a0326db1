"""minference: fast long-context pre-filling with dynamic sparse attention.

>>> import minference as mi
>>> out = mi.sparse_attention(q, k, v, mi.VerticalSlash(vertical=1000, slash=6096))  # doctest: +SKIP
"""
# Importing baselines registers the comparison attention types (streaming, inf_llm, ...) with patch().
from . import baselines, config, ops, reference
from .integrations import patch, unpatch
from .ops import sparse_attention
from .patterns import AShape, BlockSparse, Dense, VerticalSlash

__version__ = "0.1.0"

__all__ = [
    "sparse_attention", "AShape", "VerticalSlash", "BlockSparse", "Dense", "ops", "reference", "config", "patch",
    "unpatch", "baselines", "__version__",
]
