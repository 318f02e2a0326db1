"""Config schema: round trips, validation errors that name layer and head, upstream import, budget scaling."""
import json
from types import SimpleNamespace

import pytest

from minference import AShape, BlockSparse, Dense, VerticalSlash
from minference import config as cfg

MODEL = SimpleNamespace(num_hidden_layers=2, num_attention_heads=3)


def two_layers():
    return [
        [{"pattern": "vertical_slash", "vertical": 1000, "slash": 6096}, {"pattern": "a_shape", "sink": 128, "local": 4096},
         {"pattern": "dense"}],
        [{"pattern": "block_sparse", "top_k": 100}, {"pattern": "vertical_slash", "vertical": 30, "slash": 800},
         {"pattern": "a_shape"}],
    ]


def test_list_form_parses_into_patterns_with_defaults():
    config = cfg.load(two_layers())
    assert config.num_layers == 2 and config.num_heads == 3
    assert config.layers[0] == (VerticalSlash(1000, 6096), AShape(128, 4096), Dense())
    assert config.layers[1] == (BlockSparse(100), VerticalSlash(30, 800), AShape())


def test_pattern_objects_are_accepted_as_entries():
    objects = [[VerticalSlash(1000, 6096), AShape(128, 4096), Dense()], [BlockSparse(100), VerticalSlash(30, 800), AShape()]]
    assert cfg.load(objects) == cfg.load(two_layers())


def test_save_then_load_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = cfg.save(two_layers(), tmp_path / "sub" / "c.json")
    assert cfg.load(path) == cfg.load(two_layers())
    assert cfg.load(str(path)) == cfg.load(two_layers())
    assert json.loads(path.read_text()) == cfg.load(two_layers()).to_list()
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]


def test_metadata_survives_a_round_trip_in_the_object_form(tmp_path):
    config = cfg.Config(cfg.load(two_layers()).layers, {"model": "tiny", "objective": "recall"})
    loaded = cfg.load(cfg.save(config, tmp_path / "c.json"))
    assert loaded.metadata == {"model": "tiny", "objective": "recall"} and loaded == config


def test_registry_name_loads_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "REGISTRY_DIR", tmp_path)
    cfg.save(two_layers(), tmp_path / "tiny-model.json")
    assert cfg.registry_names() == ["tiny-model"]
    assert cfg.load("tiny-model") == cfg.load(two_layers())


def test_unknown_name_lists_the_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "REGISTRY_DIR", tmp_path)
    cfg.save(two_layers(), tmp_path / "known.json")
    with pytest.raises(ValueError, match=r"neither a file nor a registry name .*'known'"):
        cfg.load("nope")


@pytest.mark.parametrize(
    "entry, error, message",
    [
        ({"pattern": "vertical_slash", "vertical": 0, "slash": 10}, ValueError, "layer 1 head 2: vertical must be >= 1"),
        ({"pattern": "vertical_slash", "vertical": 1.5, "slash": 10}, TypeError, "layer 1 head 2: vertical must be an int"),
        ({"pattern": "triangle"}, ValueError, r"layer 1 head 2: 'pattern' must be one of"),
        ({"pattern": "a_shape", "window": 3}, ValueError, r"layer 1 head 2: unknown field\(s\) \['window'\]"),
        ({"pattern": "block_sparse", "block_size": 48}, ValueError, "layer 1 head 2: block_size must be one of"),
        ("dense", TypeError, "layer 1 head 2: expected a dict"),
    ],
)
def test_bad_entry_names_its_layer_and_head(entry, error, message):
    data = two_layers()
    data[1][2] = entry
    with pytest.raises(error, match=message):
        cfg.load(data)


def test_layers_with_different_head_counts_are_refused():
    data = two_layers()
    data[1].pop()
    with pytest.raises(ValueError, match=r"same number of heads, got \[3, 2\]"):
        cfg.load(data)


def test_validate_against_the_model_names_the_mismatch():
    assert cfg.validate(two_layers(), MODEL).num_layers == 2
    with pytest.raises(ValueError, match="config has 2 layers but the model has 4"):
        cfg.validate(two_layers(), SimpleNamespace(num_hidden_layers=4, num_attention_heads=3))
    with pytest.raises(ValueError, match="config layer 0 has 3 heads but the model has 8 query heads"):
        cfg.validate(two_layers(), SimpleNamespace(num_hidden_layers=2, num_attention_heads=8))
    with pytest.raises(ValueError, match="num_hidden_layers and num_attention_heads"):
        cfg.validate(two_layers(), SimpleNamespace())


def test_default_is_vertical_slash_1000_6096_everywhere_and_starting_layer_makes_lower_layers_dense():
    config = cfg.resolve(None, SimpleNamespace(num_hidden_layers=3, num_attention_heads=2), starting_layer=1)
    assert config.layers[0] == (Dense(), Dense())
    assert config.layers[1] == config.layers[2] == (VerticalSlash(1000, 6096), VerticalSlash(1000, 6096))
    with pytest.raises(ValueError, match="starting_layer must be <= num_layers"):
        cfg.resolve(None, MODEL, starting_layer=3)
    with pytest.raises(ValueError, match="starting_layer must be >= 0"):
        cfg.resolve(None, MODEL, starting_layer=-1)


def upstream_layers():
    return [
        {"0": ["vertical_and_slash", 1000, 6096, 0.91], "1": ["stream_llm", 100, 800, 0.5],
         "2": ["block_sparse", 5, 5, 1]},
        {"0": ["vertical_and_slash", 30, 800, 7], "1": ["vertical_and_slash", 3500, 100, 0.2],
         "2": ["vertical_and_slash", 500, 700, 0.3]},
    ]


def test_upstream_format_imports_and_is_detected_by_load(tmp_path):
    config = cfg.from_upstream(upstream_layers())
    assert config.layers[0] == (VerticalSlash(1000, 6096), AShape(100, 800), BlockSparse(100))
    assert config.layers[1][1] == VerticalSlash(3500, 100)
    assert config.metadata["scores"][0] == [0.91, 0.5, 1]
    path = tmp_path / "upstream.json"
    path.write_text(json.dumps(upstream_layers()))
    assert cfg.load(path) == config
    assert cfg.load(upstream_layers()) == config


def test_upstream_errors_name_layer_and_head():
    data = upstream_layers()
    data[1]["2"] = ["dilated", 1, 2, 0]
    with pytest.raises(ValueError, match="layer 1 head 2: type must be one of"):
        cfg.from_upstream(data)
    data = upstream_layers()
    del data[0]["1"]
    with pytest.raises(ValueError, match=r"layer 0: heads must be numbered 0..1, missing \[1\]"):
        cfg.from_upstream(data)
    with pytest.raises(ValueError, match="from_upstream"):
        cfg.from_list(upstream_layers())


def test_scale_budgets_multiplies_searched_budgets_and_keeps_forced_ones():
    config = cfg.scale_budgets(two_layers(), 0.5)
    assert config.layers[0][0] == VerticalSlash(500, 3048)
    assert config.layers[0][1] == AShape(128, 2048) and config.layers[0][2] == Dense()
    assert config.layers[1][0] == BlockSparse(50)
    tiny = cfg.scale_budgets(two_layers(), 1e-6)
    assert tiny.layers[0][0] == VerticalSlash(30, 100)  # the forced sink columns and local diagonals stay
    with pytest.raises(ValueError, match="factor must be a positive finite number"):
        cfg.scale_budgets(two_layers(), 0)


def test_scale_to_density_hits_the_target():
    base = cfg.default(2, 4)
    for target in (0.05, 0.2):
        scaled = cfg.scale_to_density(base, 131072, target)
        assert cfg.config_density(scaled, 131072) == pytest.approx(target, rel=0.02)
    with pytest.raises(ValueError, match="below what this config can reach"):
        cfg.scale_to_density(cfg.default(1, 2, Dense()), 4096, 0.5)


def test_nominal_density_of_full_budgets_is_one():
    assert cfg.nominal_density(VerticalSlash(64, 64), 64) == 1.0
    assert cfg.nominal_density(AShape(0, 100), 100) == 1.0
    assert cfg.nominal_density(BlockSparse(top_k=4, block_size=16), 64) == 1.0
    assert cfg.nominal_density(AShape(0, 1), 1000) == pytest.approx(1000 / (1000 * 1001 / 2))


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "smollm2-135m-instruct-d0.5"])
def test_the_shipped_smollm2_configs_fit_its_30_layers_of_9_heads(name):
    shape = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
    config = cfg.validate(name, shape)
    assert config.num_layers == 30 and all(len(layer) == 9 for layer in config.layers)
    assert name in cfg.registry_names()
