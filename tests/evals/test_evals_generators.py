"""Generators and templates: the answer is in the prompt, lengths fit, needles sit at sentence boundaries."""

import re

import pytest
from evals_helpers import WordTokenizer

from minference.evals import infinitebench, needle, ruler
from minference.evals.methods import matched_budgets, parse_method, parse_methods
from minference.evals.prompting import fit_units, truncate_middle

DOCS = [
    "Alpha beta gamma. Delta epsilon zeta eta. Theta iota. " * 200,
    "One two three. Four five six seven. " * 200,
]


def test_needle_goes_after_the_previous_sentence_end():
    tok = WordTokenizer()
    ids = tok.encode("a b c. d e f g. h i j.")
    is_end = lambda t: tok.decode([t]).endswith(".")
    assert needle.depth_position(ids, 0, is_end) == 0
    assert needle.depth_position(ids, 50, is_end) == 3  # position 5 moves back to after "c."
    assert needle.depth_position(ids, 100, is_end) == len(ids)
    out = needle.insert_needle(ids, [999], 80, is_end)
    assert out[:7] == ids[:7] and out[7] == 999


def test_needle_depth_outside_range_raises():
    with pytest.raises(ValueError, match="depth"):
        needle.depth_position([1, 2], 101, lambda t: True)


def test_needle_example_holds_number_and_fits_length():
    tok = WordTokenizer()
    examples = needle.generate(tok, [300, 600], depths=[0, 50, 100], documents=DOCS, seed=1)
    assert len(examples) == 6
    for ex in examples:
        number = ex.answers[0]
        assert re.search(rf"magic \w[\w ]* number is: {number}\.", ex.prompt)
        assert len(tok.encode(ex.prompt)) <= ex.length
        before = ex.prompt.split(f"is: {number}.")[0].split("The special magic")[0].rstrip()
        if ex.meta["depth"] < 100:  # depth 100 appends after the (trimmed) haystack
            assert before.endswith(".") or before.endswith(")."), before[-40:]


def test_generation_is_seeded():
    tok = WordTokenizer()
    a = infinitebench.generate(tok, ["passkey", "kv_retrieval", "math_find"], [400], 2, seed=3)[0]
    b = infinitebench.generate(tok, ["passkey", "kv_retrieval", "math_find"], [400], 2, seed=3)[0]
    assert [e.prompt for e in a] == [e.prompt for e in b]


@pytest.mark.parametrize("task", infinitebench.GENERATED)
def test_infinitebench_generated_answer_is_derivable(task):
    tok = WordTokenizer()
    (ex,), skipped = infinitebench.generate(tok, [task], [500], 1, seed=0)
    assert not skipped and len(tok.encode(ex.prompt)) <= 500
    if task == "math_find":
        numbers = [int(x) for x in ex.prompt.split("[")[1].split("]")[0].split(", ")]
        expected = {
            "largest": max(numbers),
            "smallest": min(numbers),
            "median": sorted(numbers)[len(numbers) // 2],
        }[ex.meta["what"]]
        assert ex.answers == (str(expected),)
    else:
        assert ex.answers[0] in ex.prompt


def test_infinitebench_loaded_tasks_skip_without_data():
    tok = WordTokenizer()
    examples, skipped = infinitebench.generate(tok, ["longbook_qa_eng", "passkey"], [300], 1)
    assert [e.task for e in examples] == ["passkey"]
    assert "longbook_qa_eng" in skipped and "skipped" in skipped["longbook_qa_eng"]


def test_infinitebench_choice_record_scores_letter(tmp_path):
    tok = WordTokenizer()
    record = {
        "id": 0,
        "context": "word " * 2000,
        "input": "Who?",
        "answer": ["Bob"],
        "options": ["Ann", "Bob", "Cid", "Dan"],
    }
    ex = infinitebench.from_record(tok, "longbook_choice_eng", record, 400, 0)
    assert ex.answers == ("B",) and len(tok.encode(ex.prompt)) <= 400


@pytest.mark.parametrize("task", [t for t in ruler.TASKS if not t.startswith("qa")])
def test_ruler_answers_are_in_the_context_and_prompt_fits(task):
    tok = WordTokenizer()
    (ex,), skipped = ruler.generate(tok, [task], [800], 1, documents=DOCS, seed=5)
    assert not skipped and len(tok.encode(ex.prompt)) <= 800
    for answer in ex.answers:
        assert answer in ex.prompt, (task, answer)
    assert ex.metric == "string_match_all"


def test_ruler_variable_chain_is_in_order():
    tok = WordTokenizer()
    (ex,), _ = ruler.generate(tok, ["vt"], [600], 1, seed=2)
    positions = [ex.prompt.index(f"VAR {name} =") for name in ex.answers]
    assert positions == sorted(positions)


def test_ruler_cwe_common_words_are_most_frequent():
    tok = WordTokenizer()
    (ex,), _ = ruler.generate(tok, ["cwe"], [1200], 1, seed=2)
    words = re.findall(r"^\d+\. (\S+)$", ex.prompt, flags=re.MULTILINE)
    counts = {w: words.count(w) for w in set(words)}
    top = sorted(counts, key=counts.get, reverse=True)[:10]
    assert set(top) == set(ex.answers)


def test_ruler_qa_skips_without_dataset_and_loads_squad_json(tmp_path):
    tok = WordTokenizer()
    _, skipped = ruler.generate(tok, ["qa_1", "qa_2"], [300], 1)
    assert set(skipped) == {"qa_1", "qa_2"}
    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": f"Paragraph {i} says the code is X{i}.",
                        "qas": [{"question": f"Code {i}?", "answers": [{"text": f"X{i}"}]}],
                    }
                    for i in range(30)
                ]
            }
        ]
    }
    path = tmp_path / "squad.json"
    path.write_text(__import__("json").dumps(squad))
    (ex,), skipped = ruler.generate(tok, ["qa_1"], [300], 1, squad=str(path))
    assert not skipped and ex.answers[0] in ex.prompt and ex.metric == "string_match_part"


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="tasks"):
        ruler.generate(WordTokenizer(), ["niah_single_9"], [100], 1)


def test_fit_units_finds_the_largest_prefix():
    tok = WordTokenizer()
    units = ["a b c"] * 50
    k = fit_units(tok, units, 31, join=" ")
    assert len(tok.encode(" ".join(units[:k]))) <= 31 < len(tok.encode(" ".join(units[: k + 1])))


def test_truncate_middle_keeps_both_ends():
    assert truncate_middle(list(range(10)), 4) == [0, 1, 8, 9]
    assert truncate_middle([1, 2], 4) == [1, 2]


def test_methods_parse_and_dense_first():
    methods = parse_methods("minference@0.1,dense,minference")
    assert [m.label for m in methods][0] == "dense"
    assert parse_method("minference@0.1").density == 0.1
    for bad in ("minference@2", "dense@0.1", "", "minference@x"):
        with pytest.raises(ValueError):
            parse_method(bad)
    with pytest.raises(ValueError, match="distinct"):
        parse_methods("dense,dense")


def test_matched_budgets_keep_the_default_ratio():
    vertical, slash = matched_budgets(0.1, 8192)
    assert vertical + slash == round(0.1 * 8192 / 2)
    assert abs(vertical / (vertical + slash) - 1000 / 7096) < 0.01


def test_unknown_tasks_and_empty_grids_are_refused_by_name():
    from minference.evals import infinitebench, ruler

    with pytest.raises(ValueError, match="tasks must be among"):
        ruler.generate(None, ["niah_single_9"], [1024], 1)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        infinitebench.generate(None, ["passkey"], [1024], 0)
