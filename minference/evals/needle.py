"""Needle in a haystack, the published design: a "special magic {city} number" hidden at a depth of natural text.

The haystack is trimmed to the context budget in tokens; the needle goes in at ``depth`` % of those tokens, moved
back to just after the previous sentence end (``.``), and appended at depth 100. The answer counts when the 7-digit
number appears in the model's output. Grid: context lengths × depths × rounds (each round a different haystack).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from . import text
from .example import Example
from .prompting import context_budget, render

CITIES = (
    "Chicago",
    "Yangon",
    "Antananarivo",
    "Colombo",
    "Almaty",
    "Sydney",
    "Mexico City",
    "Seattle",
    "Lagos",
    "Amsterdam",
    "Belgrade",
    "Cairo",
    "Baghdad",
    "Damascus",
    "Kigali",
    "Dakar",
    "Sofia",
    "Victoria",
    "Tashkent",
    "Mumbai",
    "Barcelona",
    "Kabul",
    "Kathmandu",
    "Lima",
    "Havana",
    "Oslo",
    "Riga",
    "Accra",
    "Quito",
    "Hanoi",
    "Montevideo",
    "Tbilisi",
    "Nairobi",
    "Helsinki",
    "Porto",
    "Bogota",
    "Auckland",
    "Vilnius",
    "Dublin",
    "Lisbon",
)
NEEDLE = "\nThe special magic {city} number is: {number}.\n"
QUESTION = "What is the special magic {city} number?"
TEMPLATE = (
    "Write a high-quality answer for the given question using only the provided search results (some of which might "
    "be irrelevant).\n{context}\n\nQuestion: {question} Don't give information outside the document or repeat your "
    "findings. Keep your response short and direct. Answer: "
)
QUESTION_FIRST_TEMPLATE = (
    "Question: {question} Answer using only the document below.\n\nDocument:\n{context}\n\nQuestion: {question} "
    "Keep your response short and direct. Answer: "
)
MAX_NEW_TOKENS = 32
BUFFER_TOKENS = 200
DEFAULT_DEPTHS = tuple(round(100 * i / 9) for i in range(10))


def depth_position(context_ids: Sequence[int], depth: float, is_sentence_end) -> int:
    """Where a needle goes in ``context_ids`` for ``depth`` percent: ``len · depth / 100`` moved back to just after
    the nearest earlier token that ends a sentence (0 when there is none); the end at depth 100.

    Raises:
        ValueError: ``depth`` outside [0, 100].
    """
    if not 0 <= depth <= 100:
        raise ValueError(f"depth must lie in [0, 100], got {depth}")
    if depth >= 100:
        return len(context_ids)
    position = int(len(context_ids) * depth / 100)
    while position > 0 and not is_sentence_end(context_ids[position - 1]):
        position -= 1
    return position


def insert_needle(
    context_ids: Sequence[int], needle_ids: Sequence[int], depth: float, is_sentence_end
) -> list:
    """``context_ids`` with ``needle_ids`` inserted at :func:`depth_position`."""
    at = depth_position(context_ids, depth, is_sentence_end)
    return list(context_ids[:at]) + list(needle_ids) + list(context_ids[at:])


def sentence_end_checker(tokenizer):
    """A memoised ``token_id -> bool``: does the token's text end with a period?"""
    cache = {}

    def check(token_id: int) -> bool:
        if token_id not in cache:
            cache[token_id] = tokenizer.decode([token_id]).rstrip().endswith(".")
        return cache[token_id]

    return check


def template_for(question_first: bool) -> str:
    return QUESTION_FIRST_TEMPLATE if question_first else TEMPLATE


def make_example(
    tokenizer,
    haystack: str,
    length: int,
    depth: float,
    *,
    index: int,
    rng: random.Random,
    question_first: bool = False,
    use_chat_template: bool = True,
    task: str = "needle",
) -> Example:
    """One needle prompt of about ``length`` tokens (template and chat wrapper included)."""
    city = rng.choice(CITIES)
    number = str(rng.randint(1_000_000, 9_999_999))
    question = QUESTION.format(city=city)
    template = template_for(question_first)

    def wrap(context: str) -> str:
        return render(tokenizer, template.format(context=context, question=question), "", use_chat_template)

    needle_ids = tokenizer.encode(NEEDLE.format(city=city, number=number), add_special_tokens=False)
    reserve = min(BUFFER_TOKENS, length // 8) + len(needle_ids)
    budget = context_budget(tokenizer, wrap, length, reserve)
    context_ids = tokenizer.encode(haystack[: budget * 8], add_special_tokens=False)[:budget]
    if len(context_ids) < budget:
        raise ValueError(f"haystack too short: {len(context_ids)} tokens for a budget of {budget}")
    ids = insert_needle(context_ids, needle_ids, depth, sentence_end_checker(tokenizer))
    prompt = template.format(context=tokenizer.decode(ids), question=question)
    return Example(
        task,
        length,
        index,
        prompt,
        (number,),
        "contains",
        MAX_NEW_TOKENS,
        meta={"depth": depth, "city": city, "question_first": question_first},
    )


def generate(
    tokenizer,
    lengths: Iterable[int],
    depths: Sequence[float] = DEFAULT_DEPTHS,
    rounds: int = 1,
    *,
    seed: int = 42,
    documents: list[str] | None = None,
    text_dir: str | None = None,
    question_first: bool = False,
    use_chat_template: bool = True,
) -> list[Example]:
    """The needle grid: for each length, ``rounds`` haystacks × ``depths`` (examples indexed round-major)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    documents = documents if documents is not None else text.load_documents(text_dir)
    examples = []
    for length in lengths:
        # one generator per length (as RULER and InfiniteBench do), so adding a length leaves the other lengths'
        # needles as they were and their stored results stay reusable
        rng = random.Random(f"{seed}|needle|{length}")
        for r in range(rounds):
            hay = text.haystack(length * 8, documents, offset=r * 7)
            for d, depth in enumerate(depths):
                examples.append(
                    make_example(
                        tokenizer,
                        hay,
                        length,
                        depth,
                        index=r * len(depths) + d,
                        rng=rng,
                        question_first=question_first,
                        use_chat_template=use_chat_template,
                    )
                )
    return examples
