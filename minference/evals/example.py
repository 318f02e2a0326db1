"""One eval prompt: the text the model reads, the answers that count, and how to score it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .results import fingerprint


@dataclass(frozen=True)
class Example:
    """A generated or loaded prompt.

    Attributes:
        task: task name (``passkey``, ``niah_single_1``, ``needle`` ...).
        length: the target prompt length in tokens (the grid column it belongs to).
        index: position of the example inside its (task, length) cell.
        prompt: the user message (context and question).
        answers: reference strings; the metric decides how they count.
        metric: a name in :data:`minference.evals.metrics.METRICS`.
        max_new_tokens: greedy generation budget.
        answer_prefix: text the assistant turn starts with (``" The pass key is"``); may be empty.
        meta: anything else worth keeping in the results (depth, city, seed ...), JSON-serialisable.
    """

    task: str
    length: int
    index: int
    prompt: str
    answers: tuple
    metric: str
    max_new_tokens: int
    answer_prefix: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable id inside a run: task, length and index (depth etc. are in ``index`` order)."""
        return f"{self.task}|{self.length}|{self.index}"

    @property
    def fingerprint(self) -> str:
        """Hash of everything the record depends on besides the method and model: the prompt and how it is scored.

        The key only says where the example sits in the grid; another seed, depth list or text puts another prompt
        under the same key, and the fingerprint tells them apart.
        """
        content = asdict(self)
        del content["task"], content["length"], content["index"]
        return fingerprint(content)

    def to_record(self) -> dict:
        record = asdict(self)
        record.pop("prompt")
        record["answers"] = list(self.answers)
        return record


def check_grid(tasks, samples: int, known) -> list:
    """The task names of a benchmark grid, checked: each in ``known``, and ``samples >= 1``.

    Raises:
        ValueError: an unknown task or ``samples < 1``.
    """
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"tasks must be among {tuple(known)}, got {unknown}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    return tasks
