"""Transformers integration on tiny random models (2 layers, hidden 64): behaviour, not which function was swapped."""
from types import SimpleNamespace

import pytest
import torch
import transformers

import minference as mi
from minference import AShape, BlockSparse, Dense, VerticalSlash
from minference import config as cfg
from minference.integrations import hf, memory

HEADS, KV_HEADS, LAYERS, VOCAB = 4, 2, 2, 128
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),
}
SPARSE = [VerticalSlash(vertical=8, slash=16, sink=2, local=4), BlockSparse(top_k=2, block_size=16),
          AShape(sink=4, local=16), VerticalSlash(vertical=4, slash=8, sink=1, local=2)]


def tiny_model(arch: str, **overrides):
    config_name, model_name, extra = ARCHS[arch]
    settings = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                    num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=1024,
                    eos_token_id=VOCAB - 1, bos_token_id=1)
    settings.update(extra)
    settings.update(overrides)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**settings)).eval()
    # Larger random weights than the default init give peaked attention, so sparsity visibly changes the output.
    with torch.no_grad():
        for layer in model.model.layers:
            for param in layer.self_attn.parameters():
                param.mul_(8.0)
    return model


def tokens(batch: int, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB - 1, (batch, n), generator=torch.Generator().manual_seed(seed))


def logits(model, ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs).logits


def assert_close(actual, expected, atol=2e-5, what=""):
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs()
    assert err.max() <= atol, f"{what}: max error {err.max():.3g} at {tuple(int(i) for i in torch.nonzero(err == err.max())[0])}"


@pytest.fixture(params=sorted(ARCHS))
def arch(request):
    return request.param


def test_all_dense_patch_equals_unpatched_logits(arch):
    model, ids = tiny_model(arch), tokens(2, 70)
    expected = logits(model, ids)
    mi.patch(model, cfg.default(LAYERS, HEADS, Dense()), dense_below=0, dense_above=None)
    assert model.config._attn_implementation == "minference"
    assert_close(logits(model, ids), expected, what=arch)


def test_full_budgets_equal_dense(arch):
    model, ids = tiny_model(arch), tokens(2, 70)
    expected = logits(model, ids)
    mi.patch(model, dense_below=0, dense_above=None)  # default 1000 columns / 6096 diagonals cover all 70 tokens
    assert_close(logits(model, ids), expected, what=arch)


def test_a_shape_config_equals_dense_attention_under_the_same_mask():
    model, ids = tiny_model("llama"), tokens(1, 90)
    i, j = torch.arange(90).view(-1, 1), torch.arange(90).view(1, -1)
    a_shape_mask = ((j <= i) & ((j < 4) | (i - j < 16))).view(1, 1, 90, 90)
    expected = logits(model, ids, attention_mask=a_shape_mask)
    mi.patch(model, cfg.default(LAYERS, HEADS, AShape(sink=4, local=16)), dense_below=0, dense_above=None)
    assert_close(logits(model, ids), expected)


def test_real_budgets_change_logits_and_generate_runs(arch):
    model, ids = tiny_model(arch), tokens(2, 150)
    dense = logits(model, ids)
    mi.patch(model, [SPARSE] * LAYERS, dense_below=0, dense_above=None)
    sparse = logits(model, ids)
    assert torch.isfinite(sparse).all()
    assert (sparse - dense).abs().max() > 1e-3, "sparse budgets should change the logits of a peaked random model"
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             pad_token_id=0)
    assert out.shape == (2, 154) and torch.equal(out[:, :150], ids)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_each_sequence_alone(side):
    model = tiny_model("llama")
    mi.patch(model, [SPARSE] * LAYERS, dense_below=0, dense_above=None)
    long, short = tokens(1, 150, seed=2), tokens(1, 110, seed=3)
    pad = torch.zeros(1, 40, dtype=long.dtype)
    if side == "right":
        ids = torch.cat([long, torch.cat([short, pad], dim=1)])
        mask = torch.cat([torch.ones(1, 150), torch.cat([torch.ones(1, 110), torch.zeros(1, 40)], dim=1)]).long()
        short_rows = slice(0, 110)
        position_ids = None
    else:
        ids = torch.cat([long, torch.cat([pad, short], dim=1)])
        mask = torch.cat([torch.ones(1, 150), torch.cat([torch.zeros(1, 40), torch.ones(1, 110)], dim=1)]).long()
        short_rows = slice(40, 150)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    batched = logits(model, ids, attention_mask=mask, position_ids=position_ids)
    assert_close(batched[0], logits(model, long)[0], atol=1e-4, what="long row")
    assert_close(batched[1, short_rows], logits(model, short)[0], atol=1e-4, what="short row")


def test_mask_with_holes_is_refused():
    model = tiny_model("llama")
    mi.patch(model, dense_below=0, dense_above=None)
    ids, mask = tokens(2, 40), torch.ones(2, 40, dtype=torch.long)
    mask[1, 10] = 0
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] mix padding and tokens"):
        logits(model, ids, attention_mask=mask)


def test_decode_and_chunked_continuation_match_unpatched():
    model = tiny_model("qwen2")
    ids = tokens(2, 60)
    mask = torch.ones_like(ids)
    mask[1, :13] = 0  # left padding, as batched generation uses
    reference = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)

    def continuation():
        with torch.no_grad():
            first, key = model(ids[:, :35], use_cache=True), memory.cache_keyword(model)
            return model(ids[:, 35:], **{key: getattr(first, key)}, use_cache=True).logits

    expected_continuation = continuation()
    mi.patch(model, cfg.default(LAYERS, HEADS, Dense()), dense_below=0, dense_above=None)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0),
                       reference)
    assert_close(continuation(), expected_continuation)


def test_sliding_window_layers_stay_exact():
    model, ids = tiny_model("mistral", sliding_window=16), tokens(2, 70)
    expected = logits(model, ids)
    reference = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                               pad_token_id=0)
    mi.patch(model, [SPARSE] * LAYERS, dense_below=0, dense_above=None)
    assert_close(logits(model, ids), expected)
    assert torch.equal(
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=0),
        reference,
    )


def test_unpatch_restores_the_model():
    model, ids = tiny_model("phi3"), tokens(2, 80)
    expected = logits(model, ids)
    mi.patch(model, [SPARSE] * LAYERS, dense_below=0, dense_above=None, chunk_size=16, kv_cache_cpu=True)
    assert model.generation_config.cache_implementation == "offloaded"
    mi.unpatch(model)
    assert model.config._attn_implementation == "sdpa"
    assert model.generation_config.cache_implementation is None
    assert not hf.is_patched(model)
    for layer in model.model.layers:
        assert hf.SETTINGS_ATTR not in layer.self_attn.__dict__
        assert "forward" not in layer.mlp.__dict__ and "forward" not in layer.input_layernorm.__dict__
    assert_close(logits(model, ids), expected)


def test_unpatch_of_an_unpatched_model_changes_nothing():
    model = tiny_model("llama", attn_implementation="eager")
    mi.unpatch(model)
    assert model.config._attn_implementation == "eager"


def test_chunked_norms_and_mlp_are_exact():
    model, ids = tiny_model("llama"), tokens(2, 70)
    expected = logits(model, ids)
    assert memory.chunk_tokenwise(model, 16) == 2 * 3 + 1
    assert_close(logits(model, ids), expected, atol=1e-5)
    assert memory.unchunk_tokenwise(model) == 7
    assert "forward" not in model.model.norm.__dict__


def test_attn_implementation_minference_loads(tmp_path):
    model, ids = tiny_model("llama"), tokens(1, 50)
    expected = logits(model, ids)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="minference").eval()
    assert loaded.config._attn_implementation == "minference"
    assert_close(logits(loaded, ids), expected)  # short prompt: dense below the default threshold
    mi.patch(loaded, [SPARSE] * LAYERS, dense_below=0, dense_above=None)
    mi.unpatch(loaded)
    assert loaded.config._attn_implementation == "minference"


def test_config_mismatch_and_unknown_architecture_are_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="config layer 0 has 3 heads but the model has 4 query heads"):
        mi.patch(model, [[Dense()] * 3] * LAYERS)
    with pytest.raises(ValueError, match="config has 1 layers but the model has 2"):
        mi.patch(model, [[Dense()] * HEADS])
    with pytest.raises(ValueError, match="attn_type of layer 0 must be one of"):
        mi.patch(model, attn_type="inf_llm_not_registered")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not supported by minference; supported: \['llama'"):
        mi.patch(gpt2)
    assert model.config._attn_implementation == "sdpa", "a refused patch must leave the model alone"


def test_the_vertical_slash_grid_can_be_fixed_for_the_whole_model():
    """``patch(..., vertical_slash_tile=...)`` reaches every layer's op: on the 128-token grid the vertical-slash heads
    keep wider diagonal bands, so the logits move; a grid the kernels do not have is refused by name."""
    model, ids = tiny_model("llama"), tokens(1, 300)
    outputs = {}
    for tile in (64, 128):
        mi.patch(model, [SPARSE] * LAYERS, dense_below=0, dense_above=None, vertical_slash_tile=tile)
        outputs[tile] = logits(model, ids)
        assert torch.isfinite(outputs[tile]).all()
    mi.patch(model, [SPARSE] * LAYERS, dense_below=0, dense_above=None)
    assert torch.equal(logits(model, ids), outputs[64]), "on CPU tensors the device's grid is 64 tokens"
    assert (outputs[128] - outputs[64]).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"tile must be one of \(64, 128\), got 96"):
        mi.patch(model, vertical_slash_tile=96)


def test_registered_attention_type_runs_per_layer_and_only_above_the_threshold():
    calls = []

    def spy(q, k, v, *, settings, seqlens, scaling, module):
        calls.append((module.layer_idx, q.shape[2]))
        return hf.dense_prefill(q, k, v, settings=settings, seqlens=seqlens, scaling=scaling)

    hf.register_attention_type("spy", spy)
    try:
        model = tiny_model("qwen3")
        expected = logits(model, tokens(1, 40))
        mi.patch(model, attn_type=["dense", "spy"], dense_below=32)
        assert_close(logits(model, tokens(1, 40)), expected)
        logits(model, tokens(1, 20))
        assert calls == [(1, 40)]
    finally:
        del hf.ATTENTION_TYPES["spy"]


def test_prepared_4d_masks_are_read_like_2d_padding_masks():
    """transformers < 4.53 hands custom attention a 4-D mask; prefill and decode read it the same way."""
    torch.manual_seed(0)
    module = SimpleNamespace(minference_settings=hf.LayerSettings((Dense(),) * 4, dense_below=0))
    q, k, v = torch.randn(2, 4, 12, 16), torch.randn(2, 2, 12, 16), torch.randn(2, 2, 12, 16)
    padding = torch.ones(2, 12, dtype=torch.bool)
    padding[1, :5] = False
    i, j = torch.arange(12).view(-1, 1), torch.arange(12).view(1, -1)
    four_d = ((j <= i) & padding.view(2, 1, 1, 12)).view(2, 1, 12, 12)
    additive = torch.zeros(2, 1, 12, 12).masked_fill(~four_d, torch.finfo(torch.float32).min)
    from_2d, _ = hf.attention_forward(module, q, k, v, padding)
    from_4d, _ = hf.attention_forward(module, q, k, v, additive)
    assert_close(from_4d[1, 5:], from_2d[1, 5:], atol=1e-6)
    step_2d, _ = hf.attention_forward(module, q[:, :, -1:], k, v, padding)
    step_4d, _ = hf.attention_forward(module, q[:, :, -1:], k, v, additive[:, :, -1:])
    assert_close(step_4d, step_2d, atol=1e-6)
    assert_close(step_2d, from_2d[:, -1:], atol=1e-6)


def test_layers_estimated_denser_than_dense_above_run_dense():
    """The default budgets (1000/6096) cover a 150-token prompt completely, so with the density fallback on the
    patched model is the dense model; with it off (``dense_above=None``) the sparse kernels run the same mask."""
    model, ids = tiny_model("llama"), tokens(1, 150)
    expected = logits(model, ids)
    mi.patch(model, dense_below=0)
    assert all(a.minference_settings.dense_above == hf.DEFAULT_DENSE_ABOVE for a in attention_modules(model))
    assert torch.equal(logits(model, ids), expected)
    mi.patch(model, dense_below=0, dense_above=None)
    assert_close(logits(model, ids), expected)
    with pytest.raises(ValueError, match="dense_above must be None or a number >= 0"):
        mi.patch(model, dense_above=-1)


def attention_modules(model):
    return [layer.self_attn for layer in model.model.layers]
