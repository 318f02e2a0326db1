"""The vLLM attention backends behind :mod:`minference.integrations.vllm` (this module imports vLLM).

``CPU_ATTN``, ``FLASH_ATTN`` and ``TRITON_ATTN`` here are subclasses of vLLM's backends of those names, made on first
use (the module's ``__getattr__``, which vLLM's registry reaches through the class path). Each keeps its parent's
name, cache layout, block sizes and K/V cache update; only two pieces change:

- the metadata builder marks the requests of a step that run sparse (a whole prompt, no cached context, at least
  ``dense_below`` tokens) and builds, with the parent's own builder, the metadata of the other requests alone;
- the attention impl runs :func:`minference.sparse_attention` on the marked requests' q/k/v (one request at a time:
  ``(1, H, n, D)`` views of the step's token-major tensors) and the parent's kernel on the other requests.

Without ``additional_config["minference"]`` both pieces hand every call straight to the parent.
"""
from __future__ import annotations

import threading
from typing import Optional

import torch

from ..ops import sparse_attention
from . import vllm as integration

STATS = {"sparse_requests": 0, "sparse_tokens": 0, "sparse_layer_calls": 0, "dense_layer_calls": 0}
"""Counters of this process (layer calls that ran sparse / vLLM's kernel); tests read them with the engine in-process."""
_STATS_LOCK = threading.Lock()


def _count(**increments) -> None:
    with _STATS_LOCK:
        for key, value in increments.items():
            STATS[key] += value


def reset_stats() -> None:
    """Zero :data:`STATS`."""
    with _STATS_LOCK:
        for key in STATS:
            STATS[key] = 0


def current_settings(vllm_config=None) -> Optional[integration.EngineSettings]:
    """The settings of the engine being built (``None``: MInference is off), validated against its model.

    Raises:
        TypeError, ValueError: as :func:`minference.integrations.vllm.parse_settings`.
    """

    if vllm_config is None:
        from vllm.config import get_current_vllm_config

        vllm_config = get_current_vllm_config()
    extra = getattr(vllm_config, "additional_config", None) or {}
    data = extra.get(integration.ADDITIONAL_CONFIG_KEY) if isinstance(extra, dict) else None
    if data is None:
        return None
    return integration.parse_settings(data, vllm_config.model_config.hf_config)


# ----------------------------------------------------------------------------------------------------------------
# Metadata: which requests run sparse, and the parent's metadata for the others


def sparse_requests(query_start_loc_cpu: torch.Tensor, seq_lens_cpu: torch.Tensor, dense_below: int) -> list:
    """``[(request, first_token, end_token)]`` of the requests that run sparse this step.

    Args:
        query_start_loc_cpu: ``(R + 1,)`` token offsets of the step's requests.
        seq_lens_cpu: ``(R,)`` tokens of each request after this step (context + scheduled).
        dense_below: shorter prompts stay dense.

    A request runs sparse when this step holds its whole sequence so far (no cached context: neither a decode, a
    later chunk of a chunked prefill, nor a prefix-cache hit) and at least ``max(dense_below, 1)`` tokens.
    """
    starts = query_start_loc_cpu.tolist()
    lengths = seq_lens_cpu.tolist()
    spans = []
    for r, length in enumerate(lengths):
        n = starts[r + 1] - starts[r]
        if n >= max(dense_below, 1) and n == length:
            spans.append((r, starts[r], starts[r + 1]))
    return spans


def _subset(common, keep: list, token_index: torch.Tensor):
    """``CommonAttentionMetadata`` of requests ``keep`` only (their tokens ``token_index``, in order)."""
    device = common.query_start_loc.device
    starts = common.query_start_loc_cpu.tolist()
    lengths = [starts[r + 1] - starts[r] for r in keep]
    qsl_cpu = torch.zeros(len(keep) + 1, dtype=common.query_start_loc_cpu.dtype)
    qsl_cpu[1:] = torch.cumsum(torch.tensor(lengths, dtype=qsl_cpu.dtype), 0)
    rows = torch.tensor(keep, dtype=torch.long)
    rows_dev = rows.to(device)
    tokens_dev = token_index.to(common.slot_mapping.device)

    def per_request(value):
        if value is None:
            return None
        if isinstance(value, torch.Tensor):
            return value.index_select(0, rows_dev if value.device == device else rows.to(value.device))
        return value[keep]  # numpy arrays

    seq_lens = common.seq_lens.index_select(0, rows_dev)
    upper = per_request(common.seq_lens_cpu_upper_bound)
    max_seq = int((upper if upper is not None else seq_lens).max()) if keep else 0
    fields = dict(
        query_start_loc=qsl_cpu.to(device), query_start_loc_cpu=qsl_cpu, seq_lens=seq_lens, num_reqs=len(keep),
        num_actual_tokens=int(token_index.numel()), max_query_len=max(lengths), max_seq_len=max_seq,
        block_table_tensor=common.block_table_tensor.index_select(0, rows_dev),
        slot_mapping=common.slot_mapping.index_select(0, tokens_dev),
        seq_lens_cpu_upper_bound=upper, is_prefilling=per_request(common.is_prefilling),
        req_idx=per_request(common.req_idx), encoder_seq_lens=per_request(common.encoder_seq_lens),
        encoder_seq_lens_cpu=per_request(common.encoder_seq_lens_cpu),
        dcp_local_seq_lens=per_request(common.dcp_local_seq_lens),
        dcp_local_seq_lens_cpu_upper_bound=per_request(common.dcp_local_seq_lens_cpu_upper_bound),
        positions=None if common.positions is None else common.positions.index_select(0, tokens_dev),
        logits_indices_padded=None, num_logits_indices=None, max_logits_per_req=None,
        _num_computed_tokens_cache=None, _token_to_req_indices_cache=None,
    )
    if isinstance(common.causal, torch.Tensor):
        fields["causal"] = common.causal.index_select(0, rows_dev)
    return common.replace(**fields)


class SparsePrefillBuilder:
    """Mixin before a vLLM metadata builder: the parent's metadata, plus ``minference_spans`` (the sparse requests'
    token ranges), ``minference_rest`` (the parent's metadata of the other requests, ``None`` when there are none)
    and ``minference_rest_index`` (their token indices)."""

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device, *args, **kwargs):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device, *args, **kwargs)
        self.minference_settings = current_settings(vllm_config)

    def build(self, common_prefix_len, common_attn_metadata, fast_build: bool = False):
        metadata = super().build(common_prefix_len, common_attn_metadata, fast_build)
        if self.minference_settings is None:
            return metadata
        common = common_attn_metadata
        seq_lens_cpu = common.seq_lens_cpu_upper_bound  # exact on prefill rows, which are the ones that matter
        if seq_lens_cpu is None:
            seq_lens_cpu = common.seq_lens.cpu()
        spans = sparse_requests(common.query_start_loc_cpu, seq_lens_cpu, self.minference_settings.dense_below)
        metadata.minference_spans = tuple((start, end) for _, start, end in spans)
        metadata.minference_rest = None
        metadata.minference_rest_index = None
        if spans:
            sparse = {r for r, _, _ in spans}
            keep = [r for r in range(common.num_reqs) if r not in sparse]
            if keep:
                starts = common.query_start_loc_cpu.tolist()
                index = torch.cat([torch.arange(starts[r], starts[r + 1]) for r in keep])
                metadata.minference_rest = super().build(0, _subset(common, keep, index), fast_build)
                metadata.minference_rest_index = index.to(common.query_start_loc.device)
        return metadata


class SparsePrefillImpl:
    """Mixin before a vLLM attention impl: the marked requests run their heads' patterns, the rest the parent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.minference_settings = current_settings()
        self._minference_patterns = {}  # layer name -> this rank's heads' patterns, or None (layer stays dense)

    def _layer_patterns(self, layer) -> Optional[tuple]:
        name = getattr(layer, "layer_name", None)
        if name in self._minference_patterns:
            return self._minference_patterns[name]
        patterns = None
        if name is not None and self._sparse_capable():
            from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
            from vllm.model_executor.models.utils import extract_layer_index

            layer_index = extract_layer_index(name)
            layers = self.minference_settings.config.layers
            if not 0 <= layer_index < len(layers):
                raise ValueError(f"attention layer {name!r} has index {layer_index}, the config has {len(layers)} layers")
            patterns = integration.rank_patterns(
                layers[layer_index], self.num_heads, get_tensor_model_parallel_rank(),
                get_tensor_model_parallel_world_size(),
            )
        self._minference_patterns[name] = patterns
        return patterns

    def _sparse_capable(self) -> bool:
        """Causal decoder self-attention without window, ALiBi, softcap or sinks: what the patterns compute."""
        from vllm.v1.attention.backend import AttentionType

        window = getattr(self, "sliding_window", None)
        softcap = getattr(self, "logits_soft_cap", None)
        return (
            getattr(self, "attn_type", AttentionType.DECODER) == AttentionType.DECODER
            and window in (None, -1, (-1, -1))
            and getattr(self, "alibi_slopes", None) is None
            and not softcap
            and getattr(self, "sinks", None) is None
        )

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output=None, output_scale=None,
                output_block_scale=None, **kwargs):
        spans = getattr(attn_metadata, "minference_spans", None) if attn_metadata is not None else None
        patterns = None
        if spans and key is not None and value is not None and output_scale is None and output_block_scale is None:
            patterns = self._layer_patterns(layer)
        if patterns is None:
            _count(dense_layer_calls=1)
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output=output,
                                   output_scale=output_scale, output_block_scale=output_block_scale, **kwargs)
        rest = attn_metadata.minference_rest
        if rest is not None:
            # vLLM's kernel on the other requests: their tokens gathered, the parent's metadata built for them alone
            index = attn_metadata.minference_rest_index
            rest_out = output.new_empty((index.numel(), *output.shape[1:]))
            super().forward(layer, query.index_select(0, index), key.index_select(0, index),
                            value.index_select(0, index), kv_cache, rest, output=rest_out, **kwargs)
            output.index_copy_(0, index, rest_out)
            _count(dense_layer_calls=1)
        settings = self.minference_settings
        for start, end in spans:
            # token-major (n, H, D) -> (1, H, n, D) views; the patterns see exactly this prompt, causal from token 0
            q = query[start:end].view(end - start, self.num_heads, -1).transpose(0, 1).unsqueeze(0)
            k = key[start:end].transpose(0, 1).unsqueeze(0)
            v = value[start:end].transpose(0, 1).unsqueeze(0)
            out = sparse_attention(
                q, k, v, list(patterns), sm_scale=self.scale, backend=settings.backend, validate=False,
                dense_above=settings.dense_above, vertical_slash_tile=settings.vertical_slash_tile,
            )
            output[start:end].view(end - start, self.num_heads, -1).copy_(out[0].transpose(0, 1))
            _count(sparse_tokens=end - start)
        _count(sparse_layer_calls=1, sparse_requests=len(spans))
        return output


def _wrap(name: str):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.utils.import_utils import resolve_obj_by_qualname

    base = resolve_obj_by_qualname(AttentionBackendEnum[name].value)  # the default path, not the override
    if base.forward_includes_kv_cache_update:
        raise TypeError(f"{name} writes the K/V cache inside forward; the sparse prefill cannot wrap it")
    base_impl, base_builder = base.get_impl_cls(), base.get_builder_cls()
    impl = type(f"MInference{base_impl.__name__}", (SparsePrefillImpl, base_impl), {"__module__": __name__})
    builder = type(f"MInference{base_builder.__name__}", (SparsePrefillBuilder, base_builder),
                   {"__module__": __name__})
    backend = type(name, (base,), {
        "__module__": __name__,
        "__doc__": f"vLLM's {name} with MInference sparse prefill (see minference.integrations.vllm).",
        "get_impl_cls": staticmethod(lambda: impl),
        "get_builder_cls": staticmethod(lambda: builder),
    })
    return backend


_WRAPPED = {}
_WRAP_LOCK = threading.Lock()


def __getattr__(name: str):
    # checked before anything imports vLLM: the import system asks for names such as __path__ here too
    if name not in integration.WRAPPED_BACKENDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _WRAP_LOCK:
        if name not in _WRAPPED:
            _WRAPPED[name] = _wrap(name)
        return _WRAPPED[name]
