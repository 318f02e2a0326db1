"""The search end to end on a tiny random Llama on CPU: a valid config, resumable, and the CLI commands."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from evals_helpers import byte_tokenizer
from minference import config as config_io
from minference import config_show
from minference.search import choose
from minference.search import cli as search_cli
from minference.search import runner
from minference.search.prompts import calibration_ids

LENGTH = 384


def _tokenizer():
    return byte_tokenizer()


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny():
    return _model(), _tokenizer()


def _search(tiny, work_dir, **kwargs):
    model, tokenizer = tiny
    options = {"task": "kv_retrieval", "length": LENGTH, "num_examples": 2, "target_density": 0.6,
               "work_dir": work_dir, "model_name": "tiny-llama", "progress": False}
    options.update(kwargs)
    return runner.search(model, tokenizer, **options)


def test_search_writes_a_config_valid_for_the_model(tiny, tmp_path):
    config = _search(tiny, tmp_path / "scores")
    loaded = config_io.validate(config, tiny[0].config)
    assert (loaded.num_layers, loaded.num_heads) == (2, 4)
    meta = config["metadata"]
    assert meta["model"] == "tiny-llama" and meta["task"] == "kv_retrieval" and meta["length"] == LENGTH
    assert meta["examples"] == [0, 2] and meta["date"]
    assert 0 < meta["density"] <= 0.6 + 1e-9, meta["density"]
    assert len(meta["scores"]) == 2 and all(len(layer) == 4 for layer in meta["scores"])
    assert all(0 <= s["recall"] <= 1 and 0 <= s["recall_last"] <= 1 for layer in meta["scores"] for s in layer)
    assert 0 <= meta["recall_last"] <= 1 and "min(recall, recall_last)" in meta["objective"]
    saved = config_io.save(config, tmp_path / "config.json")
    assert config_io.load(saved).to_list() == loaded.to_list()


def test_interrupted_and_resumed_search_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    whole = _search(tiny, tmp_path / "whole")
    real_score_layer = runner.score_layer
    calls = []

    def interrupt_after_three(*args, **kwargs):
        if len(calls) == 3:  # example 1, layer 1 never gets scored
            raise KeyboardInterrupt
        calls.append(1)
        return real_score_layer(*args, **kwargs)

    monkeypatch.setattr(runner, "score_layer", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        _search(tiny, tmp_path / "resumed")
    assert sorted(p.name for p in (tmp_path / "resumed").glob("example*.json")) == [
        "example0000-layer000.json", "example0000-layer001.json", "example0001-layer000.json"]
    assert not list((tmp_path / "resumed").glob(".*.tmp")), "a partial write was left behind"
    scored = []
    monkeypatch.setattr(runner, "score_layer", lambda *a, **k: scored.append(1) or real_score_layer(*a, **k))
    resumed = _search(tiny, tmp_path / "resumed")
    assert len(scored) == 1, "resuming must score only the missing layer"
    whole["metadata"].pop("date")
    resumed["metadata"].pop("date")
    assert json.dumps(resumed, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_work_dir_of_another_search_is_refused(tiny, tmp_path):
    _search(tiny, tmp_path / "scores", num_examples=1)
    with pytest.raises(ValueError, match="different search.*length"):
        _search(tiny, tmp_path / "scores", num_examples=1, length=LENGTH + 64)


def test_scores_of_an_older_version_are_refused_not_mixed(tiny, tmp_path):
    work_dir = tmp_path / "scores"
    _search(tiny, work_dir, num_examples=1)
    manifest = json.loads((work_dir / "manifest.json").read_text())
    assert manifest["score_version"] == runner.SCORE_VERSION
    item = json.loads((work_dir / "example0000-layer000.json").read_text())["scores"][0][0]
    assert 0 <= item["recall_last"] <= 1
    del manifest["score_version"]  # a work folder written before recall_last existed
    (work_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="different search.*score_version"):
        _search(tiny, work_dir, num_examples=1)
    with pytest.raises(ValueError, match="version-1 scores"):
        runner.load_table(work_dir, manifest, range(1))


def _stored(work_dir, example, layer):
    return json.loads((work_dir / f"example{example:04d}-layer{layer:03d}.json").read_text())["scores"]


def test_scores_of_another_task_join_the_average_one_weight_per_example(tiny, tmp_path):
    prose = tmp_path / "prose.txt"
    prose.write_text("The river ran past the mill and the miller sang of rain. " * 60)
    _search(tiny, tmp_path / "retrieval")  # examples 0 and 1
    _search(tiny, tmp_path / "prose", task=f"text:{prose}", num_examples=1)
    mixed = _search(tiny, tmp_path / "prose", task=f"text:{prose}", num_examples=1, add_scores=[tmp_path / "retrieval"])
    manifest = json.loads((tmp_path / "prose" / "manifest.json").read_text())
    expected = [choose.average_scores([_stored(tmp_path / "prose", 0, layer), _stored(tmp_path / "retrieval", 0, layer),
                                       _stored(tmp_path / "retrieval", 1, layer)]) for layer in range(2)]
    table = runner.load_table(tmp_path / "prose", manifest, range(1), add=[tmp_path / "retrieval"])
    assert table == expected
    by_hand = runner.build_config(manifest, expected, range(1), target_density=0.6, model_name="tiny-llama",
                                  calibration=mixed["metadata"]["calibration"])
    by_hand["metadata"].pop("date"), mixed["metadata"].pop("date")
    assert by_hand == mixed
    assert mixed["metadata"]["calibration"] == [
        {"task": f"text:{prose}", "seed": 0, "examples": [0]}, {"task": "kv_retrieval", "seed": 0, "examples": [0, 1]}]
    alone = _search(tiny, tmp_path / "prose", task=f"text:{prose}", num_examples=1)
    assert alone["metadata"]["calibration"] == [{"task": f"text:{prose}", "seed": 0, "examples": [0]}]
    assert [s["recall"] for s in alone["metadata"]["scores"][0]] != [s["recall"] for s in mixed["metadata"]["scores"][0]]


def test_added_scores_must_be_a_finished_search_of_the_same_scale(tiny, tmp_path):
    _search(tiny, tmp_path / "main", num_examples=1)
    manifest = json.loads((tmp_path / "main" / "manifest.json").read_text())
    _search(tiny, tmp_path / "longer", num_examples=1, length=LENGTH + 64)
    with pytest.raises(ValueError, match="add: .*differs in length"):
        runner.load_table(tmp_path / "main", manifest, range(1), add=[tmp_path / "longer"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no search scores"):
        runner.load_table(tmp_path / "main", manifest, range(1), add=[tmp_path / "empty"])
    _search(tiny, tmp_path / "cut", num_examples=1, seed=1)
    (tmp_path / "cut" / "example0000-layer001.json").unlink()
    with pytest.raises(ValueError, match="example 0 is scored on only 1 of 2 layers"):
        runner.load_table(tmp_path / "main", manifest, range(1), add=[tmp_path / "cut"])
    (tmp_path / "cut" / "example0000-layer000.json").unlink()
    with pytest.raises(ValueError, match="no scored example"):
        runner.load_table(tmp_path / "main", manifest, range(1), add=[tmp_path / "cut"])


def test_prompts_have_the_exact_length_and_depend_only_on_the_example(tiny):
    tokenizer = tiny[1]
    for task in ("kv_retrieval", "passkey"):
        first = calibration_ids(tokenizer, task, 700, 3)
        assert len(first) == 700 and first[0] == tokenizer.bos_token_id
        assert first == calibration_ids(tokenizer, task, 700, 3)
        assert first != calibration_ids(tokenizer, task, 700, 4)
    text = tokenizer.decode(calibration_ids(tokenizer, "kv_retrieval", 700, 3))
    key = text.split('Key: "')[1].split('"')[0]
    assert text.count(key) == 2, "the asked key must be in the kept part of the JSON"
    with pytest.raises(ValueError, match="task"):
        calibration_ids(tokenizer, "nope", 700, 0)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="minference")
    subparsers = parser.add_subparsers(dest="command", required=True)
    search_cli.add_parser(subparsers)
    config_show.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_search_then_config_show(tiny, tmp_path, capsys):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "config.json"
    text_file = tmp_path / "calibration.txt"
    text_file.write_text("A long text about attention heads. " * 40)
    assert _cli(["search", "--model", str(tmp_path / "model"), "--task", f"text:{text_file}", "--length", str(LENGTH),
                 "--out", str(out), "--min-recall", "0.9", "--no-progress"]) == 0
    assert (tmp_path / "config.json.partial" / "manifest.json").exists()
    config = config_io.load(out)
    assert config.num_layers == 2 and config.metadata["selection"] == {"min_recall": 0.9}
    _search(tiny, tmp_path / "retrieval", num_examples=1)
    assert _cli(["search", "--model", str(tmp_path / "model"), "--task", f"text:{text_file}", "--length", str(LENGTH),
                 "--out", str(out), "--min-recall", "0.9", "--no-progress", "--add-scores", str(tmp_path / "retrieval")]) == 0
    assert [c["task"] for c in config_io.load(out).metadata["calibration"]] == [f"text:{text_file}", "kv_retrieval"]
    capsys.readouterr()
    assert _cli(["config", "show", str(out), "--heatmap", str(tmp_path / "map.png")]) == 0
    shown = capsys.readouterr().out
    assert "layer" in shown and "recall" in shown and shown.count("\n") >= 4
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_cli_rejects_bad_options(tmp_path, capsys):
    for argv, word in ((["--target-density", "1.5"], "target-density"), (["--target-speedup", "0.5"], "speedup"),
                       (["--target-density", "0.5", "--min-recall", "0.9"], "not allowed"), (["--task", "nope"], "task"),
                       (["--tile-costs", "walk=1"], "tile-costs")):
        with pytest.raises(SystemExit):
            _cli(["search", "--model", "x", "--length", "64", "--out", str(tmp_path / "c.json"), *argv])
        assert word in capsys.readouterr().err


def test_budget_labels_tell_block_sizes_apart():
    labels = [config_show.budget_label(entry) for entry in (
        {"pattern": "block_sparse", "top_k": 8, "block_size": 64}, {"pattern": "block_sparse", "top_k": 8},
        {"pattern": "block_sparse", "top_k": 8, "block_size": 128}, {"pattern": "a_shape", "sink": 64, "local": 2048},
        {"pattern": "vertical_slash", "vertical": 1000, "slash": 6096}, {"pattern": "dense"})]
    assert labels == ["k8", "k8", "k8x128", "64/2.05K", "1K/6.1K", "dense"]
