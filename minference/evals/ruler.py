"""RULER's 13 tasks, generated with a seed at any length, with RULER's templates and string-match metrics.

Retrieval (niah_*), multi-hop tracing (variable tracking), aggregation (common/frequent words) and QA. Haystacks
are the repeated filler (``noise``), natural text (RULER's essays; here the Gutenberg texts of :mod:`.text`), or
other needles. qa_1 (SQuAD) and qa_2 (HotpotQA) need their datasets: a local file given by ``--squad`` /
``--hotpotqa`` (SQuAD v2 dev JSON, HotpotQA distractor dev JSON) or anything ``datasets.load_dataset`` opens;
without one they are skipped with the reason.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections import Counter
from collections.abc import Iterable
from importlib import resources

from . import text
from .example import Example, check_grid
from .prompting import context_budget, fit_units, render

TASKS = (
    "niah_single_1",
    "niah_single_2",
    "niah_single_3",
    "niah_multikey_1",
    "niah_multikey_2",
    "niah_multikey_3",
    "niah_multivalue",
    "niah_multiquery",
    "vt",
    "cwe",
    "fwe",
    "qa_1",
    "qa_2",
)
MAX_NEW_TOKENS = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}

# task: (haystack, key type, value type, keys in text, values per key, queries)
NIAH = {
    "niah_single_1": ("noise", "words", "numbers", 1, 1, 1),
    "niah_single_2": ("essay", "words", "numbers", 1, 1, 1),
    "niah_single_3": ("essay", "words", "uuids", 1, 1, 1),
    "niah_multikey_1": ("essay", "words", "numbers", 4, 1, 1),
    "niah_multikey_2": ("needle", "words", "numbers", 1, 1, 1),
    "niah_multikey_3": ("needle", "uuids", "uuids", 1, 1, 1),
    "niah_multivalue": ("essay", "words", "numbers", 1, 4, 1),
    "niah_multiquery": ("essay", "words", "numbers", 4, 1, 4),
}
NIAH_TEMPLATE = (
    "Some special magic {type} are hidden within the following text. Make sure to memorize it. I will "
    "quiz you about the {type} afterwards.\n{context}\nWhat are all the special magic {type} for "
    "{query} mentioned in the provided text?"
)
NIAH_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"
NIAH_NEEDLE = "One of the special magic {type} for {key} is: {value}."
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num} variables are "
    "assigned the value {query}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
    "ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above "
    "list?"
)
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most "
    "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
    "the dots '....'. What are the three most frequently appeared words in the above coded text?"
)
FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other "
    "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
    "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}"
)
QA_PREFIX = " Answer:"


def _words(name: str) -> tuple[str, ...]:
    """One word per line of the package data file ``name`` (``minference/evals/data/``)."""
    content = resources.files("minference.evals").joinpath("data", name).read_text(encoding="utf-8")
    return tuple(line for line in content.splitlines() if line)


ADJECTIVES = _words("ruler_adjectives.txt")
"""Adjectives of the NIAH keys (``adjective-noun``) and the common-words vocabulary, in file order (the draws
depend on it)."""
NOUNS = _words("ruler_nouns.txt")
"""Nouns of the NIAH keys and the common-words vocabulary, in file order."""


def _key(kind: str, rng: random.Random) -> str:
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def _value(kind: str, rng: random.Random) -> str:
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return str(rng.randint(1_000_000, 9_999_999))


def _distinct(make, count: int, rng: random.Random, exclude=()) -> list[str]:
    out, seen = [], set(exclude)
    while len(out) < count:
        item = make(rng)
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _sentences(documents: list[str], offset: int, count: int) -> list[str]:
    """``count`` sentences of natural text (split at periods), starting at a document picked by ``offset``."""
    out, i = [], offset
    while len(out) < count:
        doc = documents[i % len(documents)]
        out.extend(s.strip() + "." for s in doc.replace("\n", " ").split(".") if s.strip())
        i += 1
    return out[:count]


def niah(
    tokenizer,
    task: str,
    length: int,
    index: int,
    rng: random.Random,
    documents: list[str] | None = None,
    use_chat_template: bool = True,
) -> Example:
    """One needle-in-a-haystack variant (see ``NIAH``); needles spread over the haystack at random positions."""
    hay_kind, key_kind, value_kind, num_keys, num_values, num_queries = NIAH[task]
    type_name = "numbers" if value_kind == "numbers" else "uuids"
    keys = _distinct(lambda r: _key(key_kind, r), num_keys, rng)
    values = [[_value(value_kind, rng) for _ in range(num_values)] for _ in keys]
    needles = [NIAH_NEEDLE.format(type=type_name, key=k, value=v) for k, vs in zip(keys, values) for v in vs]
    queried = list(range(num_queries))
    query = (
        ", ".join(keys[i] for i in queried[:-1]) + (" and " if num_queries > 1 else "") + keys[queried[-1]]
    )
    answers = tuple(v for i in queried for v in values[i])
    prefix = NIAH_PREFIX.format(type=type_name, query=query)

    def template(context: str) -> str:
        return render(
            tokenizer,
            NIAH_TEMPLATE.format(type=type_name, context=context, query=query),
            prefix,
            use_chat_template,
        )

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["niah"])
    budget -= sum(len(tokenizer.encode(n, add_special_tokens=False)) + 1 for n in needles)
    if hay_kind == "noise":
        units = [text.NOISE] * max(1, budget // 4)
    elif hay_kind == "essay":
        if documents is None:
            raise ValueError(f"{task} needs natural-text documents")
        units = _sentences(documents, index * 3, max(1, budget))
    else:
        wanted = max(1, budget // 12)
        if key_kind == "words":  # adjective-noun pairs run out near 10K
            wanted = min(wanted, len(ADJECTIVES) * len(NOUNS) - len(keys) - 100)
        distractor_keys = _distinct(lambda r: _key(key_kind, r), wanted, rng, exclude=keys)
        units = [
            NIAH_NEEDLE.format(type=type_name, key=k, value=_value(value_kind, rng)) for k in distractor_keys
        ]
    count = fit_units(tokenizer, units, budget, join=" ")
    units = units[:count]
    for needle in needles:
        units.insert(rng.randint(0, len(units)), needle)
    prompt = NIAH_TEMPLATE.format(type=type_name, context=" ".join(units), query=query)
    return Example(task, length, index, prompt, answers, "string_match_all", MAX_NEW_TOKENS["niah"], prefix)


def variable_tracking(
    tokenizer,
    length: int,
    index: int,
    rng: random.Random,
    hops: int = 4,
    chains: int = 1,
    use_chat_template: bool = True,
) -> Example:
    """``chains`` chains of ``hops`` assignments (``VAR X = 12345``, ``VAR Y = VAR X`` ...) spread in filler."""
    names = _distinct(
        lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(5)), chains * (hops + 1), rng
    )
    statements, answers, query = [], (), ""
    for c in range(chains):
        chain = names[c * (hops + 1) : (c + 1) * (hops + 1)]
        value = str(rng.randint(10000, 99999))
        statements.append(
            [f"VAR {chain[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(chain, chain[1:])]
        )
        if c == 0:
            answers, query = tuple(chain), value
    prefix = VT_PREFIX.format(num=hops + 1, query=query)

    def template(context: str) -> str:
        return render(tokenizer, VT_TEMPLATE.format(context=context, query=query), prefix, use_chat_template)

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["vt"])
    budget -= sum(
        len(tokenizer.encode(s, add_special_tokens=False)) + 1 for chain in statements for s in chain
    )
    units = [text.NOISE] * max(1, budget // 4)
    units = units[: fit_units(tokenizer, units, budget, join=" ")]
    for chain in statements:  # keep each chain's order: increasing positions
        positions = sorted(rng.randint(0, len(units)) for _ in chain)
        for offset, (position, statement) in enumerate(zip(positions, chain)):
            units.insert(position + offset, statement)
    prompt = VT_TEMPLATE.format(context=" ".join(units), query=query)
    return Example("vt", length, index, prompt, answers, "string_match_all", MAX_NEW_TOKENS["vt"], prefix)


def common_words(
    tokenizer,
    length: int,
    index: int,
    rng: random.Random,
    freq_cw: int = 30,
    freq_ucw: int = 3,
    num_cw: int = 10,
    use_chat_template: bool = True,
) -> Example:
    """A numbered word list: ``num_cw`` words ``freq_cw`` times each among words appearing ``freq_ucw`` times."""
    vocabulary = list(dict.fromkeys(NOUNS + ADJECTIVES))
    rng.shuffle(vocabulary)
    common, rare_pool = vocabulary[:num_cw], vocabulary[num_cw:]

    def template(context: str) -> str:
        return render(tokenizer, CWE_TEMPLATE.format(context=context), CWE_PREFIX, use_chat_template)

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["cwe"])

    def listing(num_rare: int, freq: int) -> str:
        rare = [
            rare_pool[i % len(rare_pool)] + ("" if i < len(rare_pool) else str(i // len(rare_pool)))
            for i in range(num_rare)
        ]
        words = common * freq + rare * freq_ucw
        random.Random(index).shuffle(words)
        return "\n".join(f"{i + 1}. {w}" for i, w in enumerate(words))

    def fits(num_rare: int, freq: int) -> bool:
        return len(tokenizer.encode(listing(num_rare, freq), add_special_tokens=False)) <= budget

    while freq_cw > freq_ucw + 1 and not fits(
        0, freq_cw
    ):  # short contexts: fewer repeats of the common words
        freq_cw -= 1
    lo, hi = 0, max(1, budget // 2)
    while lo < hi:  # the most rare words that still fit
        mid = (lo + hi + 1) // 2
        if fits(mid, freq_cw):
            lo = mid
        else:
            hi = mid - 1
    prompt = CWE_TEMPLATE.format(context=listing(lo, freq_cw))
    return Example(
        "cwe",
        length,
        index,
        prompt,
        tuple(common),
        "string_match_all",
        MAX_NEW_TOKENS["cwe"],
        CWE_PREFIX,
        {"freq_cw": freq_cw, "rare_words": lo},
    )


def frequent_words(
    tokenizer, length: int, index: int, rng: random.Random, alpha: float = 2.0, use_chat_template: bool = True
) -> Example:
    """Coded words drawn from a Zipf(``alpha``) law; the answer is the three most frequent."""

    def template(context: str) -> str:
        return render(tokenizer, FWE_TEMPLATE.format(context=context), FWE_PREFIX, use_chat_template)

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["fwe"])
    vocabulary = _distinct(lambda r: "".join(r.choice(string.ascii_lowercase) for _ in range(6)), 200, rng)
    weights = [1.0 / (rank + 1) ** alpha for rank in range(len(vocabulary))]
    words = rng.choices(vocabulary, weights=weights, k=max(10, budget))
    count = fit_units(tokenizer, words, budget, join=" .... ")
    words = words[: max(3, count)]
    top = [w for w, _ in Counter(words).most_common(3)]
    prompt = FWE_TEMPLATE.format(context=" .... ".join(words))
    return Example(
        "fwe", length, index, prompt, tuple(top), "string_match_all", MAX_NEW_TOKENS["fwe"], FWE_PREFIX
    )


def load_qa(task: str, source: str | None) -> tuple[list[dict] | None, str]:
    """QA items ``{"question", "answers", "context"}`` plus the shared document pool, or (None, reason).

    ``source``: a SQuAD-v2 (qa_1) / HotpotQA (qa_2) JSON file, or a name/path ``datasets.load_dataset`` opens.
    """
    if source is None:
        flag = "--squad" if task == "qa_1" else "--hotpotqa"
        return None, f"{task}: needs {'SQuAD' if task == 'qa_1' else 'HotpotQA'} ({flag} PATH); skipped"
    try:
        if source.endswith(".json"):
            with open(source, encoding="utf-8") as f:
                raw = json.load(f)
            items = _squad_items(raw) if task == "qa_1" else _hotpot_items(raw)
        else:
            import datasets

            rows = datasets.load_dataset(source, split="validation")
            items = _squad_rows(rows) if task == "qa_1" else _hotpot_rows(rows)
    except (OSError, ValueError, KeyError) as error:
        return None, f"{task}: could not load {source!r} ({error}); skipped"
    return items, ""


def _squad_items(raw: dict) -> list[dict]:
    items = []
    for article in raw["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                items.append(
                    {
                        "question": qa["question"],
                        "answers": [a["text"] for a in qa["answers"]],
                        "docs": [paragraph["context"]],
                    }
                )
    return items


def _squad_rows(rows) -> list[dict]:
    return [
        {"question": r["question"], "answers": list(r["answers"]["text"]), "docs": [r["context"]]}
        for r in rows
        if r["answers"]["text"]
    ]


def _hotpot_items(raw: list) -> list[dict]:
    return [
        {
            "question": r["question"],
            "answers": [r["answer"]],
            "docs": [f"{title}\n{''.join(sentences)}" for title, sentences in r["context"]],
        }
        for r in raw
    ]


def _hotpot_rows(rows) -> list[dict]:
    return [
        {
            "question": r["question"],
            "answers": [r["answer"]],
            "docs": [f"{t}\n{''.join(s)}" for t, s in zip(r["context"]["title"], r["context"]["sentences"])],
        }
        for r in rows
    ]


def qa(
    tokenizer,
    task: str,
    items: list[dict],
    length: int,
    index: int,
    rng: random.Random,
    use_chat_template: bool = True,
) -> Example:
    """The item's gold documents shuffled among distractor documents from other items, filling the length."""
    item = items[index % len(items)]
    query = item["question"]

    def template(context: str) -> str:
        return render(
            tokenizer, QA_TEMPLATE.format(context=context, query=query), QA_PREFIX, use_chat_template
        )

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["qa"])
    gold = list(dict.fromkeys(item["docs"]))
    pool = [d for other in items if other is not item for d in other["docs"] if d not in gold]
    rng.shuffle(pool)
    pool = list(dict.fromkeys(pool))
    gold_tokens = sum(len(tokenizer.encode(d, add_special_tokens=False)) + 4 for d in gold)
    count = fit_units(tokenizer, pool[: max(1, budget // 20)], max(0, budget - gold_tokens), join="\n\n")
    docs = pool[:count] + gold
    rng.shuffle(docs)
    context = "\n\n".join(f"Document {i + 1}:\n{d}" for i, d in enumerate(docs))
    return Example(
        task,
        length,
        index,
        QA_TEMPLATE.format(context=context, query=query),
        tuple(item["answers"]),
        "string_match_part",
        MAX_NEW_TOKENS["qa"],
        QA_PREFIX,
    )


def generate(
    tokenizer,
    tasks: Iterable[str],
    lengths: Iterable[int],
    samples: int,
    *,
    seed: int = 42,
    text_dir: str | None = None,
    documents: list[str] | None = None,
    squad: str | None = None,
    hotpotqa: str | None = None,
    use_chat_template: bool = True,
) -> tuple[list[Example], dict[str, str]]:
    """Examples for ``tasks`` at each length (``samples`` each) and {task: reason} for skipped ones.

    Raises:
        ValueError: an unknown task or ``samples < 1``.
    """
    tasks, lengths = check_grid(tasks, samples, TASKS), list(lengths)
    if documents is None and any(NIAH.get(t, ("",))[0] == "essay" for t in tasks):
        documents = text.load_documents(text_dir)
    examples, skipped = [], {}
    for task in tasks:
        items = None
        if task in ("qa_1", "qa_2"):
            items, reason = load_qa(task, squad if task == "qa_1" else hotpotqa)
            if items is None:
                skipped[task] = reason
                continue
        for length in lengths:
            rng = random.Random(f"{seed}|{task}|{length}")
            for i in range(samples):
                kw = {"use_chat_template": use_chat_template}
                if task in NIAH:
                    examples.append(niah(tokenizer, task, length, i, rng, documents, **kw))
                elif task == "vt":
                    examples.append(variable_tracking(tokenizer, length, i, rng, **kw))
                elif task == "cwe":
                    examples.append(common_words(tokenizer, length, i, rng, **kw))
                elif task == "fwe":
                    examples.append(frequent_words(tokenizer, length, i, rng, **kw))
                else:
                    examples.append(qa(tokenizer, task, items, length, i, rng, **kw))
    return examples, skipped
