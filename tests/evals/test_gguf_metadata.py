"""A GGUF's config and tokenizer are converted once and read back from the cache on later loads."""

import os

import pytest
import transformers

from evals_helpers import byte_tokenizer
from minference.evals import gguf_metadata


@pytest.fixture
def slow_reads(tmp_path, monkeypatch):
    """Stand-ins for transformers' GGUF reads (a real config and tokenizer); returns the list of GGUF reads made."""
    monkeypatch.setenv("MINFERENCE_CACHE", str(tmp_path / "cache"))
    reads = []
    real_config, real_tokenizer = transformers.AutoConfig.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def config(source, gguf_file=None, **kw):
        if gguf_file is None:
            return real_config(source, **kw)
        reads.append(("config", gguf_file))
        return transformers.Qwen2Config(vocab_size=257, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, max_position_embeddings=32768)

    def tokenizer(source, gguf_file=None, **kw):
        if gguf_file is None:
            return real_tokenizer(source, **kw)
        reads.append(("tokenizer", gguf_file))
        return byte_tokenizer()

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF stand-in")
    return model, reads


def test_the_second_load_reads_the_converted_folder_not_the_gguf(slow_reads):
    gguf, reads = slow_reads
    config, tokenizer = gguf_metadata.load_config_and_tokenizer(gguf)
    assert len(reads) == 2
    again_config, again_tokenizer = gguf_metadata.load_config_and_tokenizer(gguf)
    assert len(reads) == 2  # no GGUF read this time
    assert again_config.max_position_embeddings == config.max_position_embeddings == 32768
    assert again_tokenizer.encode("the valley") == tokenizer.encode("the valley")
    assert not [p for p in gguf_metadata.metadata_folder(gguf).parent.iterdir() if p.name.startswith(".")]


def test_a_changed_gguf_is_converted_again(slow_reads):
    gguf, reads = slow_reads
    gguf_metadata.load_config_and_tokenizer(gguf)
    first = gguf_metadata.metadata_folder(gguf)
    gguf.write_bytes(b"another GGUF stand-in")
    os.utime(gguf, ns=(1, 1))
    gguf_metadata.load_config_and_tokenizer(gguf)
    assert len(reads) == 4 and gguf_metadata.metadata_folder(gguf) != first


def test_a_folder_left_without_its_stamp_is_replaced(slow_reads):
    gguf, reads = slow_reads
    folder = gguf_metadata.metadata_folder(gguf)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{ half written")
    gguf_metadata.load_config_and_tokenizer(gguf)
    assert (folder / gguf_metadata.STAMP).is_file()
    gguf_metadata.load_config_and_tokenizer(gguf)
    assert len(reads) == 2


def test_a_cache_that_cannot_be_written_only_costs_the_slow_path(slow_reads, tmp_path, monkeypatch):
    gguf, reads = slow_reads
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv("MINFERENCE_CACHE", str(blocked))
    config, tokenizer = gguf_metadata.load_config_and_tokenizer(gguf)
    assert config.max_position_embeddings == 32768 and tokenizer.encode("a") == byte_tokenizer().encode("a")
