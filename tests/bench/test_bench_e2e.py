"""The e2e benchmark's CPU-side pieces: prompt length, length parsing, density counting, report files, CLI."""
import argparse
import json

import pytest
import torch

from minference import AShape, BlockSparse, Dense, VerticalSlash
from minference.bench import e2e


def test_prompt_is_exactly_n_tokens_of_repeated_text():
    for n in (1, 7, 1000, 4099):
        ids = e2e.prompt_ids(n)
        assert ids.shape == (1, n) and ids.dtype == torch.long
    unit = list(e2e.PROMPT_TEXT.encode())
    assert e2e.prompt_ids(2 * len(unit) + 3)[0].tolist() == unit * 2 + unit[:3]


def test_lengths_parse_like_the_published_table():
    assert e2e.parse_lengths("1K, 10K,1M,300000") == (1000, 10000, 1_000_000, 300000)
    with pytest.raises(argparse.ArgumentTypeError, match="cannot parse length 'TENK'"):
        e2e.parse_lengths("tenK")


def test_model_config_has_llama3_8b_shapes():
    config = e2e.model_config(layers=2)
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.num_hidden_layers) == (
        4096, 32, 8, 2)


def test_head_density_is_one_for_full_budgets_and_below_for_sparse_ones():
    torch.manual_seed(0)
    q, k = torch.randn(1, 4, 512, 16), torch.randn(1, 2, 512, 16)
    full = e2e.head_density(q, k, [VerticalSlash(512, 512), Dense(), AShape(0, 512), BlockSparse(8, 64)])
    assert full[1] == 1.0 and full[2] == 1.0 and full[3] == 1.0 and full[0] >= 1.0
    q, k = torch.randn(1, 4, 2048, 16), torch.randn(1, 2, 2048, 16)
    sparse = e2e.head_density(q, k, [VerticalSlash(8, 8, sink=2, local=4), AShape(0, 64), BlockSparse(2, 64),
                                     VerticalSlash(4, 4, sink=1, local=2)])
    assert all(0 < value < 1 for value in sparse), sparse


@pytest.mark.parametrize("spread", [False, True])
def test_head_density_counts_vertical_slash_on_the_grid_the_op_runs(monkeypatch, spread):
    """Where 128 x 128 programs can run (stood in for on the CPU), densities follow the op's grid: the length rule
    without a tile count, the cover rule with one, a fixed tile when given."""
    from minference.kernels import launch
    from minference.index import build_vertical_slash_index
    from minference.index.tiles import vertical_slash_density
    from minference.patterns import vertical_slash as vertical_slash_pattern

    n = 2048
    offsets = torch.arange(0, n - 100, n // 5) if spread else torch.arange(0, 1536)
    vertical, slash = torch.arange(128).expand(1, 2, -1), offsets.expand(1, 2, -1)
    monkeypatch.setattr(launch, "wide_grid_possible", lambda q: True)
    monkeypatch.setattr(vertical_slash_pattern, "estimate", lambda *args, **kwargs: (vertical, slash))
    q, k = torch.randn(1, 2, n, 16), torch.randn(1, 1, n, 16)
    patterns = [VerticalSlash(128, offsets.numel())] * 2

    def on(grid):
        return vertical_slash_density(build_vertical_slash_index(n, vertical, slash, grid), n)[0].tolist()

    assert e2e.head_density(q, k, patterns) == on(128)
    assert e2e.head_density(q, k, patterns, counting=True) == on(64 if spread else 128)
    assert e2e.head_density(q, k, patterns, vertical_slash_tile=64, counting=True) == on(64)


def fake_document():
    rows = []
    for n, base in ((10_000, 1.0), (1_000_000, 600.0)):
        rows += [{"tokens": n, "method": "dense_fa2", "seconds": base, "runs": [base], "peak_gb": 20.0},
                 {"tokens": n, "method": "dense_cudnn", "seconds": base * 0.7, "runs": [base], "peak_gb": 20.0},
                 {"tokens": n, "method": "minference", "seconds": base / 10, "runs": [base], "peak_gb": 21.5}]
    rows.append({"tokens": 1_000_000, "method": "streaming", "error": "out of memory: CUDA"})
    settings = e2e.E2ESettings(lengths=(10_000, 1_000_000))
    return {"machine": {"gpu": "Test GPU", "torch": "2.x"}, "weights": "random weights (seed 0), 32 layers",
            "settings": e2e.asdict(settings), "rows": rows, "density": {"10000": [0.5, 0.25]}}


def test_markdown_has_methods_as_columns_lengths_as_rows_and_speedups():
    text = e2e.markdown(fake_document())
    assert "| tokens | FlashAttention-2 (SDPA flash) | cuDNN (SDPA) | MInference | StreamingLLM" not in text
    header = next(line for line in text.splitlines() if line.startswith("| tokens |"))
    assert header.startswith("| tokens | FlashAttention-2 (SDPA flash) | cuDNN (SDPA) | StreamingLLM")
    assert "| 1M | 600.000 | 420.000 | OOM | 60.000 | 10.00 | 7.00 |" in text
    assert "- 10K: mean 0.375; per layer 0.500, 0.250" in text
    assert "random weights" in text


def test_outputs_are_written(tmp_path):
    paths = e2e.write_outputs(fake_document(), str(tmp_path))
    assert json.loads(open(paths["json"]).read())["rows"][0]["method"] == "dense_fa2"
    assert open(paths["png"], "rb").read(4) == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2e.json", "e2e.md", "e2e.png"]


def test_the_chart_is_titled_with_the_timed_model(monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(e2e.report, "write_log_log_chart",
                        lambda path, panels, **options: drawn.update(options, panels=panels))
    document = fake_document()
    e2e.write_chart(document, str(tmp_path / "e2e.png"))
    assert drawn["title"] == "Llama-3-8B-1M prefill, Test GPU\nrandom weights (seed 0), 32 layers"
    (_, lines), = drawn["panels"]
    drawn_methods = ("dense_fa2", "dense_cudnn", "minference")
    assert [line.label for line in lines] == [e2e.METHOD_TITLES[m] for m in drawn_methods]
    assert lines[2].points == [(10_000, 0.1), (1_000_000, 60.0)], "the out-of-memory row draws no point"
    document["settings"]["model"] = "qwen2.5-coder-0.5b"
    document["weights"] = "qwen2.5-coder-0.5b-instruct (real weights)"
    e2e.write_chart(document, str(tmp_path / "e2e.png"))
    assert drawn["title"] == "qwen2.5-coder-0.5b prefill, Test GPU\nqwen2.5-coder-0.5b-instruct (real weights)"
    document["settings"].update(model=None, checkpoint="/models/Meta-Llama-3-8B/")
    e2e.write_chart(document, str(tmp_path / "e2e.png"))
    assert drawn["title"].startswith("Meta-Llama-3-8B prefill, Test GPU\n")


def test_cli_parser_registers_e2e():
    parser = argparse.ArgumentParser()
    e2e.add_e2e_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["e2e", "--lengths", "100K,1M", "--methods", "dense_cudnn,minference", "--layers", "4"])
    assert args.lengths == (100_000, 1_000_000) and args.layers == 4 and args.run is e2e._run_cli


def test_run_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        e2e.run(e2e.E2ESettings(lengths=(1000,)))


def test_merge_combines_runs_and_refuses_other_gpus():
    first, second = fake_document(), fake_document()
    second["rows"] = [{"tokens": 500_000, "method": "minference", "seconds": 30.0, "runs": [30.0], "peak_gb": 40.0}]
    second["density"] = {"500000": [0.1]}
    merged = e2e.merge([first, second])
    assert [(r["tokens"], r["method"]) for r in merged["rows"]][:4] == [
        (10_000, "dense_fa2"), (10_000, "dense_cudnn"), (10_000, "minference"), (500_000, "minference")]
    assert set(merged["density"]) == {"10000", "500000"} and merged["settings"]["lengths"] == [10_000, 500_000, 1_000_000]
    second["machine"] = {"gpu": "Other GPU"}
    with pytest.raises(ValueError, match="cannot merge runs on 'Other GPU'"):
        e2e.merge([first, second])


def test_merged_runs_timed_differently_say_how_each_length_was_timed():
    first, second = fake_document(), fake_document()
    second["settings"] = dict(second["settings"], runs=1, warmup=0)
    second["rows"] = [{"tokens": 2_000_000, "method": "minference", "seconds": 9.0, "runs": [9.0], "peak_gb": 70.0}]
    text = e2e.markdown(e2e.merge([first, second]))
    assert "(timing per length below)" in text
    assert "- 2M: median of 1, after 0 warm-up" in text
    assert "(timing per length below)" not in e2e.markdown(first)
    third = fake_document()
    third["settings"] = dict(third["settings"], runs=1, warmup=1)
    third["rows"] = [{"tokens": 2_000_000, "method": "dense_fa2", "seconds": 90.0, "runs": [90.0], "peak_gb": 70.0}]
    text = e2e.markdown(e2e.merge([first, second, third]))
    assert "- 10K, 1M, 2M (FlashAttention-2 (SDPA flash)): median of 1, after 1 warm-up" in text
    assert "- 2M (MInference): median of 1, after 0 warm-up" in text


def test_cli_merge_writes_the_table(tmp_path, capsys):
    paths = e2e.write_outputs(fake_document(), str(tmp_path / "a"))
    parser = argparse.ArgumentParser()
    e2e.add_e2e_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["e2e", "--merge", paths["json"], "--out", str(tmp_path / "merged")])
    assert args.run(args) == 0
    assert "| 1M | 600.000 |" in (tmp_path / "merged" / "e2e.md").read_text()


def _attention_of_first_layer(locality: float, n: int = 1024) -> torch.Tensor:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=128, rope_theta=3.58e9,
                         attention_bias=locality > 0, attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if locality > 0:
        e2e.add_local_bias(model, locality)
    with torch.no_grad():
        out = model(e2e.prompt_ids(n), output_attentions=True)
    return out.attentions[0][0]  # (heads, n, n)


def test_local_bias_makes_random_attention_decay_with_distance():
    """The bias turns near-uniform random attention into local-heavy attention (what vertical-slash is built for):
    the last query's mass within 64 tokens goes from about 64/1024 to most of the row."""
    near = lambda probs: probs[:, -1, -64:].sum(-1)  # noqa: E731
    plain, local = _attention_of_first_layer(0.0), _attention_of_first_layer(e2e.DEFAULT_LOCALITY)
    assert (near(plain) < 0.2).all(), near(plain)
    assert (near(local) > 0.8).all(), near(local)
    assert (local[:, -1, -1] > local[:, -1, -512]).all()


def test_build_model_rejects_a_negative_locality():
    with pytest.raises(ValueError, match="locality must be a number >= 0"):
        e2e.build_model(locality=-1.0, device="cpu")


def test_dense_above_reaches_the_patch_and_the_table():
    parser = argparse.ArgumentParser()
    e2e.add_e2e_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["e2e"]).dense_above == e2e.hf.DEFAULT_DENSE_ABOVE
    assert parser.parse_args(["e2e", "--dense-above", "none"]).dense_above is None
    assert parser.parse_args(["e2e", "--dense-above", "0.5"]).dense_above == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["e2e", "--dense-above", "-1"])
    document = fake_document()
    assert "keep more than 0.6 of the causal tiles" in e2e.markdown(document)
    del document["settings"]["dense_above"]
    assert "and never by density" in e2e.markdown(document)


def test_real_weights_load_and_cutting_layers_leaves_later_loads_whole(tmp_path):
    from evals_helpers import tiny_llama_checkpoint
    from minference.evals.models import load_model

    folder = str(tiny_llama_checkpoint(tmp_path / "tiny", layers=3))
    model, tokenizer, label = e2e.build_model(model=folder, layers=2, dtype=torch.float32, device="cpu")
    assert len(model.model.layers) == 2 and model.config.num_hidden_layers == 2
    assert "tiny (real weights)" in label and tokenizer is not None
    assert model.config._attn_implementation == "sdpa"
    assert len(load_model(folder, dtype="float32", device="cpu").model.model.layers) == 3


def test_rope_scaling_needs_real_weights_and_excludes_a_checkpoint():
    with pytest.raises(ValueError, match="rope_scaling applies to model"):
        e2e.build_model(rope_scaling=2.0, device="cpu")
    with pytest.raises(ValueError, match="model or checkpoint, not both"):
        e2e.build_model(checkpoint="/some/folder", model="smollm2", device="cpu")


def test_natural_text_is_used_when_the_texts_are_on_disk(monkeypatch):
    from minference.evals import text

    monkeypatch.setattr(text, "load_documents", lambda fetch=True: ["alpha beta gamma. " * 50, "delta. " * 50])
    prompt, source = e2e.natural_text(200)  # 6 characters a token: both documents
    assert prompt.startswith("alpha beta gamma.") and "delta." in prompt and source == text.GUTENBERG_SOURCE

    def unavailable(fetch=True):
        raise text.TextUnavailable("not cached")

    monkeypatch.setattr(text, "load_documents", unavailable)
    assert e2e.natural_text(100) == (e2e.PROMPT_TEXT, "a repeated paragraph (no Gutenberg texts on disk)")


def test_every_shorter_prompt_is_a_prefix_of_the_longest():
    """The sweep tokenises its text once and cuts each length from the longest prompt."""
    from evals_helpers import byte_tokenizer

    tokenizer, text = byte_tokenizer(), "Ships left the northern cape at dawn. " * 3
    longest = e2e.prompt_ids(1000, tokenizer, text=text)
    for n in (1, 37, 114, 999):
        assert torch.equal(longest[:, :n], e2e.prompt_ids(n, tokenizer, text=text))
