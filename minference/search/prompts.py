"""Calibration prompts of an exact token length, generated from a seed (no data sets needed).

- ``kv_retrieval``: a JSON object of random UUID keys and values and the question for one key's value (the
  InfiniteBench task upstream MInference searched on);
- ``passkey``: repeated filler text with a five-digit pass key hidden at a random depth;
- ``text:FILE``: consecutive windows of a text file (wrapping around when the file is short).

Example ``e`` depends only on ``(task, length, seed, e)``, so ``--start-example 3`` reproduces example 3 of any run.
Pieces are tokenised separately and concatenated as ids, then the filler is cut so the prompt is exactly ``length``
tokens (the BOS token, when the tokenizer has one, included).
"""
from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Protocol

TASKS = ("kv_retrieval", "passkey", "text:FILE")

_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list: ...


def check_task(task: str) -> str:
    """Return ``task`` if it names a known task.

    Raises:
        ValueError: unknown task, or ``text:`` without a readable file.
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, got {type(task).__name__}")
    if task in ("kv_retrieval", "passkey"):
        return task
    if task.startswith("text:"):
        path = Path(task[len("text:"):])
        if not path.is_file():
            raise ValueError(f"task text:FILE needs an existing file, got {str(path)!r}")
        return task
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _bos(tokenizer: Tokenizer) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if bos is not None else []


def _fit(head: list[int], pieces: list[list[int]], tail: list[int], length: int) -> list[int]:
    """``head + pieces... + tail`` cut to exactly ``length`` ids by dropping the end of the last piece that fits."""
    room = length - len(head) - len(tail)
    if room < 0:
        raise ValueError(f"length {length} is too short for the prompt's instruction and question ({len(head) + len(tail)} tokens)")
    body: list[int] = []
    for piece in pieces:
        if len(body) >= room:
            break
        body.extend(piece)
    body = body[:room]
    if len(body) < room:
        raise ValueError("the prompt generator ran out of filler; this is a bug")
    return head + body + tail


def _kv_retrieval(tokenizer: Tokenizer, length: int, rng: random.Random) -> list[int]:
    head = _bos(tokenizer) + _encode(
        tokenizer, "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{"
    )
    keys, pieces = [], []
    used = len(head)
    while used < length:
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids = _encode(tokenizer, f'"{key}": "{value}", ')
        used += len(ids)
        keys.append((key, used))
        pieces.append(ids)
    # ask for a pair that survives the cut (the question takes < 128 tokens)
    survivors = [key for key, end in keys if end <= length - 128] or [keys[0][0]]
    question_key = rng.choice(survivors)
    tail = _encode(tokenizer, f'}}\n\nKey: "{question_key}"\nThe value associated with the specified key is: ')
    return _fit(head, pieces, tail, length)


def _passkey(tokenizer: Tokenizer, length: int, rng: random.Random) -> list[int]:
    head = _bos(tokenizer) + _encode(
        tokenizer, "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.\n"
    )
    key = rng.randrange(10000, 100000)
    needle = _encode(tokenizer, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    tail = _encode(tokenizer, "\nWhat is the pass key? The pass key is")
    filler = _encode(tokenizer, _FILLER)
    room = max(0, length - len(head) - len(tail) - len(needle))
    depth = int(rng.random() * room)
    before = (filler * (depth // max(1, len(filler)) + 1))[:depth]
    after = filler * ((room - depth) // max(1, len(filler)) + 2)
    return _fit(head, [before, needle, after], tail, length)


def _text(tokenizer: Tokenizer, path: str, length: int, example: int) -> list[int]:
    ids = _encode(tokenizer, Path(path).read_text(encoding="utf-8", errors="replace"))
    if not ids:
        raise ValueError(f"text file {path!r} has no tokens")
    head = _bos(tokenizer)
    start = (example * (length - len(head))) % len(ids)
    window = (ids[start:] + ids * ((length // len(ids)) + 2))[: length - len(head)]
    return head + window


def calibration_ids(tokenizer: Tokenizer, task: str, length: int, example: int, seed: int = 0) -> list[int]:
    """Token ids of calibration example ``example`` of ``task``, exactly ``length`` long.

    Raises:
        ValueError: unknown task, ``length`` too short for the task's instruction, ``example < 0``.
    """
    check_task(task)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    if isinstance(example, bool) or not isinstance(example, int) or example < 0:
        raise ValueError(f"example must be an int >= 0, got {example!r}")
    rng = random.Random(f"{task}|{length}|{seed}|{example}")
    if task == "kv_retrieval":
        return _kv_retrieval(tokenizer, length, rng)
    if task == "passkey":
        return _passkey(tokenizer, length, rng)
    return _text(tokenizer, task[len("text:"):], length, example)
