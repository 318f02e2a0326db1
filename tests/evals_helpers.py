"""A tiny word-level tokenizer for eval tests: one id per whitespace-separated word (and per newline)."""

import re


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
