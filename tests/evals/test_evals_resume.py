"""Resuming eval results: records are reused only under the settings they were made with.

The CLI runs end to end on a word tokenizer, a fake model and a stub generator, so each test takes well under a second.
"""

import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from evals_helpers import WordTokenizer
from minference.evals import cli, needle, ppl, runner
from minference.evals.models import LoadedModel
from minference.evals.results import ResultStore

TEXT = " ".join(f"Sentence number {i} talks about the weather in the valley." for i in range(600))


@pytest.fixture
def harness(tmp_path, monkeypatch):
    """Patch model loading and generation; return ``(run(*argv), calls)`` where ``calls`` lists generated keys."""
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text(TEXT)
    calls = []
    loaded = LoadedModel(SimpleNamespace(dtype=torch.float32), WordTokenizer(), "fake", 10**6)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: loaded)
    monkeypatch.setattr(cli, "needle_heatmap", lambda *a, **k: None)
    monkeypatch.setattr(cli, "ppl_curve", lambda *a, **k: None)
    monkeypatch.setattr(cli, "score_curve", lambda *a, **k: None)
    monkeypatch.setattr(runner, "apply_attention", lambda model, method, budgets=None: None)
    monkeypatch.setattr(runner, "executed_tiles", lambda *a, **k: None)
    monkeypatch.setattr(runner, "prompt_ids", lambda loaded, ex, chat=True: torch.zeros(1, 8, dtype=torch.long))

    def answer(loaded, example, chat=True):
        calls.append(example.key)
        return example.answers[0], 8

    monkeypatch.setattr(runner, "generate_answer", answer)
    monkeypatch.setattr(ppl, "load_token_stream", lambda tok, n, **k: (list(range(1, 5001)), "fake text"))

    def nll(model, ids, chunk=4096):
        calls.append(("ppl", len(ids), ids[0]))
        return float(len(ids)), len(ids) - 1

    monkeypatch.setattr(ppl, "negative_log_likelihood", nll)

    def run(*argv):
        parser = argparse.ArgumentParser()
        cli.add_parser(parser.add_subparsers())
        args = parser.parse_args(["eval", *argv, "--out", str(tmp_path / "out"), "--text-dir", str(texts)])
        calls.clear()
        args.run(args)
        return list(calls)

    return run, tmp_path


NEEDLE = ("needle", "--methods", "dense", "--lengths", "300", "--depths", "0,50")


def test_a_rerun_with_the_same_settings_reuses_every_record(harness):
    run, _ = harness
    assert len(run(*NEEDLE)) == 2
    assert run(*NEEDLE) == []


@pytest.mark.parametrize(
    "extra, flag",
    [
        (("--seed", "7"), "--seed"),
        (("--question-first",), "--question-first"),
        (("--rope-scaling", "2"), "--rope-scaling"),
        (("--no-chat-template",), "--no-chat-template"),
    ],
)
def test_a_rerun_under_other_settings_is_refused_naming_the_argument(harness, extra, flag):
    run, tmp_path = harness
    run(*NEEDLE)
    before = (tmp_path / "out" / "needle-fake.json").read_text()
    with pytest.raises(ValueError, match=f"{flag}.*another --out"):
        run(*NEEDLE, *extra)
    assert (tmp_path / "out" / "needle-fake.json").read_text() == before  # nothing overwritten


def test_another_text_folder_is_refused(harness):
    run, tmp_path = harness
    run(*NEEDLE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text(TEXT.replace("weather", "harvest"))
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", *NEEDLE, "--out", str(tmp_path / "out"), "--text-dir", str(other)])
    with pytest.raises(ValueError, match="--text-dir"):
        args.run(args)


def test_other_depths_renumber_the_needles_and_are_refused(harness):
    run, _ = harness
    run(*NEEDLE)
    # index 1 was depth 50 and would now be depth 100: the old code reused it silently
    with pytest.raises(ValueError, match=r"--depths.*another --out"):
        run("needle", "--methods", "dense", "--lengths", "300", "--depths", "0,100")


def test_extra_lengths_and_rounds_only_add_cells(harness):
    run, tmp_path = harness
    run("needle", "--methods", "dense", "--lengths", "600", "--depths", "0,50")
    # a shorter length listed first used to draw the needles of 600 from a shifted random stream
    calls = run("needle", "--methods", "dense", "--lengths", "300,600", "--depths", "0,50", "--rounds", "2")
    assert sorted(calls) == sorted(["needle|300|0", "needle|300|1", "needle|300|2", "needle|300|3",
                                    "needle|600|2", "needle|600|3"])
    records = json.loads((tmp_path / "out" / "needle-fake.json").read_text())["records"]
    fresh = needle.generate(WordTokenizer(), [300, 600], [0, 50], 2, documents=[TEXT])
    assert {e.key: list(e.answers) for e in fresh} == {
        k.split("|", 1)[1]: r["answers"] for k, r in records.items()
    }  # every stored record, reused or new, is the one this grid asks for


def test_a_changed_config_file_is_refused_naming_the_method(harness):
    run, tmp_path = harness
    config = tmp_path / "searched.json"
    config.write_text("[1]")
    methods = f"dense,minference:{config}"
    run("needle", "--methods", methods, "--lengths", "300", "--depths", "0")
    assert run("needle", "--methods", methods, "--lengths", "300", "--depths", "0") == []
    config.write_text("[2]")  # a re-search under the same name
    with pytest.raises(ValueError, match=f"minference:{config}.*another --out"):
        run("needle", "--methods", methods, "--lengths", "300", "--depths", "0")


def test_ppl_windows_moved_by_samples_are_refused_and_shorter_lengths_add_cells(harness):
    run, _ = harness
    assert len(run("ppl", "--methods", "dense", "--lengths", "100,200", "--samples", "2")) == 4
    assert run("ppl", "--methods", "dense", "--lengths", "50,100,200", "--samples", "2") == [
        ("ppl", 50, 1),
        ("ppl", 50, 4951),
    ]
    with pytest.raises(ValueError, match=r"--samples.*another --out"):
        run("ppl", "--methods", "dense", "--lengths", "100,200", "--samples", "3")


def test_records_from_before_settings_were_kept_are_not_reused(tmp_path):
    store = ResultStore(tmp_path / "old.json")
    store.add("dense", "needle|300|0", {"task": "needle", "length": 300, "score": 1.0})
    with pytest.raises(ValueError, match="did not record its settings.*another --out"):
        ResultStore(tmp_path / "old.json").bind({"seed": 42})


def test_settings_compare_as_they_read_back_from_json(tmp_path):
    store = ResultStore(tmp_path / "r.json")
    store.bind({"depths": (0.0, 50.0), "seed": 42})
    store.add("dense", "k", {"task": "needle", "length": 1, "score": 1.0}, fingerprint="abc")
    again = ResultStore(tmp_path / "r.json")
    again.bind({"depths": (0.0, 50.0), "seed": 42})  # tuples became lists on disk: still equal
    assert again.done("dense", "k", "abc")
    with pytest.raises(ValueError, match="other prompts"):
        again.done("dense", "k", "abd")


def test_results_of_a_model_named_with_dots_keep_the_whole_name(harness, monkeypatch):
    run, tmp_path = harness
    dotted = LoadedModel(SimpleNamespace(dtype=torch.float32), WordTokenizer(), "qwen2.5-coder-0.5b-instruct", 10**6)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: dotted)
    run(*NEEDLE)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["needle-qwen2.5-coder-0.5b-instruct.json", "needle-qwen2.5-coder-0.5b-instruct.md"], written
