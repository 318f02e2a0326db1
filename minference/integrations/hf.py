"""Transformers integration: the ``"minference"`` attention implementation, and ``patch`` / ``unpatch``.

Importing this module registers :func:`attention_forward` with transformers' ``AttentionInterface`` (and a mask
function with ``AttentionMaskInterface`` where it exists), so ``from_pretrained(..., attn_implementation="minference")``
works. The model keeps its own projections, RoPE and cache; only the attention call changes:

- prefill (query length == key length, i.e. no past): the layer's attention type (default ``"minference"``: each
  query head runs its configured pattern through :func:`minference.sparse_attention`);
- prompts shorter than ``dense_below`` tokens, and layers whose estimated indices would execute more than
  ``dense_above`` of the causal tiles: exact dense attention;
- decode and chunked continuation (query shorter than the keys): dense SDPA over the cache;
- padded batches: right or left padding (a contiguous run of real tokens per row) are exact; other masks raise.

Per-layer settings live on each attention module (``module.minference_settings``); a module without them (a model
loaded with ``attn_implementation="minference"`` and never patched) uses the default config.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .. import config as config_mod
from ..index.vertical_slash import check_tile
from ..ops import sparse_attention
from ..planning import BACKENDS, check_dense_above
from ..patterns import AShape, Dense
from . import memory
from .architectures import architecture, decoder_layers

ATTN_IMPLEMENTATION = "minference"
"""The name registered with transformers' attention interface."""

DEFAULT_DENSE_BELOW = 32768
"""Prompts shorter than this stay dense. Measured on an H200 (docs/benchmarks.md): at 32K one vertical-slash layer
with the default budgets (1000, 6096) on local-heavy indices takes 13.7 ms (2.4 ms estimation + 11.3 ms kernel)
against cuDNN's 14.5 ms, so 32K is about where sparse starts to pay; below it, dense is faster."""

DEFAULT_DENSE_ABOVE = 0.6
"""Density fallback of :func:`minference.sparse_attention`: a layer whose estimated indices would execute more than
this fraction of the causal tiles runs dense. Measured on an H200 (docs/benchmarks.md, 128K): the sparse kernels
reach 308-368 TFLOP/s on the tiles they keep against cuDNN's 552 dense, so they stop paying at a density of about
0.56 (A-shape) to 0.67 (vertical-slash), before the estimation's 3 %."""

SETTINGS_ATTR = "minference_settings"
_PREVIOUS_ATTR = "_minference_previous"
MASK_BYTES = 1 << 28
"""Working memory of one row chunk of the dense-over-cache path (boolean mask and SDPA scores)."""


@dataclass(frozen=True)
class LayerSettings:
    """How one attention layer runs: per-query-head patterns, its attention type and the dense threshold."""

    patterns: tuple
    attn_type: str = "minference"
    dense_below: int = DEFAULT_DENSE_BELOW
    backend: str = "auto"
    dense_above: Optional[float] = DEFAULT_DENSE_ABOVE
    vertical_slash_tile: Optional[int] = None


PrefillFunction = Callable[..., torch.Tensor]
"""``fn(q, k, v, *, settings, seqlens, scaling, module) -> out``: q ``(B, Hq, N, D)``, k/v ``(B, Hkv, N, D)`` after
RoPE, ``seqlens`` ``(B,)`` int32 lengths of right-padded rows or ``None``; returns ``(B, Hq, N, D)`` (rows past a
length are ignored)."""


def minference_prefill(q, k, v, *, settings: LayerSettings, seqlens, scaling, module=None) -> torch.Tensor:
    """Each query head runs its configured pattern (grouped into one launch per pattern type)."""
    return sparse_attention(
        q, k, v, list(settings.patterns), seqlens=seqlens, sm_scale=scaling, backend=settings.backend,
        validate=False, dense_above=settings.dense_above, vertical_slash_tile=settings.vertical_slash_tile,
    )


def dense_prefill(q, k, v, *, settings: LayerSettings, seqlens, scaling, module=None) -> torch.Tensor:
    """Exact causal attention (SDPA when nothing is padded)."""
    return sparse_attention(q, k, v, Dense(), seqlens=seqlens, sm_scale=scaling, backend=settings.backend, validate=False)


ATTENTION_TYPES: dict = {"minference": minference_prefill, "dense": dense_prefill}
"""Attention type name -> prefill function (see :data:`PrefillFunction`). Decode always runs dense over the cache."""


def register_attention_type(name: str, prefill: PrefillFunction) -> None:
    """Make ``patch(model, attn_type=name)`` run ``prefill`` for prompts (other methods: streaming, InfLLM, ...).

    Raises:
        TypeError: ``name`` is not a string or ``prefill`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(prefill):
        raise TypeError(f"prefill must be callable, got {type(prefill).__name__}")
    ATTENTION_TYPES[name] = prefill


@functools.lru_cache(maxsize=None)
def _default_settings(heads: int) -> LayerSettings:
    return LayerSettings(tuple(config_mod.DEFAULT_PATTERN for _ in range(heads)))


def _settings_of(module) -> LayerSettings:
    settings = getattr(module, SETTINGS_ATTR, None)
    if settings is None:
        settings = _default_settings(config_mod.model_shape(module.config)[1])
    return settings


# ----------------------------------------------------------------------------------------------------------------
# Masks and padding


def _allowed_4d(mask: torch.Tensor) -> torch.Tensor:
    """A prepared ``(B, 1, q, k)`` mask (bool, or additive float with 0 = keep) as booleans."""
    return mask if mask.dtype == torch.bool else mask == 0


def _key_valid(attention_mask: Optional[torch.Tensor], k_len: int) -> Optional[torch.Tensor]:
    """``(B, k_len)`` booleans of real (non-padding) keys for a prefill, or ``None`` when nothing is padded."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 4:
        valid = _allowed_4d(attention_mask)[:, 0, -1, -k_len:]  # the last query row sees every real key
    elif attention_mask.dim() == 2:
        valid = attention_mask[:, -k_len:].bool()
    else:
        raise ValueError(f"attention_mask must be 2-D or 4-D, got shape {tuple(attention_mask.shape)}")
    if valid.shape[-1] != k_len:
        raise ValueError(f"attention_mask covers {valid.shape[-1]} keys but the prompt has {k_len} tokens")
    return None if bool(valid.all()) else valid


def _padding(valid: torch.Tensor):
    """``(seqlens, shift)`` for a padding mask whose real tokens are one contiguous run at either end per row.

    ``shift[b]`` is the number of leading pads (left padding), rolled away so that the kernels see right padding.

    Raises:
        ValueError: a row has no real token, or its real tokens are not contiguous at one end.
    """
    n = valid.shape[-1]
    counts = valid.sum(dim=-1)
    pos = torch.arange(n, device=valid.device).view(1, n)
    right = (valid == (pos < counts.view(-1, 1))).all(dim=-1)
    left = (valid == (pos >= (n - counts).view(-1, 1))).all(dim=-1)
    if bool((counts == 0).any()):
        raise ValueError(f"attention_mask: row(s) {torch.nonzero(counts == 0).flatten().tolist()} have no tokens")
    if not bool((right | left).all()):
        bad = torch.nonzero(~(right | left)).flatten().tolist()
        raise ValueError(
            f"attention_mask: row(s) {bad} mix padding and tokens; minference prefill supports right- or "
            "left-padded batches only"
        )
    shift = torch.where(right, torch.zeros_like(counts), n - counts)
    return counts.to(torch.int32), (None if bool((shift == 0).all()) else shift)


def _roll(x: torch.Tensor, shift: torch.Tensor, sign: int) -> torch.Tensor:
    """Rotate each batch row of ``x (B, H, N, D)`` left by ``sign * shift[b]`` positions along N."""
    batch, heads, n, dim = x.shape
    index = (torch.arange(n, device=x.device).view(1, n) + sign * shift.view(-1, 1)) % n
    return x.gather(2, index.view(batch, 1, n, 1).expand(batch, heads, n, dim))


# ----------------------------------------------------------------------------------------------------------------
# The attention function


def _prefill(module, q, k, v, attention_mask, scaling, window) -> torch.Tensor:
    settings = _settings_of(module)
    n = q.shape[2]
    valid = _key_valid(attention_mask, n)
    seqlens, shift = (None, None) if valid is None else _padding(valid)
    if shift is not None:
        q, k, v = (_roll(t, shift, 1) for t in (q, k, v))
    if window is not None:
        # A sliding-window layer is exactly an A-shape head without sinks: exact, and never N x N.
        out = sparse_attention(
            q, k, v, AShape(sink=0, local=window), seqlens=seqlens, sm_scale=scaling, backend=settings.backend,
            validate=False,
        )
    else:
        prefill = dense_prefill if n < settings.dense_below else ATTENTION_TYPES[settings.attn_type]
        out = prefill(q, k, v, settings=settings, seqlens=seqlens, scaling=scaling, module=module)
    if seqlens is not None:
        # Rows past a length are padding; zero them so nothing undefined leaks into the residual stream.
        pos = torch.arange(n, device=out.device).view(1, 1, n, 1)
        out = out.masked_fill(pos >= seqlens.view(-1, 1, 1, 1).to(out.device), 0)
    return out if shift is None else _roll(out, shift, -1)


def dense_over_cache(q, k, v, attention_mask=None, scaling=None, window=None) -> torch.Tensor:
    """Dense causal attention of the last ``q_len`` positions over ``k_len`` cached keys (decode, continuation).

    GQA is served by folding each KV group's query heads into the query rows (no ``repeat_kv``); a mask, when one
    is needed (padding, window, several query rows), is built per row chunk of at most :data:`MASK_BYTES`.

    Args:
        q: ``(B, Hq, q_len, D)``; k, v: ``(B, Hkv, k_len, D)``.
        attention_mask: ``None``, a 2-D ``(B, filled)`` padding mask (``filled <= k_len``: a static cache's unfilled
            tail is masked) or a prepared 4-D ``(B, 1, q_len, k_len)`` mask.
        window: keep keys with ``i - j < window`` only.

    Returns:
        ``(B, Hq, q_len, D)``.
    """
    batch, hq, q_len, dim = q.shape
    hkv, k_len = k.shape[1], k.shape[2]
    group = hq // hkv
    folded = q.reshape(batch, hkv, group * q_len, dim)  # rows ordered (head in group, query)

    def attend(rows_q, mask):
        return F.scaled_dot_product_attention(rows_q, k, v, attn_mask=mask, scale=scaling)

    if attention_mask is not None and attention_mask.dim() == 4:
        allowed = _allowed_4d(attention_mask)[..., -k_len:]
        allowed = allowed | _own_position(q_len, k_len, k_len - q_len, allowed.device)  # no empty row
        allowed = allowed.unsqueeze(2).expand(-1, -1, group, -1, -1).reshape(allowed.shape[0], 1, group * q_len, k_len)
        return attend(folded, allowed).view(batch, hq, q_len, dim)

    valid = None
    filled = k_len
    if attention_mask is not None:
        valid = attention_mask.bool()
        filled = valid.shape[1]
        if filled > k_len:
            valid, filled = valid[:, -k_len:], k_len
        if filled < k_len:
            valid = torch.cat([valid, valid.new_zeros(batch, k_len - filled)], dim=1)
        if filled == k_len and bool(valid.all()):
            valid = None
    offset = filled - q_len
    if valid is None and window is None and q_len == 1 and filled == k_len:
        return attend(folded, None).view(batch, hq, q_len, dim)

    out = torch.empty_like(q)
    rows_per_chunk = max(1, MASK_BYTES // max(1, batch * hq * k_len * 4))
    keys = torch.arange(k_len, device=q.device).view(1, k_len)
    for start in range(0, q_len, rows_per_chunk):
        end = min(q_len, start + rows_per_chunk)
        rows = (torch.arange(start, end, device=q.device) + offset).view(-1, 1)
        allowed = keys <= rows
        if window is not None:
            allowed = allowed & (rows - keys < window)
        allowed = allowed.view(1, 1, end - start, k_len)
        if valid is not None:
            allowed = allowed & valid.view(batch, 1, 1, k_len)
        allowed = allowed | (keys == rows).view(1, 1, end - start, k_len)  # a padded query keeps itself: no NaN
        allowed = allowed.unsqueeze(2).expand(-1, -1, group, -1, -1).reshape(allowed.shape[0], 1, -1, k_len)
        chunk_q = q[:, :, start:end].reshape(batch, hkv, group * (end - start), dim)
        out[:, :, start:end] = attend(chunk_q, allowed).view(batch, hq, end - start, dim)
    return out


def _own_position(q_len: int, k_len: int, offset: int, device) -> torch.Tensor:
    rows = torch.arange(q_len, device=device).view(-1, 1) + offset
    return (torch.arange(k_len, device=device).view(1, -1) == rows).view(1, 1, q_len, k_len)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    **kwargs,
):
    """The attention function transformers calls for ``attn_implementation="minference"``.

    Args:
        module: the attention module (its ``minference_settings`` and ``config`` are read).
        query: ``(B, Hq, q_len, D)``; key, value: ``(B, Hkv, k_len, D)`` (the whole cache when there is one).
        attention_mask: ``None``, the 2-D padding mask from our mask function, or a 4-D mask (older transformers).
        scaling: score scale (``None``: ``1/sqrt(D)``). sliding_window: the layer's window, if any.

    Returns:
        ``(attn_output (B, q_len, Hq, D), None)``.

    Raises:
        ValueError: training-time dropout or softcapping (unsupported), or an unsupported padding mask.
    """
    if dropout:
        raise ValueError(f"minference attention is inference-only; dropout must be 0 (call model.eval()), got {dropout}")
    if softcap is not None:
        raise ValueError("minference attention does not support logit softcapping")
    q_len, k_len = query.shape[2], key.shape[2]
    window = sliding_window if sliding_window is not None and sliding_window < k_len else None
    if q_len == k_len:
        out = _prefill(module, query, key, value, attention_mask, scaling, window)
    else:
        out = dense_over_cache(query, key, value, attention_mask, scaling, window)
    return out.transpose(1, 2).contiguous(), None


def attention_mask_function(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function=None,
    attention_mask: Optional[torch.Tensor] = None,
    **kwargs,
) -> Optional[torch.Tensor]:
    """What transformers prepares for our attention: the 2-D ``(B, kv)`` boolean padding mask, or ``None`` when
    nothing is padded. Never an ``N x N`` mask: at 1M tokens that alone would not fit.
    """
    if attention_mask is None:
        return None
    mask = attention_mask[:, -kv_length:] if attention_mask.shape[-1] > kv_length else attention_mask
    if mask.shape[-1] == kv_length and bool(mask.all()):
        return None
    return mask.bool()


def register() -> None:
    """Register :func:`attention_forward` (and the mask function, on transformers >= 4.53) under ``"minference"``."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, attention_forward)
    try:
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:  # transformers < 4.53 builds masks per model; attention_forward also reads 4-D masks
        return
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, attention_mask_function)


# ----------------------------------------------------------------------------------------------------------------
# patch / unpatch


def _set_attn_implementation(model, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


def _attn_types(attn_type: Union[str, Sequence[str]], num_layers: int) -> list:
    types = [attn_type] * num_layers if isinstance(attn_type, str) else list(attn_type)
    if len(types) != num_layers:
        raise ValueError(f"attn_type must be a name or one name per layer ({num_layers}), got {len(types)}")
    for i, name in enumerate(types):
        if name not in ATTENTION_TYPES:
            raise ValueError(f"attn_type of layer {i} must be one of {sorted(ATTENTION_TYPES)}, got {name!r}")
    return types


def patch(
    model,
    config: Optional[config_mod.ConfigSource] = None,
    *,
    attn_type: Union[str, Sequence[str]] = "minference",
    starting_layer: int = 0,
    dense_below: int = DEFAULT_DENSE_BELOW,
    dense_above: Optional[float] = DEFAULT_DENSE_ABOVE,
    backend: str = "auto",
    chunk_size: Optional[int] = None,
    kv_cache_cpu: bool = False,
    vertical_slash_tile: Optional[int] = None,
):
    """Switch a loaded transformers model to MInference prefill (in place; patching again replaces the settings).

    Args:
        model: a ``*ForCausalLM`` of a supported architecture (Llama, Mistral, Qwen2, Qwen3, Phi-3).
        config: per-head patterns (see :mod:`minference.config`: a ``Config``, path, registry name, list or dict);
            ``None``: every head vertical-slash 1000/6096.
        attn_type: prefill function name from :data:`ATTENTION_TYPES`, or one per layer.
        starting_layer: layers below it run dense.
        dense_below: prompts shorter than this many tokens run dense.
        dense_above: a prefill whose estimated indices would execute more than this fraction of the causal tiles
            runs dense instead (see :func:`minference.sparse_attention`); ``None``: always sparse.
        backend: kernel backend, ``"auto"`` | ``"triton"`` | ``"torch"``.
        chunk_size: run norms and MLPs over this many tokens at a time (see :func:`memory.chunk_tokenwise`); the
            saving that makes 1M tokens fit. ``None`` leaves them alone.
        kv_cache_cpu: ``generate`` keeps the KV cache on the CPU (transformers' offloaded cache).
        vertical_slash_tile: the grid vertical-slash heads keep diagonals on, 64 or 128 tokens; ``None`` lets the
            device decide (:func:`minference.ops.default_vertical_slash_tile`): give it for one mask everywhere.

    Returns:
        ``model``.

    Raises:
        TypeError, ValueError: unsupported architecture, config not matching the model (naming layer and head),
            unknown ``attn_type`` or ``backend``, bad ``dense_below``, ``dense_above`` or ``vertical_slash_tile``.
    """
    arch = architecture(model)
    resolved = config_mod.resolve(config, model.config, starting_layer)
    types = _attn_types(attn_type, resolved.num_layers)
    config_mod._check_int("dense_below", dense_below, 0)
    check_dense_above(dense_above)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if vertical_slash_tile is not None:
        check_tile(vertical_slash_tile)
    layers = decoder_layers(model, arch)
    if len(layers) != resolved.num_layers:
        raise ValueError(f"model has {len(layers)} decoder layers but config.num_hidden_layers says {resolved.num_layers}")
    if not hasattr(model, _PREVIOUS_ATTR):
        generation = getattr(model, "generation_config", None)
        previous = {
            "attn_implementation": model.config._attn_implementation,
            "cache_implementation": getattr(generation, "cache_implementation", None),
        }
        setattr(model, _PREVIOUS_ATTR, previous)
    for i, layer in enumerate(layers):
        attention = getattr(layer, arch.attention)
        setattr(attention, SETTINGS_ATTR, LayerSettings(
            resolved.layers[i], types[i], dense_below, backend, dense_above, vertical_slash_tile
        ))
    _set_attn_implementation(model, ATTN_IMPLEMENTATION)
    memory.unchunk_tokenwise(model)
    if chunk_size is not None:
        memory.chunk_tokenwise(model, chunk_size)
    if kv_cache_cpu:
        memory.use_cpu_kv_cache(model)
    return model


def unpatch(model):
    """Undo :func:`patch`: the previous attention implementation, no per-layer settings, no chunking, the previous
    cache implementation. A never-patched model is left alone, except that one loaded with
    ``attn_implementation="minference"`` goes to SDPA.

    Returns:
        ``model``.

    Raises:
        ValueError: unsupported architecture.
    """
    arch = architecture(model)
    for layer in decoder_layers(model, arch):
        attention = getattr(layer, arch.attention)
        if SETTINGS_ATTR in attention.__dict__:
            delattr(attention, SETTINGS_ATTR)
    memory.unchunk_tokenwise(model)
    previous = model.__dict__.pop(_PREVIOUS_ATTR, None)
    if previous is None:  # never patched: leave other implementations alone
        if model.config._attn_implementation == ATTN_IMPLEMENTATION:
            _set_attn_implementation(model, "sdpa")
        return model
    _set_attn_implementation(model, previous["attn_implementation"])
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.cache_implementation = previous["cache_implementation"]
    return model


def is_patched(model) -> bool:
    """Whether :func:`patch` settings are active on ``model``."""
    return hasattr(model, _PREVIOUS_ATTR)


register()
