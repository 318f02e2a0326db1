"""Scorers: a known answer scores 1, a wrong one 0, and the published edge cases."""

import pytest

from minference.evals import metrics


@pytest.mark.parametrize(
    "metric, right, wrong, answers",
    [
        ("contains", "The number is 1234567.", "It is 7654321.", ["1234567"]),
        ("first_int", "12345 is the pass key", "The key is 54321, not 12345", ["12345"]),
        ("first_number", "The largest number is 97.", "It is 96", ["97"]),
        ("word_match", 'value: "a1b2-c3".', "value a1b2", ["a1b2-c3"]),
        ("token_f1", "the Eiffel Tower", "a bridge", ["Eiffel Tower"]),
        ("char_f1", "北京。", "上海", ["北京"]),
        ("rouge_lsum", "the cat sat on the mat", "dogs bark", ["the cat sat on the mat"]),
        ("option_letter", "B", "C", ["B"]),
        ("name_match", "It was HAMLET.", "Ophelia", ["Hamlet"]),
        ("string_match_part", "answer: PARIS", "london", ["Paris", "paris city"]),
    ],
)
def test_right_answer_scores_one_and_wrong_zero(metric, right, wrong, answers):
    assert metrics.score(metric, right, answers) == 1.0, metric
    assert metrics.score(metric, wrong, answers) == 0.0, metric


def test_string_match_all_is_the_fraction_found_case_insensitive():
    assert metrics.string_match_all("Values: 111, 333", ["111", "222", "333", "444"]) == 0.5
    assert metrics.string_match_all("APPLE", ["apple"]) == 1.0


def test_string_match_all_rejects_empty_references():
    with pytest.raises(ValueError, match="answers"):
        metrics.string_match_all("x", [])


def test_first_int_uses_only_the_first_integer():
    assert metrics.first_int_match("no digits here", ["1"]) == 0.0
    assert metrics.first_int_match("1 then 12345", ["12345"]) == 0.0


def test_first_number_compares_numerically():
    assert metrics.first_number_match("-3.0 it is", ["-3"]) == 1.0


def test_token_f1_partial_overlap_and_best_reference():
    score = metrics.token_f1("red apple pie", ["apple"])
    assert score == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert metrics.token_f1("apple", ["pear", "apple"]) == 1.0
    assert metrics.token_f1("", ["apple"]) == 0.0


def test_rouge_lsum_partial_and_multiline():
    assert 0 < metrics.rouge_lsum("the cat sat", ["the cat sat on the mat"]) < 1
    assert metrics.rouge_lsum("on the mat\nthe cat sat", ["the cat sat\non the mat"]) == 1.0


@pytest.mark.parametrize("pred", ["The answer is: C", "answer is (C).", "I think C is right", "C."])
def test_option_letter_parses_prefixes(pred):
    assert metrics.option_letter(pred, ["C"]) == 1.0


def test_option_letter_accepts_function_name_after_prefix():
    assert metrics.option_letter("The answer is: parse_args", ["B", "parse_args"]) == 1.0


def test_unknown_metric_and_bad_prediction_type_raise():
    with pytest.raises(ValueError, match="metric"):
        metrics.score("bleu", "x", ["x"])
    with pytest.raises(TypeError, match="pred"):
        metrics.score("contains", None, ["x"])
