"""Perplexity at growing lengths on long natural text, one curve per attention method.

Text: PG-19 through ``datasets`` when given (``--pg19 NAME_OR_PATH``, a ``text`` column), else the Gutenberg texts of
:mod:`.text` (named in the output). Each sample is a window of ``L`` tokens from the concatenated documents; the
forward runs over all ``L`` tokens at once (the attention sees the full context) and the language-model head and
loss are computed in chunks, so no ``L × vocab`` logits tensor is ever held. Every predicted token counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import text


def load_token_stream(
    tokenizer,
    min_tokens: int,
    *,
    pg19: str | None = None,
    text_dir: str | None = None,
    max_documents: int = 500,
) -> tuple[list[int], str]:
    """At least ``min_tokens`` token ids of natural text, and the source's name.

    Raises:
        ValueError: the source holds fewer tokens than ``min_tokens``.
    """
    if pg19 is not None:
        import datasets

        rows = datasets.load_dataset(
            pg19, split="test" if "pg19" in pg19.lower() else "train", streaming=False
        )
        documents = [rows[i]["text"] for i in range(min(max_documents, len(rows)))]
        source = f"PG-19 ({pg19})"
    else:
        documents = text.load_documents(text_dir)
        source = text.source_name(text_dir)
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer.encode(doc, add_special_tokens=False))
        if len(ids) >= min_tokens:
            return ids, source
    raise ValueError(f"{source} holds {len(ids)} tokens, fewer than the {min_tokens} needed")


def windows(stream: list[int], length: int, samples: int) -> list[list[int]]:
    """``samples`` evenly spaced windows of ``length`` tokens from ``stream``.

    Raises:
        ValueError: ``length`` exceeds the stream or ``samples < 1``.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if length > len(stream):
        raise ValueError(f"length {length} exceeds the {len(stream)}-token text")
    span = len(stream) - length
    starts = [span * i // max(1, samples - 1) if samples > 1 else 0 for i in range(samples)]
    return [stream[s : s + length] for s in starts]


@torch.no_grad()
def negative_log_likelihood(model, ids: list[int], chunk: int = 4096) -> tuple[float, int]:
    """Summed NLL (nats) of tokens 1..L given their prefixes, and the number of predicted tokens."""
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {len(ids)}")
    input_ids = torch.tensor([ids], device=model.device)
    hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state[0]
    head = model.get_output_embeddings()
    total = 0.0
    for start in range(0, len(ids) - 1, chunk):
        end = min(start + chunk, len(ids) - 1)
        logits = head(hidden[start:end]).float()
        total += float(F.cross_entropy(logits, input_ids[0, start + 1 : end + 1], reduction="sum"))
    return total, len(ids) - 1


def perplexity(nll: float, count: int) -> float:
    """``exp(nll / count)``; raises ValueError for ``count < 1``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return math.exp(nll / count)
