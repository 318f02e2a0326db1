"""The vLLM integration's settings, request selection and tensor-parallel slicing (no vLLM needed)."""
import json

import pytest
import torch
import transformers

from minference import AShape, BlockSparse, Dense, VerticalSlash
from minference import config as cfg
from minference.integrations import vllm as mv
from minference.integrations.vllm_backend import sparse_requests

LAYERS, HEADS = 3, 4


@pytest.fixture
def folder(tmp_path):
    transformers.LlamaConfig(num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
                             hidden_size=64, intermediate_size=128, vocab_size=128).save_pretrained(tmp_path)
    return str(tmp_path)


def model_config():
    return transformers.LlamaConfig(num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
                                    hidden_size=64)


def test_engine_args_carry_the_resolved_config_as_json(folder):
    config = [[VerticalSlash(8, 16), AShape(4, 16), BlockSparse(2), Dense()]] * LAYERS
    args = mv.engine_args(folder, config, dense_below=128, dense_above=None, starting_layer=1)
    data = json.loads(json.dumps(args["additional_config"][mv.ADDITIONAL_CONFIG_KEY]))  # what vLLM hands over
    settings = mv.parse_settings(data, model_config())
    assert settings.dense_below == 128 and settings.dense_above is None
    assert settings.config.layers[0] == (Dense(),) * HEADS  # below starting_layer
    assert settings.config.layers[2] == tuple(config[2])


def test_default_config_is_the_default_pattern(folder):
    data = mv.engine_args(folder)["additional_config"]["minference"]
    assert mv.parse_settings(data, model_config()).config == cfg.default(LAYERS, HEADS)


@pytest.mark.parametrize("data, error, match", [
    ({"config": cfg.default(LAYERS + 1, HEADS).to_list()}, ValueError, "4 layers but the model has 3"),
    ({"config": cfg.default(LAYERS, 2).to_list()}, ValueError, "layer 0 has 2 heads but the model has 4"),
    ({"dense_below": -1}, ValueError, "dense_below must be >= 0"),
    ({"dense_above": "high"}, ValueError, "dense_above must be None or a number"),
    ({"backend": "cuda"}, ValueError, "backend must be one of"),
    ({"vertical_slash_tile": 96}, ValueError, "tile"),
    ({"budget": 3}, ValueError, r"unknown field\(s\) \['budget'\]"),
    ([1, 2], TypeError, "must be a dict"),
])
def test_bad_settings_name_the_field(data, error, match):
    with pytest.raises(error, match=match):
        mv.parse_settings(data, model_config())


def test_engine_args_check_the_tensor_parallel_split(folder):
    assert mv.engine_args(folder, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="tensor_parallel_size=3 must divide the model's 4 query heads"):
        mv.engine_args(folder, tensor_parallel_size=3)


def test_each_rank_gets_its_own_contiguous_heads():
    layer = tuple(VerticalSlash(vertical=10 + h, slash=20) for h in range(8))
    slices = [mv.rank_patterns(layer, 2, rank, 4) for rank in range(4)]
    assert [p.vertical for s in slices for p in s] == list(range(10, 18))
    assert slices[1] == layer[2:4]
    with pytest.raises(ValueError, match="8 query heads per layer but 2 rank"):
        mv.rank_patterns(layer, 3, 0, 2)
    with pytest.raises(ValueError, match="rank must be in"):
        mv.rank_patterns(layer, 2, 4, 4)


def test_only_whole_uncached_prompts_of_dense_below_tokens_run_sparse():
    # requests: decode (1 of 900), long whole prompt, short whole prompt, continuation chunk (prefix hit or later
    # chunk of a chunked prefill: 2000 scheduled on 3000 tokens), long whole prompt
    query_lens = [1, 4096, 100, 2000, 1024]
    seq_lens = [900, 4096, 100, 3000, 1024]
    starts = torch.tensor([0] + list(torch.cumsum(torch.tensor(query_lens), 0)), dtype=torch.int32)
    spans = sparse_requests(starts, torch.tensor(seq_lens, dtype=torch.int32), dense_below=1024)
    assert spans == [(1, 1, 4097), (4, 6197, 7221)]
    assert sparse_requests(starts, torch.tensor(seq_lens), dense_below=0) == [(1, 1, 4097), (2, 4097, 4197),
                                                                             (4, 6197, 7221)]


def test_vllm_ttft_table_reads_like_the_document():
    from minference.bench import e2e_vllm

    document = {
        "machine": {"device": "AMD EPYC (2 cores)", "torch": "2.13.0+cpu", "vllm": "0.32.0", "date": "2026-12-03",
                    "commit": "abc1234"},
        "max_model_len": 8001, "hf_overrides": {},
        "settings": {"runs": 1, "config": "smollm2-135m-instruct-d0.5", "dense_below": 0, "dense_above": 0.6},
        "rows": [{"tokens": 4000, "method": "dense", "ttft_s": 2.0}, {"tokens": 4000, "method": "minference",
                                                                        "ttft_s": 4.0},
                 {"tokens": 8000, "method": "dense", "ttft_s": 6.0}],
    }
    table = e2e_vllm.markdown(document)
    assert "**AMD EPYC (2 cores) | torch 2.13.0+cpu | vLLM 0.32.0 | 2026-12-03 | commit abc1234**" in table
    assert "| 4000 | 2.00 | 4.00 | 0.50× |" in table
    assert "| 8000 | 6.00 | – | – |" in table


def test_bench_e2e_takes_the_vllm_engine():
    import argparse

    from minference.bench import e2e

    parser = argparse.ArgumentParser()
    e2e.add_e2e_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["e2e", "--engine", "vllm", "--lengths", "4K,8K", "--runs", "1"])
    assert args.engine == "vllm" and args.lengths == (4000, 8000) and args.dense_below is None
    with pytest.raises(ValueError, match="methods must be among"):
        from minference.bench.e2e_vllm import VllmBenchSettings, run

        run(VllmBenchSettings(methods=("dense_fa2",)))


def test_the_integration_imports_without_vllm():
    import subprocess
    import sys

    code = ("import sys; sys.modules['vllm'] = None\n"  # an import of vllm now fails, as where it is not installed
            "from minference.integrations.vllm_backend import sparse_requests\n"
            "from minference.integrations.vllm import engine_args, rank_patterns\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
