"""A GGUF file's config and tokenizer, converted once and kept as a small transformers folder.

transformers reads a GGUF's metadata again for the config, the tokenizer and the weights, and its pure-Python reader
takes about 20 s a time for a 151K-token vocabulary (Qwen2.5-Coder-0.5B on 2 CPU cores: config 19.7 s, tokenizer
20.8 s, weights 33.2 s). Kept as ``config.json`` plus tokenizer files (a few MB) under the user cache, the config
and tokenizer load in about a second on every later run; the weights still come from the GGUF itself.

A folder is tied to the file's resolved path, size and modification time and to the transformers version that
wrote it; any change writes a new one. It is written into a temporary folder and renamed into place, so a run
killed halfway never leaves a folder that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .text import cache_dir

STAMP = "minference-gguf-source.json"


def _stamp(gguf: Path) -> dict:
    import transformers

    status = gguf.stat()
    return {
        "gguf": str(gguf.resolve()),
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "transformers": transformers.__version__,
    }


def metadata_folder(gguf: Path) -> Path:
    """The folder for ``gguf``'s config and tokenizer under ``$MINFERENCE_CACHE/gguf-metadata`` (may not exist)."""
    return _folder(gguf, _stamp(gguf))


def _folder(gguf: Path, stamp: dict) -> Path:
    digest = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "gguf-metadata" / f"{gguf.stem}-{digest}"


def _is_current(folder: Path, stamp: dict) -> bool:
    try:
        return json.loads((folder / STAMP).read_text()) == stamp
    except (OSError, ValueError):
        return False


def load_config_and_tokenizer(gguf: Path):
    """``(config, tokenizer)`` of ``gguf``: from its converted folder, written on the first call.

    A folder that cannot be written (read-only cache) only costs the slow path: the GGUF is read directly.
    """
    from transformers import AutoConfig, AutoTokenizer

    stamp = _stamp(gguf)
    folder = _folder(gguf, stamp)
    if _is_current(folder, stamp):
        return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    try:
        _write(folder, stamp, config, tokenizer)
    except OSError:  # a read-only cache only costs the slow path again next time
        pass
    return config, tokenizer


def _write(folder: Path, stamp: dict, config, tokenizer) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / STAMP).write_text(json.dumps(stamp, sort_keys=True))
        if folder.exists() and not _is_current(folder, stamp):
            shutil.rmtree(folder)  # a folder left without its stamp
        if not folder.exists():  # else another process renamed its copy in first: keep that one
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
