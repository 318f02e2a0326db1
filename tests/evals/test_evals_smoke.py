"""Smoke eval on the shipped SmolLM2-135M: passkey + needle at 512 tokens, dense vs matched-density MInference.

Marked ``slow``: on a shared 2-core CPU one generation takes tens of seconds. Run with ``pytest -m slow``.
"""

import importlib.util
import random

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded():
    from minference.evals.models import default_gguf, load_model

    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed (pip install minference[eval])")
    try:
        default_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return load_model(None, device="cpu")


def test_dense_and_sparse_find_the_passkey_and_density_is_measured(loaded, tmp_path):
    from minference.evals import infinitebench
    from minference.evals.methods import parse_methods
    from minference.evals.models import minference_available
    from minference.evals.results import ResultStore
    from minference.evals.runner import run_examples

    rng = random.Random(0)
    examples = [
        infinitebench.passkey(loaded.tokenizer, 512, i, rng, depth) for i, depth in enumerate((10.0, 90.0))
    ]
    methods = parse_methods("dense,minference@0.3" if minference_available() else "dense")
    store = run_examples(loaded, methods, examples, ResultStore(tmp_path / "smoke.json"))
    scores = store.scores()
    seen = {k: (r["prediction"][:40], r["answers"]) for k, r in store.records.items()}
    assert scores["dense"][("passkey", 512)] == 100.0, f"{seen} density={store.density}"
    if minference_available():
        info = store.density["minference@0.3"]["512"]
        assert 0.0 < info["density"] < 0.6, info
        assert scores["minference@0.3"][("passkey", 512)] >= 50.0, f"{seen} density={store.density}"
