"""GPU tier of the transformers integration: Llama-3-8B shapes in bf16, 128K forward, 1M memory.

    pytest tests/test_hf_gpu.py -m gpu -v -s            # the 1M test is also marked slow: add `-m "gpu"` as here
"""
import pytest
import torch

import minference as mi
from minference import VerticalSlash
from minference import config as cfg
from minference.bench import e2e
from minference.integrations import hf, memory

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def llama4():
    model, _, _ = e2e.build_model(layers=4)
    yield model
    del model
    torch.cuda.empty_cache()


def last_logits(model, ids, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        return memory.prefill(model, ids, **kwargs).logits.float()


def assert_logits_close(actual, expected, what=""):
    assert torch.isfinite(actual).all(), f"{what}: non-finite logits"
    err = (actual - expected).abs().max().item()
    bound = 0.03 * expected.abs().max().item() + 0.05  # bf16 through 4 layers: relative to the logit scale
    assert err <= bound, f"{what}: max logit error {err:.4g} > {bound:.4g}"


def test_full_budget_kernels_equal_sdpa_on_llama3_shapes(llama4):
    ids = e2e.prompt_ids(8192, device="cuda")
    expected = last_logits(llama4, ids)
    try:
        mi.patch(llama4, cfg.default(4, 32, VerticalSlash(vertical=8192, slash=8192)), dense_below=0, dense_above=None)
        assert_logits_close(last_logits(llama4, ids), expected, "vertical-slash with full budgets")
    finally:
        mi.unpatch(llama4)


def test_128k_forward_of_a_llama3_8b_shaped_model(llama4):
    ids = e2e.prompt_ids(131072, device="cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        mi.patch(llama4, chunk_size=memory.DEFAULT_CHUNK_SIZE)
        logits = last_logits(llama4, ids)
    finally:
        mi.unpatch(llama4)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"128K, 4 layers: peak {peak:.1f} GiB")
    assert logits.shape == (1, 1, 128256) and torch.isfinite(logits).all()
    assert peak < 40, f"peak memory {peak:.1f} GiB at 128K with 4 layers"


def test_padded_batch_matches_each_sequence_alone_on_gpu(llama4):
    long, short = e2e.prompt_ids(20000, device="cuda"), e2e.prompt_ids(16000, device="cuda").roll(7, dims=1)
    ids = torch.cat([long, torch.cat([short, torch.zeros(1, 4000, dtype=torch.long, device="cuda")], dim=1)])
    mask = torch.ones_like(ids)
    mask[1, 16000:] = 0
    try:
        mi.patch(llama4, dense_below=0, dense_above=None)
        keep = torch.tensor([15999, 19999], device="cuda")  # each row's last real token, not 2 x 20000 x vocab
        with torch.inference_mode():
            batched = llama4(ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits.float()
        assert_logits_close(batched[0, 1], last_logits(llama4, long)[0, -1], "long row")
        assert_logits_close(batched[1, 0], last_logits(llama4, short)[0, -1], "short row")
    finally:
        mi.unpatch(llama4)


def test_decode_over_cache_folds_gqa_exactly():
    torch.manual_seed(0)
    q = torch.randn(2, 32, 3, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(2, 8, 4099, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mask = torch.ones(2, 4099, dtype=torch.bool, device="cuda")
    mask[1, :100] = False
    out = hf.dense_over_cache(q, k, v, mask)
    rows = torch.arange(3, device="cuda").view(-1, 1) + 4096
    allowed = (torch.arange(4099, device="cuda").view(1, -1) <= rows) & mask.view(2, 1, 1, -1)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float().repeat_interleave(4, 1), v.float().repeat_interleave(4, 1), attn_mask=allowed)
    assert (out.float() - expected).abs().max() < 2e-2


def test_generate_with_the_kv_cache_on_the_cpu(llama4):
    ids = e2e.prompt_ids(65536, device="cuda")
    try:
        mi.patch(llama4, chunk_size=memory.DEFAULT_CHUNK_SIZE, kv_cache_cpu=True)
        with torch.inference_mode():
            out = llama4.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                  pad_token_id=0)
    finally:
        mi.unpatch(llama4)
    assert out.shape == (1, 65539) and torch.equal(out[:, :65536], ids)


@pytest.mark.slow
def test_1m_prefill_fits_on_one_gpu():
    """The design's memory target: Llama-3-8B shapes (32 layers, bf16), 1M tokens, one 80 GB GPU. The weights get the
    e2e benchmark's local q/k bias: plain random attention would make vertical-slash nearly dense and the run take
    over ten minutes, without changing what is allocated."""
    model, _, weights = e2e.build_model(locality=e2e.DEFAULT_LOCALITY)
    ids = e2e.prompt_ids(1_000_000, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    try:
        mi.patch(model, chunk_size=memory.DEFAULT_CHUNK_SIZE)
        logits = last_logits(model, ids)
    finally:
        mi.unpatch(model)
    peak = torch.cuda.max_memory_allocated() / 2**30
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    print(f"1M tokens, {weights}: peak {peak:.1f} GiB of {total:.0f} GiB")
    assert torch.isfinite(logits).all()
    assert peak < 80, f"1M prefill peaked at {peak:.1f} GiB"
