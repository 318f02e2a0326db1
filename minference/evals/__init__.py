"""Accuracy evals for sparse attention: needle in a haystack, RULER, InfiniteBench and perplexity.

Each benchmark is one module that turns data into prompts (``Example``) and scores answers; :mod:`.runner`
generates with a model under an attention method and keeps resumable JSON results; :mod:`.models` loads models
(any local checkpoint or hub id, or the offline default SmolLM2-135M-Instruct) and switches attention.
Nothing here downloads a dataset at run time: synthetic tasks are generated from a seed, natural text comes from
a registry package (:mod:`.text`) or a local path.
"""

from .example import Example
from .methods import Method, parse_methods

__all__ = ["Example", "Method", "parse_methods"]
