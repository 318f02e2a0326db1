"""The comparison baselines as attention types: StreamingLLM (+ dilated, strided), InfLLM, MInference w/ static.

CPU tier: tiny random models (2 layers, hidden 64) and small op-level inputs. GPU tier (``-m gpu``): every type at
128K tokens on a Llama-3-8B-shaped model with 2 layers.
"""
from types import SimpleNamespace

import pytest
import torch
import transformers

import minference as mi
from minference import VerticalSlash, ops, reference
from minference import config as cfg
from minference.baselines import (
    BASELINES,
    InfLLM,
    SpacedStreaming,
    StaticMInference,
    StreamingLLM,
    reset_static,
)
from minference.baselines.static import STATIC_ATTR
from minference.integrations import hf

HEADS, KV_HEADS, LAYERS, VOCAB = 4, 2, 2, 128
TORCH = SimpleNamespace(backend="torch")
SMALL_INF_LLM = {"n_init": 16, "n_local": 32, "block_size": 16, "representatives": 4, "chunk": 32}


def tiny_model():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, max_position_embeddings=1024, eos_token_id=VOCAB - 1, bos_token_id=1,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger attention weights give peaked attention, so sparsity visibly changes the output
        for layer in model.model.layers:
            for param in layer.self_attn.parameters():
                param.mul_(8.0)
    return model


def tokens(batch: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB - 1, (batch, n), generator=torch.Generator().manual_seed(seed))


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def qkv(batch, n, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, HEADS, n, dim, generator=g), torch.randn(batch, KV_HEADS, n, dim, generator=g),
            torch.randn(batch, KV_HEADS, n, dim, generator=g))


def assert_close(actual, expected, atol=2e-5, what=""):
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs()
    where = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
    assert err.max() <= atol, f"{what}: max error {err.max():.3g} at {where}"


@pytest.fixture
def registered(monkeypatch):
    """Register an attention type for one test only."""
    def register(name, prefill):
        monkeypatch.setitem(hf.ATTENTION_TYPES, name, prefill)
        return name
    return register


# ----------------------------------------------------------------------------------------------------------------
# Every type through patch()


def test_every_baseline_is_a_registered_attention_type():
    for name in ("dense", "minference", "streaming", "streaming_dilated", "streaming_strided", "inf_llm",
                 "minference_static"):
        assert name in hf.ATTENTION_TYPES, name
    assert BASELINES["streaming"] == StreamingLLM(sink=128, local=3968)
    assert BASELINES["inf_llm"] == InfLLM(n_init=128, n_local=4096, block_size=128, representatives=4, top_k=16,
                                          chunk=512)


@pytest.mark.parametrize("attn_type", sorted(BASELINES) + ["dense", "minference"])
def test_each_type_runs_prefill_and_generate_on_a_tiny_model(attn_type):
    model, ids = tiny_model(), tokens(1, 150)
    mi.patch(model, attn_type=attn_type, dense_below=0, dense_above=None)
    out = logits(model, ids)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 153)


def test_streaming_with_a_window_covering_the_prompt_equals_dense():
    model, ids = tiny_model(), tokens(2, 150)
    expected = logits(model, ids)
    mi.patch(model, attn_type="streaming", dense_below=0, dense_above=None)  # 128 + 3968 covers 150 tokens
    assert_close(logits(model, ids), expected, what="streaming")


def test_streaming_with_a_short_window_equals_the_a_shape_mask(registered):
    q, k, v = qkv(2, 130)
    out = StreamingLLM(sink=4, local=16)(q, k, v, settings=TORCH, seqlens=None, scaling=None)
    i, j = torch.arange(130).view(-1, 1), torch.arange(130).view(1, -1)
    expected, _ = reference.attention(q, k, v, mask=(j < 4) | (i - j < 16))
    assert_close(out, expected, atol=1e-5, what="a-shape 4+16")
    model, ids = tiny_model(), tokens(1, 130)
    dense = logits(model, ids)
    mi.patch(model, attn_type=registered("streaming_short", StreamingLLM(sink=4, local=16)), dense_below=0, dense_above=None)
    assert (logits(model, ids) - dense).abs().max() > 1e-3, "a 20-token budget must change the logits"


@pytest.mark.parametrize("spaced", [SpacedStreaming(sink=8, local=0, span=256, step=2),
                                    SpacedStreaming(sink=3, local=64, span=256, step=2),
                                    SpacedStreaming(sink=1, local=64, span=320, step=3)])
@pytest.mark.parametrize("n", [1, 63, 65, 200, 300])
def test_spaced_windows_compute_exactly_their_definition(spaced, n):
    vertical, slash = spaced.indices(n, "cpu")
    kernel_mask = ops.vertical_slash_mask(n, vertical, slash)
    assert torch.equal(kernel_mask[0, 0], spaced.mask(n)[0, 0]), "kernel mask differs from the definition"
    q, k, v = qkv(1, n)
    out = spaced(q, k, v, settings=TORCH, seqlens=None, scaling=None)
    expected, _ = reference.attention(q, k, v, mask=spaced.mask(n))
    assert_close(out, expected, atol=1e-5, what=f"{spaced} n={n}")


def test_presets_keep_the_upstream_budgets_over_twice_the_span():
    dilated, strided = BASELINES["streaming_dilated"], BASELINES["streaming_strided"]
    assert dilated.tile_diagonals() == list(range(0, 128, 2))  # 64 tiles = 4096 keys spread over 8192 offsets
    assert strided.tile_diagonals() == list(range(32)) + list(range(32, 96, 2))
    with pytest.raises(ValueError, match="local must be a multiple"):
        SpacedStreaming(local=100)
    with pytest.raises(ValueError, match="span must be >= local"):
        SpacedStreaming(local=128, span=64)
    with pytest.raises(TypeError, match="sink must be an int"):
        SpacedStreaming(sink=1.5)


# ----------------------------------------------------------------------------------------------------------------
# InfLLM


@pytest.mark.parametrize("n", [1, 31, 33, 100, 237, 256])
def test_inf_llm_index_is_exactly_its_definition_at_odd_lengths(n):
    method = InfLLM(top_k=2, **SMALL_INF_LLM)
    q, k, v = qkv(2, n, seed=n)
    definition = method.mask(q, k)
    kernel_mask = ops.block_sparse_mask(n, method.block_index(q, k), method.tile)
    assert torch.equal(kernel_mask, definition), f"n={n}: {int((kernel_mask != definition).sum())} entries differ"
    out = method(q, k, v, settings=TORCH, seqlens=None, scaling=None)
    expected, _ = reference.attention(q, k, v, mask=definition)
    assert_close(out, expected, atol=1e-5, what=f"n={n}")
    if n >= 237:  # long enough that memory blocks are skipped: the method is sparse
        assert definition.sum() < torch.ones(n, n).tril().sum() * 2 * HEADS


def test_inf_llm_padded_batch_matches_its_definition():
    method, n, lengths = InfLLM(top_k=2, **SMALL_INF_LLM), 237, torch.tensor([237, 150])
    q, k, v = qkv(2, n, seed=3)
    out = method(q, k, v, settings=TORCH, seqlens=lengths, scaling=0.3)
    expected, _ = reference.attention(q, k, v, mask=method.mask(q, k, seqlens=lengths, sm_scale=0.3),
                                      sm_scale=0.3, seqlens=lengths)
    real = torch.arange(n).view(1, 1, n, 1) < lengths.view(-1, 1, 1, 1)
    assert_close(out * real, expected * real, atol=1e-5, what="padded")


@pytest.mark.parametrize("n", [37, 200, 256])
def test_inf_llm_with_top_k_covering_every_block_equals_dense(n):
    q, k, v = qkv(1, n, seed=7)
    out = InfLLM(top_k=64, **SMALL_INF_LLM)(q, k, v, settings=TORCH, seqlens=None, scaling=None)
    assert_close(out, reference.attention(q, k, v)[0], atol=1e-5, what=f"n={n}")


def test_inf_llm_full_top_k_on_a_tiny_model_equals_dense_and_small_top_k_does_not(registered):
    model, ids = tiny_model(), tokens(2, 211)
    dense = logits(model, ids)
    mi.patch(model, attn_type=registered("inf_llm_all", InfLLM(top_k=64, **SMALL_INF_LLM)), dense_below=0, dense_above=None)
    assert_close(logits(model, ids), dense, what="inf_llm, every block retrieved")
    mi.patch(model, attn_type=registered("inf_llm_few", InfLLM(top_k=1, **SMALL_INF_LLM)), dense_below=0, dense_above=None)
    sparse = logits(model, ids)
    assert torch.isfinite(sparse).all() and (sparse - dense).abs().max() > 1e-3


def test_inf_llm_triton_kernel_matches_the_torch_backend():
    method = InfLLM(n_init=32, n_local=32, block_size=32, representatives=2, top_k=1, chunk=32)
    q, k, v = qkv(1, 161, dim=64, seed=5)
    triton_out = method(q, k, v, settings=SimpleNamespace(backend="triton"), seqlens=None, scaling=None)
    torch_out = method(q, k, v, settings=TORCH, seqlens=None, scaling=None)
    assert_close(triton_out, torch_out, atol=1e-4, what="triton vs torch")


def test_inf_llm_picks_the_block_its_queries_point_at():
    # Every query and one memory block's keys share a direction; retrieval must fetch that block for the last chunk.
    method = InfLLM(top_k=1, **SMALL_INF_LLM)
    n = 256
    q, k, _ = qkv(1, n, seed=11)
    direction = torch.zeros(16)
    direction[0] = 1.0
    q = q * 0.1 + direction * 5
    k = k * 0.1
    k[:, :, 16 + 3 * 16 : 16 + 4 * 16] += direction * 5  # block 3
    chosen = method.retrieve(q, k)
    assert (chosen[0, :, -1, 0] == 3).all(), chosen[0, :, -1]


def test_inf_llm_arguments_are_checked():
    with pytest.raises(ValueError, match="multiples of one kernel tile"):
        InfLLM(n_init=10)
    with pytest.raises(ValueError, match="representatives must be <= block_size"):
        InfLLM(block_size=16, representatives=32, n_init=16, n_local=32, chunk=32)
    with pytest.raises(TypeError, match="top_k must be an int"):
        InfLLM(top_k=2.0)
    assert InfLLM().tile == 64 and InfLLM(**SMALL_INF_LLM).tile == 16


# ----------------------------------------------------------------------------------------------------------------
# MInference w/ static

STATIC_PATTERN = VerticalSlash(vertical=4, slash=8, sink=1, local=2)


def test_static_reuses_the_first_inputs_indices():
    static, module = StaticMInference(), SimpleNamespace()
    settings = hf.LayerSettings((STATIC_PATTERN,) * HEADS, "minference_static", 0, "torch")
    first, second = qkv(1, 200, seed=1), qkv(1, 200, seed=2)
    static(*first, settings=settings, seqlens=None, scaling=None, module=module)
    stored = getattr(module, STATIC_ATTR)
    out = static(*second, settings=settings, seqlens=None, scaling=None, module=module)
    assert getattr(module, STATIC_ATTR) is stored, "the second input must not re-estimate"
    from minference.patterns import vertical_slash
    vertical, slash = vertical_slash.estimate(first[0], first[1], [STATIC_PATTERN] * HEADS, list(range(HEADS)))
    expected = ops.vertical_slash_attention(*second, vertical, slash, backend="torch")
    assert_close(out, expected, atol=1e-6, what="second input with the first input's indices")
    dynamic = ops.sparse_attention(*second, STATIC_PATTERN, backend="torch")
    assert (out - dynamic).abs().max() > 1e-4, "static indices should differ from the second input's own"


def test_static_shorter_prompt_and_mixed_heads():
    patterns = (STATIC_PATTERN, mi.AShape(sink=2, local=8), STATIC_PATTERN, mi.Dense())
    settings = hf.LayerSettings(patterns, "minference_static", 0, "torch")
    static, module = StaticMInference(), SimpleNamespace()
    static(*qkv(1, 250, seed=1), settings=settings, seqlens=None, scaling=None, module=module)
    stored = getattr(module, STATIC_ATTR)
    q, k, v = qkv(1, 70, seed=2)
    out = static(q, k, v, settings=settings, seqlens=None, scaling=None, module=module)
    def clip(idx):
        return torch.where(idx < 70, idx, 0)

    vertical = torch.zeros(1, HEADS, stored.vertical.shape[-1], dtype=torch.int32)
    slash = torch.zeros(1, HEADS, stored.slash.shape[-1], dtype=torch.int32)
    vertical[:, [0, 2]], slash[:, [0, 2]] = clip(stored.vertical), clip(stored.slash)
    expected_static = ops.vertical_slash_attention(q, k, v, vertical, slash, backend="torch")
    expected_rest = ops.sparse_attention(q, k, v, list(patterns), backend="torch")
    assert_close(out[:, [0, 2]], expected_static[:, [0, 2]], atol=1e-6, what="static heads")
    assert_close(out[:, [1, 3]], expected_rest[:, [1, 3]], atol=1e-6, what="a-shape and dense heads")


def test_static_on_a_tiny_model_stores_per_layer_and_reset_forgets():
    model = tiny_model()
    mi.patch(model, cfg.default(LAYERS, HEADS, STATIC_PATTERN), attn_type="minference_static", dense_below=0, dense_above=None)
    first = logits(model, tokens(1, 180, seed=1))
    stored = [getattr(layer.self_attn, STATIC_ATTR) for layer in model.model.layers]
    assert all(s.tokens == 180 for s in stored) and torch.isfinite(first).all()
    logits(model, tokens(1, 120, seed=2))
    assert all(getattr(layer.self_attn, STATIC_ATTR) is s for layer, s in zip(model.model.layers, stored))
    assert reset_static(model) == LAYERS
    assert not any(hasattr(layer.self_attn, STATIC_ATTR) for layer in model.model.layers)


# ----------------------------------------------------------------------------------------------------------------
# Benchmark and eval wiring


def test_evals_accept_every_type_and_refuse_densities_on_fixed_baselines():
    from minference.evals.methods import parse_method, parse_methods

    names = ["dense", "minference", *sorted(BASELINES)]
    methods = parse_methods(",".join(names + ["minference_static@0.2"]))
    assert [m.attn_type for m in methods][: len(names)] == names
    assert parse_method("minference_static@0.2").uses_budgets and not parse_method("inf_llm").uses_budgets
    for bad, message in (("inf_llm@0.1", "density applies"), ("streaming:cfg.json", "config file applies"),
                         ("infllm", "attention type must be one of")):
        with pytest.raises(ValueError, match=message):
            parse_method(bad)


def test_evals_apply_attention_switches_to_a_baseline():
    from minference.evals.methods import parse_method
    from minference.evals.models import apply_attention

    model, ids = tiny_model(), tokens(1, 90)
    apply_attention(model, parse_method("inf_llm"))
    assert {layer.self_attn.minference_settings.attn_type for layer in model.model.layers} == {"inf_llm"}
    assert torch.isfinite(logits(model, ids)).all()
    apply_attention(model, parse_method("dense"))
    assert not mi.integrations.is_patched(model)


def test_e2e_methods_patch_their_attention_type():
    from minference.bench import e2e

    assert {"inf_llm", "streaming", "minference"} <= set(e2e.METHODS)
    assert "minference_static" in e2e.ALL_METHODS
    model = tiny_model()
    settings = e2e.E2ESettings(lengths=(64,), methods=("inf_llm",), chunk_size=32)
    for method in ("streaming", "inf_llm", "minference_static"):
        with e2e.use_method(model, method, settings):
            assert {layer.self_attn.minference_settings.attn_type for layer in model.model.layers} == {method}
            assert torch.isfinite(logits(model, tokens(1, 64))).all()
        assert not mi.integrations.is_patched(model)
    with pytest.raises(ValueError, match="method must be one of"), e2e.use_method(model, "infllm", settings):
        pass


# ----------------------------------------------------------------------------------------------------------------
# GPU tier


@pytest.fixture(scope="module")
def llama2_cuda():
    from minference.bench import e2e

    model, _, _ = e2e.build_model(layers=2)
    yield model
    del model
    torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attn_type", ["dense", "streaming", "streaming_dilated", "streaming_strided", "inf_llm",
                                       "minference_static", "minference"])
def test_each_type_runs_at_128k_on_a_llama3_8b_shaped_model(llama2_cuda, attn_type):
    import time

    from minference.bench import e2e
    from minference.integrations import memory

    model = llama2_cuda
    ids = e2e.prompt_ids(131072, device="cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        mi.patch(model, attn_type=attn_type, chunk_size=memory.DEFAULT_CHUNK_SIZE)
        with torch.inference_mode():
            memory.prefill(model, ids)  # warm-up (Triton JIT); minference_static estimates its indices here
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = memory.prefill(model, ids).logits.float()
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30
        with torch.inference_mode():  # sparse prefill of 16K tokens, then dense decode over the cache
            generated = model.generate(ids[:, :16384], max_new_tokens=2, do_sample=False, pad_token_id=0)
    finally:
        mi.unpatch(model)
        reset_static(model)
    print(f"{attn_type}: 128K prefill, 2 layers, {seconds:.3f} s, peak {peak:.1f} GiB, {torch.cuda.get_device_name()}")
    assert out.shape == (1, 1, 128256) and torch.isfinite(out).all()
    assert generated.shape == (1, 16386)
    assert peak < 40, f"peak memory {peak:.1f} GiB"
