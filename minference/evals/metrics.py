"""Scorers: each takes the model's answer and the reference strings and returns a score in ``[0, 1]``.

RULER's string matches, InfiniteBench's per-task metrics (first integer, option letter, token/character F1,
ROUGE-Lsum) and the needle test's "the number appears in the answer". Task scores are means × 100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_CHINESE_PUNCT = set("，。！？；：“”‘’（）《》【】、…—·「」『』")


def _as_list(answers) -> list:
    if isinstance(answers, str):
        return [answers]
    return [str(a) for a in answers]


def contains(pred: str, answers: Sequence[str]) -> float:
    """1 if any reference occurs in the answer (case-sensitive), the published needle score."""
    return float(any(a in pred for a in _as_list(answers)))


def string_match_all(pred: str, answers: Sequence[str]) -> float:
    """RULER: the fraction of references contained in the answer, case-insensitive."""
    refs = _as_list(answers)
    if not refs:
        raise ValueError("answers must not be empty")
    low = pred.lower()
    return sum(r.lower() in low for r in refs) / len(refs)


def string_match_part(pred: str, answers: Sequence[str]) -> float:
    """RULER QA: 1 if any reference is contained in the answer, case-insensitive."""
    low = pred.lower()
    return float(any(r.lower() in low for r in _as_list(answers)))


def first_int_match(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench passkey / number_string: the first integer in the answer equals the reference."""
    found = re.search(r"\d+", pred)
    return float(found is not None and found.group(0) in {a.strip() for a in _as_list(answers)})


def first_number_match(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench math_find: the first (possibly negative or decimal) number equals the reference numerically."""
    found = re.search(r"-?\d+(?:\.\d+)?", pred)
    if found is None:
        return 0.0
    value = float(found.group(0))
    return float(any(_float_or_none(a) == value for a in _as_list(answers)))


def _float_or_none(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def word_match(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench kv_retrieval: the reference appears as a whole word once punctuation is turned into spaces."""
    cleaned = "".join(" " if c in _PUNCT and c != "-" else c for c in pred)
    words = set(cleaned.split())
    return float(any(a in words for a in _as_list(answers)))


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(pred_tokens: list, ref_tokens: list) -> float:
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench longbook_qa_eng: SQuAD token F1, the best over references."""
    pred_tokens = normalize_answer(pred).split()
    return max((_f1(pred_tokens, normalize_answer(a).split()) for a in _as_list(answers)), default=0.0)


def char_f1(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench longbook_qa_chn: character F1 after dropping whitespace and punctuation, best over references."""

    def chars(text: str) -> list:
        return [c for c in text.lower() if not c.isspace() and c not in _PUNCT and c not in _CHINESE_PUNCT]

    return max((_f1(chars(pred), chars(a)) for a in _as_list(answers)), default=0.0)


def _lcs(a: list, b: list) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_tokens(text: str) -> list:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_lsum(pred: str, answers: Sequence[str]) -> float:
    """ROUGE-Lsum F-measure (InfiniteBench longbook_sum_eng), best over references.

    Sentences are the answer's lines; each reference line is matched against the union of the longest common
    subsequences with every predicted line (the summary-level LCS of the ROUGE paper).
    """

    def score(ref: str) -> float:
        pred_lines = [_rouge_tokens(s) for s in pred.split("\n") if _rouge_tokens(s)]
        ref_lines = [_rouge_tokens(s) for s in ref.split("\n") if _rouge_tokens(s)]
        pred_len, ref_len = sum(map(len, pred_lines)), sum(map(len, ref_lines))
        if not pred_len or not ref_len:
            return 0.0
        pred_counts = Counter(t for line in pred_lines for t in line)
        ref_counts = Counter(t for line in ref_lines for t in line)
        hits = 0
        for ref_line in ref_lines:
            union = set()
            for pred_line in pred_lines:
                union |= _lcs_positions(ref_line, pred_line)
            for position in sorted(union):
                token = ref_line[position]
                if pred_counts[token] > 0 and ref_counts[token] > 0:
                    hits += 1
                    pred_counts[token] -= 1
                    ref_counts[token] -= 1
        if hits == 0:
            return 0.0
        precision, recall = hits / pred_len, hits / ref_len
        return 2 * precision * recall / (precision + recall)

    return max((score(a) for a in _as_list(answers)), default=0.0)


def _lcs_positions(a: list, b: list) -> set:
    """Positions in ``a`` of one longest common subsequence of ``a`` and ``b``."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
    positions, i, j = set(), 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            positions.add(i)
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return positions


_OPTION_PREFIXES = ("answer is:", "answer is", "answer:", "option is", "option")


def option_letter(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench longbook_choice_eng / code_debug: the chosen option letter equals the reference letter.

    The letter is the first character when it is A-D, else the letter after an "answer is"-style prefix, else the
    first standalone A-D word. ``answers`` holds the correct letter (and, for code_debug, the function name, which
    also counts when it follows the prefix).
    """
    refs = _as_list(answers)
    text = pred.strip()
    if text[:1] in "ABCD" and text[:1] and (len(text) == 1 or not text[1].isalpha()):
        return float(text[0] in refs)
    low = text.lower()
    for prefix in _OPTION_PREFIXES:
        at = low.find(prefix)
        if at >= 0:
            rest = text[at + len(prefix) :].strip().strip("*:()[] ")
            if rest[:1] in "ABCD" and rest[:1] and (len(rest) == 1 or not rest[1].isalpha()):
                return float(rest[0] in refs)
            if any(r and len(r) > 1 and rest.startswith(r) for r in refs):
                return 1.0
    for word in re.findall(r"\b[A-D]\b", text):
        return float(word in refs)
    return 0.0


def name_match(pred: str, answers: Sequence[str]) -> float:
    """InfiniteBench longdialogue_qa_eng: an upper-cased reference name occurs among the answer's upper-cased words."""
    words = set(re.findall(r"[A-Z0-9']+", pred.upper()))
    return float(any(a.upper() in words or a.upper() in pred.upper().split() for a in _as_list(answers)))


METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "contains": contains,
    "string_match_all": string_match_all,
    "string_match_part": string_match_part,
    "first_int": first_int_match,
    "first_number": first_number_match,
    "word_match": word_match,
    "token_f1": token_f1,
    "char_f1": char_f1,
    "rouge_lsum": rouge_lsum,
    "option_letter": option_letter,
    "name_match": name_match,
}


def score(metric: str, pred: str, answers: Sequence[str]) -> float:
    """Score ``pred`` with the named metric. Raises ValueError for an unknown ``metric``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if not isinstance(pred, str):
        raise TypeError(f"pred must be a str, got {type(pred).__name__}")
    return METRICS[metric](pred, answers)
