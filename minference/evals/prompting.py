"""Turning a task's text into model input of a target length: chat rendering, token counting, fitting.

A tokenizer here is anything with ``encode(text, add_special_tokens=False) -> list[int]`` and
``decode(ids) -> str`` (HF tokenizers qualify); ``chat_template`` is used when present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def render(tokenizer, prompt: str, answer_prefix: str = "", use_chat_template: bool = True) -> str:
    """The full model input: the prompt as the user turn (chat template when the tokenizer has one), then the
    assistant's answer prefix."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return text + answer_prefix.lstrip()
    return prompt + answer_prefix


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def context_budget(tokenizer, template: Callable[[str], str], length: int, reserve: int) -> int:
    """Tokens left for the context when ``template(context)`` must fit ``length`` tokens minus ``reserve``.

    Raises:
        ValueError: the template alone already exceeds the length.
    """
    overhead = count_tokens(tokenizer, template(""))
    budget = length - reserve - overhead
    if budget < 1:
        raise ValueError(
            f"length {length} is too short for this task's template ({overhead} tokens + {reserve})"
        )
    return budget


def fit_units(tokenizer, units: Sequence[str], budget: int, join: str = "\n") -> int:
    """The largest ``k`` such that ``join.join(units[:k])`` is at most ``budget`` tokens (binary search)."""
    cache = {}

    def size(k: int) -> int:
        if k not in cache:
            cache[k] = count_tokens(tokenizer, join.join(units[:k]))
        return cache[k]

    lo, hi = 0, len(units)
    if size(hi) <= budget:
        return hi
    # a proportional first guess narrows the bracket: one tokenisation of everything, then a few of prefixes
    guess = max(1, int(hi * budget / max(1, size(hi))))
    if size(guess) <= budget:
        lo = guess
    else:
        hi = guess - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def truncate_middle(ids: Sequence[int], max_tokens: int) -> list:
    """InfiniteBench's truncation: keep the first and last halves of ``max_tokens``."""
    ids = list(ids)
    if len(ids) <= max_tokens:
        return ids
    half = max_tokens // 2
    return ids[:half] + ids[len(ids) - (max_tokens - half) :]
