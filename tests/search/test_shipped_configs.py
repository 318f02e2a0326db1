"""The shipped configs fit their models, meet their cost targets and are reproduced by the archived search scores."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from minference import config as config_io
from minference._files import read_json
from minference.search.runner import choose_config, scored_examples

DATA = Path(__file__).resolve().parents[2] / "docs" / "data" / "qwen2.5-coder-0.5b-h200"
SHAPES = {"HuggingFaceTB/SmolLM2-135M-Instruct": (30, 9), "qwen2.5-coder-0.5b-instruct": (24, 14)}


@pytest.mark.parametrize("path", sorted(config_io.REGISTRY_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_shipped_config_fits_its_model_and_meets_its_target(path):
    config = config_io.load(path.stem)
    assert (config.num_layers, config.num_heads) == SHAPES[config.metadata["model"]]
    assert config.metadata["density"] <= config.metadata["selection"]["target_density"] + 1e-6


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scores")
    for archive in ("search-scores-32k.tar.gz", "search-scores-prose-32k.tar.gz"):
        with tarfile.open(DATA / archive) as tar:
            tar.extractall(folder, filter="data")
    return folder / "search-scores", folder / "prose-scores"


@pytest.mark.parametrize("name, main, add", [
    ("qwen2.5-coder-0.5b-instruct", 0, ()),
    ("qwen2.5-coder-0.5b-instruct-mixed-d0.3", 1, (0,)),
])
def test_archived_scores_reproduce_the_shipped_qwen_configs(scores, name, main, add):
    shipped = config_io.load(name)
    work_dir, extra = scores[main], [scores[i] for i in add]
    manifest = read_json(work_dir / "manifest.json")
    found = scored_examples(work_dir)
    examples = range(found[0], found[-1] + 1)
    rebuilt = choose_config(work_dir, manifest, examples, add=extra,
                            target_density=shipped.metadata["selection"]["target_density"], model_name=name)
    assert config_io.from_list(rebuilt).to_list() == shipped.to_list()
