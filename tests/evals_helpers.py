"""Eval test doubles: a tiny word-level tokenizer (one id per whitespace-separated word and per newline) and a tiny
random Llama checkpoint folder."""

import re

import torch


class WordTokenizer:
    """``encode`` splits into words and newlines; ``decode`` joins them back with spaces (newlines kept)."""

    chat_template = None
    pad_token_id = 0

    def __init__(self):
        self.vocab, self.words = {}, []

    def _id(self, word):
        if word not in self.vocab:
            self.vocab[word] = len(self.words) + 1
            self.words.append(word)
        return self.vocab[word]

    def encode(self, text, add_special_tokens=False):
        return [self._id(w) for w in re.findall(r"\n|[^\s]+", text)]

    def decode(self, ids, skip_special_tokens=False):
        out = []
        for i in ids:
            word = self.words[i - 1]
            out.append(word if word == "\n" or not out or out[-1] == "\n" else " " + word)
        return "".join(out)


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: every byte one token, ids 1-256 (0 is ``<s>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    inner = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=inner, bos_token="<s>")


def tiny_llama_checkpoint(folder, layers: int = 3):
    """A random 64-wide Llama with :func:`byte_tokenizer` saved as a transformers folder (loads like a real one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=257, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                         rope_theta=50000.0)
    LlamaForCausalLM(config).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder
