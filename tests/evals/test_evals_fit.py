"""Fitting a prompt to a token budget: the offsets shortcut gives what counting every prefix gives."""

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from minference.evals.prompting import count_tokens, fit_units

WORDS = ["the", "valley", "weather", "magic", "number", "is", "7421", "uuid", "0f3a-9c", "sentence", "of", "a"]


@functools.lru_cache(maxsize=None)
def merging_tokenizer(letters: bool = False):
    """A byte-level BPE trained here, on the words above or (``letters``) on random strings of ``abc`` with no
    spaces: multi-byte tokens, so a cut between units can split one and the offsets estimate is off by some."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    rng = random.Random(0)
    corpus = (["".join(rng.choice("abc") for _ in range(400)) for _ in range(20)] if letters
              else [" ".join(WORDS * 3), ", ".join(WORDS), "".join(WORDS)])
    inner.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=inner)


def largest_fitting_prefix(tokenizer, units, budget, join):
    """The definition where counts grow with the prefix, one exact count per prefix."""
    k = 0
    while k < len(units) and count_tokens(tokenizer, join.join(units[: k + 1])) <= budget:
        k += 1
    return k


def is_a_fit(tokenizer, units, budget, join, k):
    """``units[:k]`` fits and one more unit would not: what fit_units promises even where a merge across the cut
    makes a longer prefix tokenise shorter."""
    size = lambda j: count_tokens(tokenizer, join.join(units[:j]))  # noqa: E731
    return size(k) <= budget and (k == len(units) or size(k + 1) > budget)


@settings(max_examples=60, deadline=None)
@given(
    units=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join), min_size=10, max_size=60),
    join=st.sampled_from([" ", "", ", ", "\n\n", " .... "]),
    budget=st.integers(0, 80),
)
def test_fit_units_equals_counting_every_prefix(units, join, budget):
    tokenizer = merging_tokenizer()
    assert fit_units(tokenizer, units, budget, join) == largest_fitting_prefix(tokenizer, units, budget, join)


@settings(max_examples=60, deadline=None)
@given(units=st.lists(st.sampled_from(["a", "b", "c", "ab", "ca"]), min_size=30, max_size=120),
       budget=st.integers(0, 30))
def test_fit_units_equals_counting_every_prefix_when_tokens_straddle_the_cut(units, budget):
    tokenizer = merging_tokenizer(letters=True)
    assert is_a_fit(tokenizer, units, budget, "", fit_units(tokenizer, units, budget, ""))


def test_a_fast_tokenizer_settles_a_long_fit_with_a_few_exact_counts():
    tokenizer = merging_tokenizer()
    units = [f"{WORDS[i % len(WORDS)]} {i}" for i in range(5000)]
    counted = []
    encode = tokenizer.encode
    tokenizer.encode = lambda text, **kw: counted.append(len(text)) or encode(text, **kw)
    try:
        k = fit_units(tokenizer, units, 2000, join=" ")
    finally:
        del tokenizer.encode
    assert count_tokens(tokenizer, " ".join(units[:k])) <= 2000 < count_tokens(tokenizer, " ".join(units[: k + 1]))
    assert len(counted) <= 5, counted  # a binary search would count about log2(5000) = 13 prefixes


class SkewedOffsets:
    """Words as tokens, with character offsets that end ``skew`` characters late (or early): an estimate that is
    off in either direction, which the exact counts around it must correct."""

    def __init__(self, skew: int):
        self.skew = skew

    def encode(self, text, add_special_tokens=False):
        return text.split()

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        offsets, at = [], 0
        for word in text.split():
            start = text.index(word, at)
            at = start + len(word)
            offsets.append((start, max(0, at + self.skew)))
        return {"offset_mapping": offsets}


@settings(max_examples=40, deadline=None)
@given(units=st.lists(st.sampled_from(["a", "b c", "d e f"]), min_size=20, max_size=80), budget=st.integers(0, 40),
       skew=st.sampled_from([-6, -2, 3, 9]))
def test_an_estimate_off_either_way_is_corrected_to_the_exact_fit(units, budget, skew):
    tokenizer = SkewedOffsets(skew)
    assert fit_units(tokenizer, units, budget, " ") == largest_fitting_prefix(tokenizer, units, budget, " ")
