"""Density counting, resumable atomic results, tables."""

import json
from types import SimpleNamespace

import pytest
import torch

from minference.evals.density import Rankings, calibrate, causal_area, vertical_slash_area
from minference.evals.example import Example
from minference.evals.methods import Method
from minference.evals.results import ResultStore, markdown_table
from minference.index import build_vertical_slash_index, vertical_slash_index_mask_rows


@pytest.mark.parametrize("tile", [64, 128])
@pytest.mark.parametrize("n", [1, 63, 64, 130, 257])
def test_vertical_slash_area_equals_the_kernel_mask(n, tile):
    g = torch.Generator().manual_seed(n)
    vertical = torch.randint(0, n, (1, 3, 7), generator=g, dtype=torch.int32)
    slash = torch.randint(0, n, (1, 3, 5), generator=g, dtype=torch.int32)
    mask = vertical_slash_index_mask_rows(build_vertical_slash_index(n, vertical, slash, tile), n, 0, n)
    area = vertical_slash_area(n, vertical, slash, tile)
    assert torch.equal(area, mask.sum(dim=(-1, -2)).double()), (area, mask.sum(dim=(-1, -2)))


def test_full_budgets_are_fully_dense_and_calibration_hits_below_target():
    n = 2048
    ranks = torch.randperm(n).view(1, 1, n).int()
    rankings = Rankings(n, [ranks.expand(1, 2, n)], [torch.arange(n).view(1, 1, n).int().expand(1, 2, n)])
    assert rankings.density(n, n) == pytest.approx(1.0)
    vertical, slash, density = calibrate(rankings, 0.3)
    assert density <= 0.3 + 0.005 and density > 0.2
    assert causal_area(4) == 10


def _example(i):
    return Example("passkey", 128, i, "prompt", ("1",), "first_int", 4)


def test_store_resumes_after_interruption(tmp_path):
    path = tmp_path / "run.json"
    store = ResultStore(path, meta={"model": "m"})
    store.add("dense", _example(0).key, {**_example(0).to_record(), "score": 1.0})
    store.set_density("dense", 128, {"density": 1.0})
    # a crash here leaves a complete file: reopen and continue
    again = ResultStore(path)
    assert again.done("dense", _example(0).key) and not again.done("dense", _example(1).key)
    assert again.meta["model"] == "m" and again.density["dense"]["128"]["density"] == 1.0
    again.add("dense", _example(1).key, {**_example(1).to_record(), "score": 0.0})
    assert ResultStore(path).scores() == {"dense": {("passkey", 128): 50.0}}
    assert not list(tmp_path.glob("*.tmp"))
    json.loads(path.read_text())


def test_run_examples_skips_finished_records(tmp_path, monkeypatch):
    from minference.evals import runner

    calls = []
    monkeypatch.setattr(
        runner, "generate_answer", lambda loaded, ex, chat=True: (calls.append(ex.key) or "1", 10)
    )
    monkeypatch.setattr(
        runner, "prompt_ids", lambda loaded, ex, chat=True: torch.zeros(1, 10, dtype=torch.long)
    )
    monkeypatch.setattr(runner, "apply_attention", lambda model, method, budgets=None: None)
    store = ResultStore(tmp_path / "r.json")
    store.add("dense", _example(0).key, {**_example(0).to_record(), "score": 1.0}, _example(0).fingerprint)
    examples = [_example(0), _example(1)]
    runner.run_examples(
        SimpleNamespace(model=None), [Method("dense", "dense")], examples, store, measure_density=False
    )
    assert calls == [_example(1).key]
    assert ResultStore(tmp_path / "r.json").scores()["dense"][("passkey", 128)] == 100.0


def test_markdown_table_has_methods_as_rows_and_dashes_for_gaps():
    table = markdown_table({"dense": {"4K": 100.0}, "minference": {"4K": 90.0, "8K": 80.0}}, ["4K", "8K"])
    lines = table.splitlines()
    assert lines[0] == "| Method | 4K | 8K | Avg. |"
    assert lines[2] == "| dense | 100.0 | – | 100.0 |"
    assert lines[3] == "| minference | 90.0 | 80.0 | 85.0 |"


def test_a_config_method_takes_registry_names_and_names_what_is_missing():
    import transformers

    from minference.evals.methods import parse_methods
    from minference.evals.models import apply_attention

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(config).eval()
    with pytest.raises(ValueError, match="minference:no-such-config"):
        apply_attention(model, parse_methods("minference:no-such-config")[0])
    # a registry name resolves (and is then validated against this model: SmolLM2's 30 layers do not fit 2)
    with pytest.raises(ValueError, match="layer"):
        apply_attention(model, parse_methods("minference:smollm2-135m-instruct")[0])


def test_needle_heatmap_cells_hold_needle_records_only(tmp_path):
    from minference.evals.plots import needle_cells

    store = ResultStore(tmp_path / "run.json")
    store.add("dense", "needle|1024|0", {"task": "needle", "length": 1024, "score": 1.0, "meta": {"depth": 50.0}})
    store.add("dense", "passkey|1024|0", {"task": "passkey", "length": 1024, "score": 0.0, "meta": {"depth": 50.0}})
    assert {m: dict(c) for m, c in needle_cells(store).items()} == {"dense": {(50.0, 1024): [1.0]}}


def test_a_gguf_file_is_named_by_its_model_and_a_missing_one_is_refused(tmp_path):
    from minference.evals.models import DEFAULT_MODEL_NAME, gguf_file, load_model, model_name

    weights = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    weights.write_bytes(b"GGUF")
    assert model_name(str(weights)) == DEFAULT_MODEL_NAME
    assert gguf_file(str(weights)) == weights.resolve()
    assert gguf_file(str(tmp_path)) is None and gguf_file(None) is None
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        load_model(str(tmp_path / "missing.gguf"), device="cpu")


def _harness(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "evals"))
    import harness

    return harness


def test_the_eval_harness_runs_the_methods_the_shipped_thresholds_were_measured_with(monkeypatch):
    harness = _harness(monkeypatch)
    monkeypatch.delenv("MINFERENCE_EVAL_MODEL", raising=False)
    assert harness.default_methods() == harness.SHIPPED_RUNS["smollm2-135m-instruct"]["methods"]
    assert harness._shipped_arguments("needle", keep_samples=True) == []
    monkeypatch.setenv("MINFERENCE_EVAL_MODEL", "qwen2.5-coder-0.5b")
    assert harness.default_methods() == ("dense,minference:qwen2.5-coder-0.5b-instruct,"
                                         "minference:qwen2.5-coder-0.5b-instruct-mixed-d0.3,minference")
    assert harness._shipped_arguments("needle", keep_samples=True) == ["--depths", "0,25,50,75,100"]
    assert harness._shipped_arguments("ruler", keep_samples=True) == ["--samples", "3"]
    assert harness._shipped_arguments("ruler", keep_samples=False) == []
    monkeypatch.setenv("MINFERENCE_EVAL_MODEL", "gradientai/Llama-3-8B-Instruct-262k")
    assert harness.default_methods() == harness.DEFAULT_METHODS


@pytest.mark.parametrize("model, folder, suite", [
    *[("smollm2-135m-instruct", "evals-smollm2-135m-instruct-h200", s) for s in ("needle", "ruler", "infinitebench", "ppl")],
    *[("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-h200", s) for s in ("needle", "ruler", "infinitebench", "ppl")],
])
def test_the_shipped_thresholds_accept_the_h200_measurements_they_were_derived_from(monkeypatch, model, folder, suite):
    from pathlib import Path

    from minference.evals.models import model_name

    harness = _harness(monkeypatch)
    monkeypatch.setenv("MINFERENCE_EVAL_MODEL", model)
    path = Path(__file__).resolve().parents[2] / "docs" / "data" / folder / f"{suite}-{model_name(model)}.json"
    store = ResultStore(path)
    store.records = {key: r for key, r in store.records.items() if r["method"] in harness.default_methods().split(",")}
    measured = {(r["task"], r["length"]) for r in store.records.values()}
    lengths = {length for _, length in measured}
    rows = [row for row in harness.thresholds(suite) if row[:2] in measured or (row[0] == "average" and row[1] in lengths)]
    assert rows, f"no {suite} threshold row covers the H200 measurements"
    for task, length, min_score, max_drop, method in rows:
        harness.check(store, task, length, min_score, max_drop, method)
    # the check is live: a limit one point tighter than the worst measured drop rejects the same results
    task, length, min_score, _, _ = rows[0]
    scores = harness.cell_scores(store, task, length)
    sparse = {m: s for m, s in scores.items() if m != "dense"}
    if task == "ppl":
        worst = max(100.0 * (s / scores["dense"] - 1.0) for s in sparse.values())
    else:
        worst = max(scores["dense"] - s for s in sparse.values())
    with pytest.raises(AssertionError):
        harness.check(store, task, length, min_score, worst - 1.0)
    # a method's own rows judge that method alone: tighter than its measured increase they fail, other methods' do not
    for task, length, min_score, max_drop, method in (row for row in rows if row[4] is not None):
        own = harness.cell_scores(store, task, length)
        increase = 100.0 * (own[method] / own["dense"] - 1.0)
        assert increase <= max_drop
        with pytest.raises(AssertionError, match=method):
            harness.check(store, task, length, min_score, increase - 0.01, method)


def _tiny_loaded():
    import transformers

    from minference.evals.models import LoadedModel

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return LoadedModel(transformers.LlamaForCausalLM(config).eval(), None, "tiny", 4096)


def test_executed_tiles_count_what_each_method_would_load(tmp_path):
    from minference import AShape
    from minference import config as config_mod
    from minference.evals.tiles import executed_tiles
    from minference.index.tiles import a_shape_density

    loaded = _tiny_loaded()
    ids = torch.randint(0, 64, (1, 300))
    assert executed_tiles(loaded, Method("dense", "dense"), ids) == 1.0
    assert executed_tiles(loaded, Method("streaming", "streaming"), ids) is None  # no per-head config to count
    path = tmp_path / "a_shape.json"
    config_mod.save(config_mod.default(2, 4, AShape(sink=64, local=64)), path)
    a_shape = executed_tiles(loaded, Method("minference:a", "minference", config=str(path)), ids)
    assert a_shape == pytest.approx(a_shape_density(300, 64, 64))  # independent of the activations
    tight = executed_tiles(loaded, Method("minference@x", "minference", density=0.3), ids, (1, 64))
    loose = executed_tiles(loaded, Method("minference@y", "minference", density=0.9), ids, (300, 300))
    assert 0 < tight < loose <= 2.0


def test_the_density_report_shows_executed_tiles_for_configs_and_budgets(tmp_path):
    from minference.evals.report import density_table

    store = ResultStore(tmp_path / "r.json")
    store.set_density("dense", 1024, {"vertical": None, "slash": None, "density": 1.0, "target": None, "tiles": 1.0})
    store.set_density("minference:cfg", 1024, {"vertical": None, "slash": None, "density": None, "target": None,
                                               "tiles": 0.274})
    store.set_density("minference@0.3", 1024, {"vertical": 30, "slash": 183, "density": 0.303, "target": 0.3,
                                               "tiles": 0.332})
    table = density_table(store)
    assert "Executed tiles % of dense" in table
    assert "| minference:cfg | 27.4 |" in table and "| minference@0.3 | 33.2 |" in table


def test_yarn_scaling_keeps_the_rope_base_and_stretches_the_window(tmp_path):
    """transformers 5 aliases ``rope_scaling`` to ``rope_parameters``: setting one must not drop the base."""
    from evals_helpers import tiny_llama_checkpoint
    from minference.evals.models import load_model

    folder = str(tiny_llama_checkpoint(tmp_path / "tiny"))
    stretched = load_model(folder, device="cpu", dtype="float32", rope_scaling=2.0)
    config = stretched.model.config
    parameters = dict(getattr(config, "rope_parameters", None) or config.rope_scaling)
    assert parameters["rope_type"] == "yarn" and parameters["factor"] == 2.0, parameters
    assert parameters.get("rope_theta", getattr(config, "rope_theta", None)) == 50000.0, parameters
    assert stretched.max_length == 2 * 1024
    ids = torch.arange(10, 50).view(1, -1)
    with torch.no_grad():
        assert torch.isfinite(stretched.model(ids).logits).all()
