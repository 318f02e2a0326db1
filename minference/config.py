"""Per-head sparse attention configs: schema, load/save, validation against a model, upstream import, budgets.

A config is a JSON list with one entry per layer; each entry lists one pattern per query head::

    [
      [{"pattern": "vertical_slash", "vertical": 1000, "slash": 6096}, {"pattern": "a_shape", "sink": 128,
       "local": 4096}, ...],                                   # layer 0: Hq entries
      [{"pattern": "block_sparse", "top_k": 100}, {"pattern": "dense"}, ...],   # layer 1
      ...
    ]

Omitted pattern fields take the pattern's defaults. The object form ``{"layers": [...], "metadata": {...}}`` is read
and written too (the search records the model and the objective there). Upstream MInference's per-layer dicts
``{"0": ["vertical_and_slash", 1000, 6096, 0.9], ...}`` are imported with :func:`from_upstream`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ._files import atomic_write_json
from .patterns import AShape, AnyPattern, BlockSparse, Dense, VerticalSlash

PATTERN_TYPES = {cls.name: cls for cls in (VerticalSlash, AShape, BlockSparse, Dense)}
"""Config ``"pattern"`` value -> pattern class."""

DEFAULT_PATTERN = VerticalSlash(vertical=1000, slash=6096)
"""Every head's pattern when no config is given (the budgets the reference implementation defaults to)."""

REGISTRY_DIR = Path(__file__).parent / "configs"
"""Named configs: ``REGISTRY_DIR / f"{name}.json"`` loads as ``load(name)``."""

UPSTREAM_BLOCK_SPARSE_TOP_K = 100
"""Upstream ignores the budgets of ``block_sparse`` heads and keeps 100 key blocks of 64."""


@dataclass(frozen=True)
class Config:
    """Patterns of every query head of every layer: ``layers[layer][head]``.

    Raises:
        TypeError: ``layers`` is not a sequence of sequences of patterns.
        ValueError: a layer has no heads, or layers differ in head count.
    """

    layers: tuple
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Iterable):
            raise TypeError(f"layers must be a sequence of per-layer pattern lists, got {type(self.layers).__name__}")
        layers = tuple(tuple(layer) for layer in self.layers)
        if not layers:
            raise ValueError("layers must hold at least one layer")
        for i, layer in enumerate(layers):
            if not layer:
                raise ValueError(f"layer {i} has no heads")
            for h, pattern in enumerate(layer):
                if not isinstance(pattern, tuple(PATTERN_TYPES.values())):
                    raise TypeError(f"layer {i} head {h}: expected a pattern object, got {pattern!r}")
        heads = {len(layer) for layer in layers}
        if len(heads) != 1:
            counts = [len(layer) for layer in layers]
            raise ValueError(f"every layer must have the same number of heads, got {counts}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return len(self.layers[0])

    def to_list(self) -> list:
        """The JSON-ready list form (one list of head dicts per layer)."""
        return [[pattern.to_dict() for pattern in layer] for layer in self.layers]

    def with_starting_layer(self, starting_layer: int) -> "Config":
        """A copy where layers ``< starting_layer`` are all :class:`Dense`.

        Raises:
            TypeError: not an int. ValueError: negative or beyond the last layer.
        """
        _check_int("starting_layer", starting_layer, 0)
        if starting_layer > self.num_layers:
            raise ValueError(f"starting_layer must be <= num_layers ({self.num_layers}), got {starting_layer}")
        dense = tuple(Dense() for _ in range(self.num_heads))
        layers = tuple(dense if i < starting_layer else layer for i, layer in enumerate(self.layers))
        return replace(self, layers=layers)


ConfigSource = Union[Config, str, os.PathLike, Sequence, Mapping]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def pattern_from_dict(entry: Mapping, where: str = "entry") -> AnyPattern:
    """``{"pattern": name, **budgets}`` -> the pattern object (a pattern object passes through).

    Raises:
        TypeError: ``entry`` is not a dict, or a budget has the wrong type.
        ValueError: unknown pattern name, unknown field, or a budget out of range; the message starts with ``where``.
    """
    if isinstance(entry, tuple(PATTERN_TYPES.values())):
        return entry
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: expected a dict like {{'pattern': 'vertical_slash', ...}}, got {entry!r}")
    fields = dict(entry)
    name = fields.pop("pattern", None)
    if name not in PATTERN_TYPES:
        raise ValueError(f"{where}: 'pattern' must be one of {sorted(PATTERN_TYPES)}, got {name!r}")
    cls = PATTERN_TYPES[name]
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} for pattern {name!r} (known: {sorted(known)})")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None


def from_list(data: Union[Sequence, Mapping]) -> Config:
    """Parse the JSON form (a list of layers, or ``{"layers": [...], "metadata": {...}}``) into a :class:`Config`.

    Entries may also be pattern objects (``[[VerticalSlash(...), Dense(), ...], ...]``).

    Raises:
        TypeError, ValueError: naming the layer and head of the bad entry.
    """
    metadata = {}
    if isinstance(data, Mapping):
        if "layers" not in data:
            raise ValueError("a config object must have a 'layers' key (or pass the list of layers itself)")
        metadata = dict(data.get("metadata", {}))
        data = data["layers"]
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise TypeError(f"config must be a list of layers, got {type(data).__name__}")
    if data and isinstance(data[0], Mapping) and all(isinstance(key, str) and key.isdigit() for key in data[0]):
        # A dict keyed by head index is upstream's per-layer layout: say so instead of a confusing type error.
        raise ValueError("this looks like an upstream MInference config; load it with minference.config.from_upstream")
    layers = []
    for i, layer in enumerate(data):
        if isinstance(layer, (str, bytes, Mapping)) or not isinstance(layer, Sequence):
            raise TypeError(f"layer {i}: expected a list with one entry per query head, got {type(layer).__name__}")
        layers.append([pattern_from_dict(entry, f"layer {i} head {h}") for h, entry in enumerate(layer)])
    return Config(tuple(layers), metadata)


_UPSTREAM_TYPES = ("vertical_and_slash", "stream_llm", "block_sparse")


def from_upstream(data: Union[Sequence, str, os.PathLike]) -> Config:
    """Import upstream MInference's format: a list of per-layer dicts ``{"<head>": [type, vertical, slash, score]}``.

    ``vertical_and_slash`` -> :class:`VerticalSlash` (vertical, slash); ``stream_llm`` -> :class:`AShape`
    (sink = first number, local = second); ``block_sparse`` -> :class:`BlockSparse` with upstream's fixed top-100
    (upstream ignores the two numbers). The score is kept in ``metadata["scores"]``.

    Args:
        data: the parsed JSON list, or a path to the file.

    Raises:
        TypeError, ValueError: naming the layer and head of the bad entry (unknown type, missing head index, ...).
    """
    if isinstance(data, (str, os.PathLike)):
        data = _read_json(Path(data))
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Sequence):
        raise TypeError(f"upstream config must be a list of per-layer dicts, got {type(data).__name__}")
    layers, scores = [], []
    for i, layer in enumerate(data):
        if not isinstance(layer, Mapping):
            raise TypeError(f"layer {i}: expected a dict keyed by head index, got {type(layer).__name__}")
        try:
            heads = sorted(int(key) for key in layer)
        except ValueError:
            raise ValueError(f"layer {i}: head keys must be integers as strings, got {sorted(layer)}") from None
        if heads != list(range(len(heads))):
            missing = sorted(set(range(max(heads, default=-1) + 1)) - set(heads))
            raise ValueError(f"layer {i}: heads must be numbered 0..{len(heads) - 1}, missing {missing}")
        patterns, layer_scores = [], []
        for h in heads:
            entry = layer[str(h)] if str(h) in layer else layer[h]
            patterns.append(_upstream_pattern(entry, f"layer {i} head {h}"))
            layer_scores.append(entry[3] if len(entry) > 3 else None)
        layers.append(patterns)
        scores.append(layer_scores)
    return Config(tuple(layers), {"source": "upstream", "scores": scores})


def _upstream_pattern(entry, where: str) -> AnyPattern:
    if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) < 3:
        raise ValueError(f"{where}: expected [type, vertical, slash, score], got {entry!r}")
    kind, first, second = entry[0], entry[1], entry[2]
    if kind not in _UPSTREAM_TYPES:
        raise ValueError(f"{where}: type must be one of {list(_UPSTREAM_TYPES)}, got {kind!r}")
    try:
        if kind == "vertical_and_slash":
            return VerticalSlash(vertical=int(first), slash=int(second))
        if kind == "stream_llm":
            return AShape(sink=int(first), local=int(second))
        return BlockSparse(top_k=UPSTREAM_BLOCK_SPARSE_TOP_K)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None


def default(num_layers: int, num_heads: int, pattern: AnyPattern = DEFAULT_PATTERN) -> Config:
    """Every head of every layer runs ``pattern`` (default vertical-slash 1000/6096)."""
    _check_int("num_layers", num_layers, 1)
    _check_int("num_heads", num_heads, 1)
    return Config(tuple(tuple(pattern for _ in range(num_heads)) for _ in range(num_layers)))


def registry_names() -> list:
    """Names loadable with ``load(name)``: the JSON files shipped in ``minference/configs/``."""
    if not REGISTRY_DIR.is_dir():
        return []
    return sorted(path.stem for path in REGISTRY_DIR.glob("*.json"))


def load(source: ConfigSource) -> Config:
    """A config from a :class:`Config`, the JSON list/object, a file path, or a registry name.

    A string is a path when that file exists, else a registry name (see :func:`registry_names`). A file (or registry
    entry) in upstream's format is detected and imported.

    Raises:
        TypeError: ``source`` has an unsupported type.
        ValueError: no such file or registry name, invalid JSON, or an invalid entry (naming layer and head).
    """
    if isinstance(source, Config):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            candidate = REGISTRY_DIR / f"{source}.json"
            if isinstance(source, str) and os.sep not in source and candidate.is_file():
                path = candidate
            else:
                raise ValueError(
                    f"config {str(source)!r} is neither a file nor a registry name (known names: {registry_names()})"
                )
        data = _read_json(path)
        if _looks_upstream(data):
            return from_upstream(data)
        return from_list(data)
    if isinstance(source, (Sequence, Mapping)) and not isinstance(source, (bytes, bytearray)):
        if _looks_upstream(source):
            return from_upstream(source)
        return from_list(source)
    raise TypeError(f"config must be a Config, a path, a registry name, a list or a dict, got {type(source).__name__}")


def _looks_upstream(data) -> bool:
    return (
        isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and len(data) > 0
        and isinstance(data[0], Mapping) and len(data[0]) > 0
        and all(isinstance(key, str) and key.isdigit() for key in data[0])
    )


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid JSON: {error}") from None


def save(config: ConfigSource, path: Union[str, os.PathLike]) -> Path:
    """Write ``config`` as JSON to ``path`` atomically (a temporary file in the same folder, then a rename).

    The plain list form is written unless the config carries metadata, which needs the object form.

    Returns:
        The path written.
    """
    config = load(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"layers": config.to_list(), "metadata": config.metadata} if config.metadata else config.to_list()
    atomic_write_json(path, data)
    return path


def model_shape(model_config) -> tuple:
    """``(num_layers, num_query_heads)`` of a transformers config (or any object with those attributes).

    Raises:
        ValueError: the config has no ``num_hidden_layers`` / ``num_attention_heads``.
    """
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    layers = getattr(text_config, "num_hidden_layers", None)
    heads = getattr(text_config, "num_attention_heads", None)
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise ValueError(
            f"model_config must define num_hidden_layers and num_attention_heads, got {type(model_config).__name__}"
        )
    return layers, heads


def validate(config: ConfigSource, model_config) -> Config:
    """Check ``config`` against a model: one entry per layer, one pattern per query head.

    Args:
        config: anything :func:`load` accepts.
        model_config: a transformers config (``num_hidden_layers``, ``num_attention_heads``).

    Returns:
        The loaded :class:`Config`.

    Raises:
        ValueError: wrong layer or head count (naming the first layer that differs), or a bad entry.
    """
    config = load(config)
    layers, heads = model_shape(model_config)
    if config.num_layers != layers:
        raise ValueError(f"config has {config.num_layers} layers but the model has {layers}")
    for i, layer in enumerate(config.layers):
        if len(layer) != heads:
            raise ValueError(f"config layer {i} has {len(layer)} heads but the model has {heads} query heads")
    return config


def resolve(config: Optional[ConfigSource], model_config, starting_layer: int = 0) -> Config:
    """The config to run on a model: ``config`` validated (or :func:`default` when ``None``), dense below
    ``starting_layer``.

    Raises:
        TypeError, ValueError: as :func:`validate` and :meth:`Config.with_starting_layer`.
    """
    if config is None:
        config = default(*model_shape(model_config))
    return validate(config, model_config).with_starting_layer(starting_layer)


def _scaled(value: int, factor: float, minimum: int) -> int:
    return max(minimum, int(round(value * factor)))


def scale_pattern(pattern: AnyPattern, factor: float) -> AnyPattern:
    """One pattern with its searched budgets multiplied by ``factor`` (rounded, at least 1).

    Vertical-slash scales ``vertical`` and ``slash`` (its forced ``sink``/``local`` stay, and each budget stays at least
    as large as its forced part); A-shape scales ``local``; block-sparse scales ``top_k``; dense is unchanged.
    """
    if isinstance(pattern, VerticalSlash):
        return replace(
            pattern,
            vertical=_scaled(pattern.vertical, factor, max(1, min(pattern.sink, pattern.vertical))),
            slash=_scaled(pattern.slash, factor, max(1, min(pattern.local, pattern.slash))),
        )
    if isinstance(pattern, AShape):
        return replace(pattern, local=_scaled(pattern.local, factor, 1))
    if isinstance(pattern, BlockSparse):
        return replace(pattern, top_k=_scaled(pattern.top_k, factor, 1))
    return pattern


def scale_budgets(config: ConfigSource, factor: float) -> Config:
    """Every head's budgets multiplied by ``factor`` (see :func:`scale_pattern`); upstream's ``minference_ratio``.

    Raises:
        TypeError: ``factor`` is not a number. ValueError: ``factor <= 0`` or not finite.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise TypeError(f"factor must be a number, got {type(factor).__name__}")
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"factor must be a positive finite number, got {factor}")
    config = load(config)
    layers = tuple(tuple(scale_pattern(p, factor) for p in layer) for layer in config.layers)
    return replace(config, layers=layers)


def nominal_density(pattern: AnyPattern, n: int) -> float:
    """Fraction of the ``n (n + 1) / 2`` causal pairs a pattern's budgets cover at length ``n``, before tile
    rounding and ignoring overlaps between columns and diagonals (an upper bound of the meaning, a lower bound of
    what tiled kernels compute).
    """
    _check_int("n", n, 1)
    causal = n * (n + 1) / 2

    def band(width: int) -> float:  # pairs on the `width` nearest diagonals, or in the first `width` columns
        width = min(width, n)
        return width * n - width * (width - 1) / 2

    if isinstance(pattern, Dense):
        covered = causal
    elif isinstance(pattern, VerticalSlash):
        covered = band(pattern.vertical) + band(pattern.slash)
    elif isinstance(pattern, AShape):
        covered = band(pattern.local) + band(pattern.sink) - band(min(pattern.sink, pattern.local))
    else:
        blocks = -(-n // pattern.block_size)
        k = min(pattern.top_k, blocks)
        kept = k * (k + 1) / 2 + (blocks - k) * k  # sum over query blocks m of min(m + 1, top_k)
        covered = kept * pattern.block_size ** 2 - blocks * pattern.block_size * (pattern.block_size - 1) / 2
    return min(1.0, covered / causal)


def config_density(config: ConfigSource, n: int) -> float:
    """Mean :func:`nominal_density` over every head of every layer at length ``n``."""
    config = load(config)
    values = [nominal_density(p, n) for layer in config.layers for p in layer]
    return sum(values) / len(values)


def scale_to_density(config: ConfigSource, n: int, target: float, *, tolerance: float = 1e-3) -> Config:
    """Scale every budget by one factor so that :func:`config_density` at length ``n`` is about ``target``.

    Dense heads cannot shrink, so a target below the dense heads' share is unreachable.

    Raises:
        ValueError: ``target`` outside ``(0, 1]`` or unreachable.
    """
    config = load(config)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise ValueError(f"target must be a density in (0, 1], got {target!r}")
    low, high = 1e-6, 1.0
    while config_density(scale_budgets(config, high), n) < target and high < 1e9:
        high *= 2
    if config_density(scale_budgets(config, low), n) > target + tolerance:
        raise ValueError(f"target density {target} at n={n} is below what this config can reach (dense heads)")
    for _ in range(60):
        middle = math.sqrt(low * high)
        if config_density(scale_budgets(config, middle), n) < target:
            low = middle
        else:
            high = middle
        if high / low < 1 + 1e-4:
            break
    return scale_budgets(config, high)
