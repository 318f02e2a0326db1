"""Write a model as a safetensors checkpoint folder (``config.json``, tokenizer files, ``model.safetensors``).

vLLM loads models from such a folder, not from the GGUF file the shipped SmolLM2 comes in. :func:`convert` loads
the model with transformers (which dequantises GGUF weights), drops the ``quantization_config`` that names the GGUF
source (the weights written are plain float tensors), and writes the folder once: into a temporary sibling, then one
rename, so a reader never sees half a checkpoint and an interrupted conversion leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

CACHE_ENV = "MINFERENCE_CACHE"
"""Environment variable naming the cache folder (default ``~/.cache/minference``)."""

DTYPES = ("float32", "float16", "bfloat16")


def cache_dir() -> Path:
    """Where converted checkpoints live: ``$MINFERENCE_CACHE`` or ``~/.cache/minference``, then ``checkpoints/``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "minference")
    return Path(root) / "checkpoints"


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer_config.json"))


def default_folder(model: Optional[str] = None, dtype: str = "float32") -> Path:
    """The cache folder :func:`convert` writes ``model`` to when no ``out`` is given."""
    from ..evals.models import model_name

    return cache_dir() / f"{model_name(model)}-{dtype}"


def convert(model: Optional[str] = None, out: Union[str, os.PathLike, None] = None, *, dtype: str = "float32",
            overwrite: bool = False) -> Path:
    """Write ``model`` as a safetensors folder and return its path; an existing complete folder is reused.

    Args:
        model: what :func:`minference.evals.models.load_model` accepts: ``None`` / ``"smollm2"`` (the shipped
            SmolLM2-135M-Instruct GGUF), a ``.gguf`` file, a checkpoint folder or a hub id.
        out: the folder to write (default :func:`default_folder`). Its parent is created.
        dtype: weights' dtype, ``"float32"`` | ``"float16"`` | ``"bfloat16"``.
        overwrite: rewrite the folder even when it is already complete.

    Raises:
        ValueError: unknown ``dtype``; ``out`` exists and is not a folder, or is a non-empty folder that is not a
            complete checkpoint (it is never deleted). FileNotFoundError: the shipped model is not installed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    folder = Path(out).expanduser() if out is not None else default_folder(model, dtype)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out {str(folder)!r} exists and is not a folder")
    if folder.is_dir() and _complete(folder) and not overwrite:
        return folder
    if folder.is_dir() and any(folder.iterdir()) and not _complete(folder):
        raise ValueError(f"out {str(folder)!r} is a non-empty folder that is not a checkpoint; choose another")

    from ..evals.models import load_model

    loaded = load_model(model, dtype=dtype, device="cpu")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        _write_weights(loaded.model, tmp / "model.safetensors")
        config = loaded.model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the GGUF source: the tensors written are dequantised floats
        config.save_pretrained(tmp)
        _drop_quantization_config(tmp / "config.json")
        loaded.tokenizer.save_pretrained(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a checkpoint should read like any other folder
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _write_weights(model, path: Path) -> None:
    """The state dict as one safetensors file. transformers refuses ``save_pretrained`` on a model it loaded from
    GGUF (it counts as quantised), so the tensors are written directly; a tensor sharing storage with an earlier
    one (tied embeddings) is written once, under its first name, as transformers itself does."""
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})


def _drop_quantization_config(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.pop("quantization_config", None) is not None:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def add_parser(subparsers) -> None:
    """``minference convert --model smollm2 --out DIR``."""
    parser = subparsers.add_parser(
        "convert", help="write a model as a safetensors folder (for vLLM)", description=__doc__,
    )
    parser.add_argument("--model", default=None, help="smollm2 (default), a .gguf file, a folder or a hub id")
    parser.add_argument("--out", default=None, help=f"folder to write (default under {cache_dir()})")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--overwrite", action="store_true", help="rewrite an existing checkpoint")
    parser.set_defaults(run=_run_cli)


def _run_cli(args) -> int:
    print(convert(args.model, args.out, dtype=args.dtype, overwrite=args.overwrite))
    return 0
