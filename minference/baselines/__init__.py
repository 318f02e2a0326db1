"""The methods the MInference experiments compare against, as attention types of :func:`minference.patch`.

Importing this package (``import minference`` does) registers, with their published defaults:

============================  ==========================================================================
``streaming``                 StreamingLLM: every head A-shape, 128 sinks + 3968 local (:mod:`.streaming`)
``streaming_dilated``         1024 sinks + every other tile-diagonal of the last 8192 offsets
``streaming_strided``         1024 sinks + 2048 local + every other tile-diagonal up to offset 6144
``inf_llm``                   InfLLM: chunks of 512 attend to 128 initial tokens, a 4096 window and the top-16
                              retrieved 128-token memory blocks (:mod:`.inf_llm`)
``minference_static``         MInference with vertical-slash indices estimated on the first prompt only
                              (:mod:`.static`)
============================  ==========================================================================

``dense`` and ``minference`` are the integration's own types. Other settings of a baseline are another registered
type, e.g. ``register_attention_type("inf_llm_topk32", InfLLM(top_k=32))``.
"""
from ..integrations.hf import register_attention_type
from .inf_llm import InfLLM
from .static import StaticMInference
from .static import reset as reset_static
from .streaming import DILATED, STRIDED, SpacedStreaming, StreamingLLM

BASELINES = {
    "streaming": StreamingLLM(),
    "streaming_dilated": DILATED,
    "streaming_strided": STRIDED,
    "inf_llm": InfLLM(),
    "minference_static": StaticMInference(),
}
"""Attention type name -> prefill callable, as registered."""

for _name, _prefill in BASELINES.items():
    register_attention_type(_name, _prefill)

__all__ = ["BASELINES", "InfLLM", "SpacedStreaming", "StaticMInference", "StreamingLLM", "reset_static"]
