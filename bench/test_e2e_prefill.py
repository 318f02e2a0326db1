"""End-to-end prefill latency (pytest-benchmark): Llama-3-8B-1M shapes, dense FA2 / cuDNN, StreamingLLM, MInference.

    pytest bench/test_e2e_prefill.py -m bench --benchmark-json=e2e.json
    MINFERENCE_E2E_LENGTHS=32K,128K,256K MINFERENCE_E2E_LAYERS=32 MINFERENCE_E2E_CHECKPOINT=/path pytest ...

The full published sweep (1K..1M, table + chart) is ``minference bench e2e``.
"""
import os

import pytest
import torch

from minference.bench import e2e
from minference.integrations import memory

pytestmark = [pytest.mark.bench, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

LENGTHS = e2e.parse_lengths(os.environ.get("MINFERENCE_E2E_LENGTHS", "32K,128K"))
LAYERS = int(os.environ["MINFERENCE_E2E_LAYERS"]) if os.environ.get("MINFERENCE_E2E_LAYERS") else None
CHECKPOINT = os.environ.get("MINFERENCE_E2E_CHECKPOINT")


@pytest.fixture(scope="module")
def built():
    model, tokenizer, weights = e2e.build_model(
        CHECKPOINT, LAYERS, locality=0.0 if CHECKPOINT else e2e.DEFAULT_LOCALITY
    )
    yield model, tokenizer, weights
    del model
    torch.cuda.empty_cache()


@pytest.mark.parametrize("method", e2e.METHODS)
@pytest.mark.parametrize("n", LENGTHS, ids=[f"{n // 1000}K" for n in LENGTHS])
def test_e2e_prefill(benchmark, built, method, n):
    model, tokenizer, weights = built
    ids = e2e.prompt_ids(n, tokenizer, device="cuda")
    settings = e2e.E2ESettings(lengths=(n,), methods=(method,))

    def step():
        with torch.inference_mode():
            memory.prefill(model, ids)
        torch.cuda.synchronize()

    with e2e.use_method(model, method, settings) as note:
        step()  # warm-up: Triton JIT and autotuning, allocator growth
        torch.cuda.reset_peak_memory_stats()
        benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        tokens=n, method=method, weights=weights, note=note, gpu=torch.cuda.get_device_name(),
        peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2),
    )
