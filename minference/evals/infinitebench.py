"""InfiniteBench: the ten tasks of the published MInference table.

passkey, number_string, kv_retrieval and math_find are generated here with the published recipes (seeded, any
length). longbook_sum_eng, longbook_qa_eng, longbook_choice_eng, longdialogue_qa_eng, longbook_qa_chn and code_debug
read the published jsonl files (fields ``context``, ``input``, ``answer``, ``options``) from a local folder
(``--data-dir``, files named ``{task}.jsonl``); without them those tasks are skipped with the reason.
Long contexts are middle-truncated (first and last halves kept) to the length minus the generation budget.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable
from pathlib import Path

from .example import Example, check_grid
from .prompting import context_budget, fit_units, render, truncate_middle
from .text import NOISE

GENERATED = ("passkey", "number_string", "kv_retrieval", "math_find")
LOADED = (
    "longbook_sum_eng",
    "longbook_qa_eng",
    "longbook_choice_eng",
    "longdialogue_qa_eng",
    "longbook_qa_chn",
    "code_debug",
)
TASKS = LOADED + ("math_find", "passkey", "number_string", "kv_retrieval")
"""In the published table's column order."""

MAX_NEW_TOKENS = {
    "passkey": 15,
    "number_string": 20,
    "kv_retrieval": 80,
    "math_find": 3,
    "longbook_sum_eng": 1200,
    "longbook_qa_eng": 40,
    "longbook_choice_eng": 40,
    "longdialogue_qa_eng": 40,
    "longbook_qa_chn": 40,
    "code_debug": 5,
}
METRIC = {
    "passkey": "first_int",
    "number_string": "first_int",
    "kv_retrieval": "word_match",
    "math_find": "first_number",
    "longbook_sum_eng": "rouge_lsum",
    "longbook_qa_eng": "token_f1",
    "longbook_choice_eng": "option_letter",
    "longdialogue_qa_eng": "name_match",
    "longbook_qa_chn": "char_f1",
    "code_debug": "option_letter",
}

_FIND_PREFIX = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n\n"
)
TEMPLATES = {
    "passkey": (_FIND_PREFIX + "{context}\n\n{input}", "The pass key is"),
    "number_string": (_FIND_PREFIX + "{context}\n\n{input}", "The sequence of digits is"),
    "kv_retrieval": (
        "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n"
        "{input}",
        "",
    ),
    "math_find": ("{prefix}\n\n{context}\n\n{input}", ""),
    "longbook_sum_eng": ("Summarize the book below.\n\n{context}", "Summary:"),
    "longbook_qa_eng": (
        "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\n"
        "Question: {input}",
        "Answer:",
    ),
    "longbook_choice_eng": (
        "Read the book and answer the question.\n\n{context}\n\nQuestion: {input}\n{options}\n\n"
        "Only one of the options is correct; answer with the single letter A, B, C or D.",
        "The letter of the correct answer is",
    ),
    "longdialogue_qa_eng": (
        "Below is a dialogue script where one random occurrence of a character name is replaced "
        'with "$$MASK$$", and you should try to guess who that character is.\n\n{context}\n\n'
        'End of dialogue.\n\nWhich character is most likely "$$MASK$$"? Just say the name of '
        "one single character and nothing else.",
        "The name that has been replaced is",
    ),
    "longbook_qa_chn": (
        "请根据以下书籍回答我的问题。\n\n{context}\n\n问题：{input}\n请尽量简短地回答。",
        "答案：",
    ),
    "code_debug": (
        "There is ONLY ONE function in the large project that is deliberately made to include an obvious "
        "error. Find the function that contains the most obvious errors. Answer with one single letter "
        "(A, B, C, or D).\n\n{context}\n\nWhich function has a deliberate error?\n{options}",
        "The correct option is",
    ),
}
_MATH_WHAT = {
    "largest": "the largest number",
    "smallest": "the smallest number",
    "median": "the median number",
}


def _fit_repeated(tokenizer, template, length, reserve, build) -> tuple[str, int]:
    """The longest context ``build(k)`` (``k`` filler repeats) whose prompt fits; returns (context, k)."""
    budget = context_budget(tokenizer, template, length, reserve)
    units = [NOISE] * max(1, budget // 4)
    k = fit_units(tokenizer, units, budget, join=" ")
    return build(k), k


def passkey(
    tokenizer,
    length: int,
    index: int,
    rng: random.Random,
    depth: float | None = None,
    task: str = "passkey",
    use_chat_template: bool = True,
) -> Example:
    """A 5-digit pass key (10 digits for ``number_string``) in the repeated filler, at ``depth`` or a random depth."""
    digits = 10 if task == "number_string" else 5
    key = str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    if task == "number_string":
        needle, question = (
            f"The sequence of digits is {key}. Remember it. {key} is the sequence of digits.",
            "What is the sequence number?",
        )
    else:
        needle, question = (
            f"The pass key is {key}. Remember it. {key} is the pass key.",
            "What is the pass key?",
        )
    body, prefix = TEMPLATES[task]
    depth = rng.random() * 100 if depth is None else depth

    def template(context: str) -> str:
        return render(
            tokenizer, body.format(context=context, input=question), " " + prefix, use_chat_template
        )

    reserve = MAX_NEW_TOKENS[task] + len(tokenizer.encode(needle, add_special_tokens=False)) + 4

    def build(k: int) -> str:
        at = round(k * depth / 100)
        return " ".join([NOISE] * at + [needle] + [NOISE] * (k - at))

    context, _ = _fit_repeated(tokenizer, template, length, reserve, build)
    return Example(
        task,
        length,
        index,
        body.format(context=context, input=question),
        (key,),
        METRIC[task],
        MAX_NEW_TOKENS[task],
        " " + prefix,
        {"depth": round(depth, 2)},
    )


def kv_retrieval(
    tokenizer, length: int, index: int, rng: random.Random, use_chat_template: bool = True
) -> Example:
    """A JSON object of UUID keys and values; the answer is the value of one key at a random position."""
    body, _ = TEMPLATES["kv_retrieval"]

    def pair() -> tuple[str, str]:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4)), str(
            uuid.UUID(int=rng.getrandbits(128), version=4)
        )

    def question(key: str) -> str:
        return f'Key: "{key}"\nThe value associated with the specified key is: '

    def template(context: str) -> str:
        return render(
            tokenizer, body.format(context=context, input=question("0" * 36)), "", use_chat_template
        )

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["kv_retrieval"] + 8)
    pairs = [pair() for _ in range(max(2, budget // 20))]
    units = [f'"{k}": "{v}"' for k, v in pairs]
    count = max(1, fit_units(tokenizer, units, budget - 2, join=", "))
    pairs = pairs[:count]
    key, value = pairs[rng.randrange(count)]
    context = json.dumps(dict(pairs), indent=0)
    return Example(
        "kv_retrieval",
        length,
        index,
        body.format(context=context, input=question(key)),
        (value,),
        METRIC["kv_retrieval"],
        MAX_NEW_TOKENS["kv_retrieval"],
        "",
        {"pairs": count},
    )


def math_find(
    tokenizer, length: int, index: int, rng: random.Random, use_chat_template: bool = True
) -> Example:
    """A list of integers; the answer is its largest, smallest or median value."""
    body, _ = TEMPLATES["math_find"]
    what = ("largest", "smallest", "median")[index % 3]
    prefix = f"Find {_MATH_WHAT[what]} from the list below."
    question = f"You should answer with only one number, no other words. The {what} number of the list is: "

    def template(context: str) -> str:
        return render(
            tokenizer, body.format(prefix=prefix, context=context, input=question), "", use_chat_template
        )

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS["math_find"] + 4)
    numbers = [str(rng.randint(0, 99)) for _ in range(max(3, budget))]
    count = max(3, fit_units(tokenizer, numbers, budget - 2, join=", "))
    if count % 2 == 0:
        count -= 1  # an odd count keeps the median an element of the list
    values = [int(x) for x in numbers[:count]]
    answer = {"largest": max(values), "smallest": min(values), "median": sorted(values)[count // 2]}[what]
    context = "[" + ", ".join(numbers[:count]) + "]"
    return Example(
        "math_find",
        length,
        index,
        body.format(prefix=prefix, context=context, input=question),
        (str(answer),),
        METRIC["math_find"],
        MAX_NEW_TOKENS["math_find"],
        "",
        {"what": what},
    )


def _options(options: list[str]) -> str:
    return "\n".join(f"{letter}. {option}" for letter, option in zip("ABCD", options))


def from_record(
    tokenizer, task: str, record: dict, length: int, index: int, use_chat_template: bool = True
) -> Example:
    """An example from one published jsonl record, its context middle-truncated to fit ``length`` tokens."""
    if task not in LOADED:
        raise ValueError(f"task must be one of {LOADED}, got {task!r}")
    body, prefix = TEMPLATES[task]
    answers = record["answer"] if isinstance(record["answer"], list) else [record["answer"]]
    options = record.get("options") or []
    fields = {"input": record.get("input", ""), "options": _options(options)}
    if task in ("longbook_choice_eng", "code_debug") and options:
        letters = [letter for letter, option in zip("ABCD", options) if option in answers]
        answers = letters + ([answers[0]] if task == "code_debug" else [])

    def template(context: str) -> str:
        return render(
            tokenizer,
            body.format(context=context, **fields),
            " " + prefix if prefix else "",
            use_chat_template,
        )

    budget = context_budget(tokenizer, template, length, MAX_NEW_TOKENS[task])
    ids = tokenizer.encode(record["context"], add_special_tokens=False)
    context = tokenizer.decode(truncate_middle(ids, budget))
    return Example(
        task,
        length,
        index,
        body.format(context=context, **fields),
        tuple(str(a) for a in answers),
        METRIC[task],
        MAX_NEW_TOKENS[task],
        " " + prefix if prefix else "",
        {"id": record.get("id", index)},
    )


def load_records(task: str, data_dir: str | None) -> tuple[list | None, str]:
    """Records of a loaded task from ``{data_dir}/{task}.jsonl`` (through ``datasets``), or (None, reason)."""
    if data_dir is None:
        return None, f"{task}: no --data-dir with {task}.jsonl (the published InfiniteBench file); skipped"
    path = Path(data_dir) / f"{task}.jsonl"
    if not path.exists():
        return None, f"{task}: {path} not found; skipped"
    import datasets

    return list(datasets.load_dataset("json", data_files=str(path), split="train")), ""


def generate(
    tokenizer,
    tasks: Iterable[str],
    lengths: Iterable[int],
    samples: int,
    *,
    seed: int = 42,
    data_dir: str | None = None,
    use_chat_template: bool = True,
) -> tuple[list[Example], dict[str, str]]:
    """Examples for ``tasks`` at each length (``samples`` each), and {task: reason} for the skipped ones.

    Raises:
        ValueError: an unknown task or ``samples < 1``.
    """
    tasks, lengths = check_grid(tasks, samples, TASKS), list(lengths)
    examples, skipped = [], {}
    for task in tasks:
        records = None
        if task in LOADED:
            records, reason = load_records(task, data_dir)
            if records is None:
                skipped[task] = reason
                continue
        for length in lengths:
            rng = random.Random(f"{seed}|{task}|{length}")
            for i in range(samples):
                if task in ("passkey", "number_string"):
                    depth = 100 * i / max(1, samples - 1) if samples > 1 else 50.0
                    examples.append(passkey(tokenizer, length, i, rng, depth, task, use_chat_template))
                elif task == "kv_retrieval":
                    examples.append(kv_retrieval(tokenizer, length, i, rng, use_chat_template))
                elif task == "math_find":
                    examples.append(math_find(tokenizer, length, i, rng, use_chat_template))
                elif i < len(records):
                    examples.append(from_record(tokenizer, task, records[i], length, i, use_chat_template))
    return examples, skipped
