"""Merging result files of one run split over processes or machines, and tables that compare like with like."""

import json

import pytest

from minference.evals import cli
from minference.evals.report import by_length, by_task, finished_tasks
from minference.evals.results import ResultStore

SETTINGS = {"model": "fake", "dtype": "float32", "seed": 42}


def _store(path, methods, cells, settings=SETTINGS, benchmark="ruler", prompt="p"):
    """A results file holding, for every method, ``cells = {(task, length): [score, ...]}``."""
    store = ResultStore(path, meta={"model": "fake", "benchmark": benchmark, "methods": list(methods)})
    store.bind(settings, {"tasks": sorted({t for t, _ in cells})}, {m: {"attn_type": m} for m in methods})
    for method in methods:
        for (task, length), scores in cells.items():
            for i, score in enumerate(scores):
                key = f"{task}|{length}|{i}"
                store.add(method, key, {"task": task, "length": length, "index": i, "score": score}, f"{prompt}{key}")
    return store


def test_files_of_one_run_split_by_method_merge_into_one_table(tmp_path):
    cells = {("vt", 8000): [1.0, 0.0], ("cwe", 8000): [1.0, 1.0]}
    a = _store(tmp_path / "a.json", ["dense"], cells)
    b = _store(tmp_path / "b.json", ["streaming"], {("vt", 8000): [0.0, 0.0], ("cwe", 8000): [1.0, 0.0]})
    merged, report = cli.merge_results([a.path, b.path], tmp_path / "out")
    assert merged.path == tmp_path / "out" / "ruler-fake.json"
    saved = json.loads(merged.path.read_text())
    assert len(saved["records"]) == 8 and saved["meta"]["methods"] == ["dense", "streaming"]
    table = (tmp_path / "out" / "ruler-fake.md").read_text()
    assert table == report and "| dense | 75.0 |" in table and "| streaming | 25.0 |" in table


def test_a_merge_keeps_what_the_destination_already_holds(tmp_path):
    cells = {("vt", 8000): [1.0]}
    (tmp_path / "out").mkdir()
    _store(tmp_path / "out" / "ruler-fake.json", ["dense"], cells)
    b = _store(tmp_path / "b.json", ["streaming"], cells)
    merged, _ = cli.merge_results([b.path], tmp_path / "out")
    assert {r["method"] for r in merged.records.values()} == {"dense", "streaming"}


@pytest.mark.parametrize("change, message", [
    ({"settings": {**SETTINGS, "seed": 7}}, "--seed 42 -> 7"),
    ({"benchmark": "infinitebench"}, "benchmark"),
    ({"prompt": "q"}, "other prompts"),
])
def test_files_that_cannot_share_a_table_are_refused(tmp_path, change, message):
    cells = {("vt", 8000): [1.0]}
    a = _store(tmp_path / "a.json", ["dense"], cells)
    b = _store(tmp_path / "b.json", ["dense"], cells, **change)
    with pytest.raises(ValueError, match=message):
        cli.merge_results([a.path, b.path], tmp_path / "out")
    assert not (tmp_path / "out" / "ruler-fake.json").exists()


def test_a_method_run_under_other_settings_is_refused(tmp_path):
    cells = {("vt", 8000): [1.0]}
    a = _store(tmp_path / "a.json", ["minference"], cells)
    b = _store(tmp_path / "b.json", ["minference"], {("cwe", 8000): [1.0]})
    b.meta["method_settings"]["minference"] = {"attn_type": "minference", "config": "another hash"}
    b.save()
    with pytest.raises(ValueError, match="method 'minference'"):
        cli.merge_results([a.path, b.path], tmp_path / "out")


def test_paths_that_are_not_results_files_are_named(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"records": {}}))
    with pytest.raises(ValueError, match="x.json is not a results file"):
        cli.merge_results([tmp_path / "x.json"], tmp_path / "out")
    with pytest.raises(ValueError, match="missing.json is not a results file"):
        cli.merge_results([tmp_path / "missing.json"], tmp_path / "out")
    with pytest.raises(ValueError, match="at least one"):
        cli.merge_results([], tmp_path / "out")


def test_averages_cover_only_the_tasks_every_method_finished(tmp_path):
    dense = _store(tmp_path / "a.json", ["dense"], {("vt", 8000): [0.0, 0.0], ("cwe", 8000): [1.0, 1.0]})
    # the sparse run stopped part-way: cwe has one of its two examples, vt none
    sparse = _store(tmp_path / "b.json", ["sparse"], {("cwe", 8000): [1.0]})
    dense.merge(sparse)
    assert finished_tasks(dense)[8000] == set()
    sparse = _store(tmp_path / "c.json", ["sparse"], {("cwe", 8000): [1.0, 0.0]})
    dense = _store(tmp_path / "a.json", ["dense"], {("vt", 8000): [0.0, 0.0], ("cwe", 8000): [1.0, 1.0]})
    dense.merge(sparse)
    assert finished_tasks(dense)[8000] == {"cwe"}
    table = by_length(dense)
    # dense over cwe alone (100), not over cwe and vt (50): the same tasks as the sparse row
    assert "| dense | 100.0 |" in table and "| sparse | 50.0 |" in table
    assert "over the 1 tasks every method finished (not finished by every method: vt)" in table
    detail = by_task(dense, ["cwe", "vt"])
    assert "| dense | 100.0 | 0.0 | 100.0 |" in detail and "| sparse | 50.0 | – | 50.0 |" in detail


def test_the_report_command_merges_and_prints_the_tables(tmp_path, capsys):
    import argparse

    a = _store(tmp_path / "a.json", ["dense"], {("vt", 8000): [1.0]})
    b = _store(tmp_path / "b.json", ["sparse"], {("vt", 8000): [0.0]})
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", "report", str(a.path), str(b.path), "--out", str(tmp_path / "out")])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "| dense | 100.0 |" in printed and "| sparse | 0.0 |" in printed
    assert f"results: {tmp_path / 'out' / 'ruler-fake.json'}" in printed


def test_a_partial_cell_is_not_shown_as_a_score(tmp_path):
    dense = _store(tmp_path / "a.json", ["dense"], {("cwe", 8000): [1.0, 1.0], ("vt", 8000): [1.0, 1.0]})
    dense.merge(_store(tmp_path / "b.json", ["sparse"], {("cwe", 8000): [1.0, 1.0], ("vt", 8000): [0.0]}))
    assert "| sparse | 100.0 | – | 100.0 |" in by_task(dense, ["cwe", "vt"])


def test_tasks_only_another_file_ran_keep_their_columns(tmp_path):
    a = _store(tmp_path / "a.json", ["dense"], {("vt", 8000): [1.0]})
    b = _store(tmp_path / "b.json", ["dense"], {("fwe", 8000): [0.0]})
    _, report = cli.merge_results([a.path, b.path], tmp_path / "out")
    assert "| Method | vt | fwe | Avg. |" in report


def test_ruler_and_infinitebench_reports_draw_the_average_against_length(tmp_path):
    a = _store(tmp_path / "a.json", ["dense"], {("vt", 8000): [1.0], ("vt", 16000): [0.0]})
    cli.merge_results([a.path], tmp_path / "out")
    picture = tmp_path / "out" / "ruler-fake.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written through a temporary file, none left behind
