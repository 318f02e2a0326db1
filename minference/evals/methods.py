"""Attention methods compared by the evals, parsed from the command line.

``dense``; ``minference`` (the model's config, default every head vertical-slash 1000/6096);
``minference@0.1`` (vertical-slash budgets scaled so the measured density is about 10 %, "matched sparsity");
``minference:path/to/config.json`` (a saved per-head config); any other registered attention type by name
(:mod:`minference.baselines`: ``streaming``, ``streaming_dilated``, ``streaming_strided``, ``inf_llm``,
``minference_static``). ``@density`` and ``:config`` apply to the types that read per-head budgets
(:data:`CONFIG_TYPES`); the other baselines carry their published settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

VERTICAL_SHARE = 1000 / (1000 + 6096)
"""Matched-density budgets keep the default config's vertical:slash ratio."""

CONFIG_TYPES = ("minference", "minference_static")
"""Attention types that run the per-head config, so a matched density or a config file changes them."""


@dataclass(frozen=True)
class Method:
    """One row of a results table.

    Attributes:
        label: the row name (``dense``, ``minference``, ``minference@0.1``).
        attn_type: the attention type handed to :func:`minference.evals.models.apply_attention`.
        density: target density for matched-sparsity budgets, or None for the config's own budgets.
        config: path of a per-head config JSON, or None for the default.
    """

    label: str
    attn_type: str
    density: float | None = None
    config: str | None = None

    @property
    def is_dense(self) -> bool:
        return self.attn_type == "dense"

    @property
    def uses_budgets(self) -> bool:
        """Whether the method runs the per-head vertical-slash budgets (so the density probe describes it)."""
        return self.attn_type in CONFIG_TYPES


def method_settings(method: Method) -> dict:
    """What a method's records depend on beyond its label: the config file's content hash for ``type:config``.

    A label such as ``minference:smollm2-135m-instruct`` names a file whose content can change (a re-search), so
    results files keep the hash and refuse records made with another version. A config that cannot be found is
    left to :func:`minference.evals.models.apply_attention` to report.
    """
    settings = {"attn_type": method.attn_type, "density": method.density}
    if method.config is not None:
        path = _config_path(method.config)
        settings["config"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else method.config
    return settings


def _config_path(config: str) -> Path | None:
    """The file ``minference.config.load(config)`` reads: a path, else a registry name, else None."""
    from ..config import REGISTRY_DIR

    for path in (Path(config), REGISTRY_DIR / f"{config}.json"):
        if path.is_file():
            return path
    return None


def _check_attn_type(text: str, attn_type: str) -> None:
    from .. import baselines  # noqa: F401  (registers the baseline attention types)
    from ..integrations.hf import ATTENTION_TYPES

    if attn_type not in ATTENTION_TYPES:
        raise ValueError(f"method {text!r}: attention type must be one of {sorted(ATTENTION_TYPES)}, got {attn_type!r}")


def parse_method(text: str) -> Method:
    """Parse ``dense``, ``minference``, ``minference@0.1``, ``minference:cfg.json`` or another attention type's name.

    Raises:
        ValueError: empty text, an unknown attention type, a density outside (0, 1], or a density or config on a
            type outside :data:`CONFIG_TYPES`.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"method must be a non-empty string, got {text!r}")
    text = text.strip()
    if "@" in text:
        attn_type, _, value = text.partition("@")
        try:
            density = float(value)
        except ValueError:
            raise ValueError(f"method {text!r}: density after '@' must be a number") from None
        if not 0.0 < density <= 1.0:
            raise ValueError(f"method {text!r}: density must lie in (0, 1], got {density}")
        if attn_type == "dense":
            raise ValueError("method 'dense' takes no density")
        _check_attn_type(text, attn_type)
        if attn_type not in CONFIG_TYPES:
            raise ValueError(f"method {text!r}: a density applies to {CONFIG_TYPES} only")
        return Method(text, attn_type, density=density)
    if ":" in text:
        attn_type, _, config = text.partition(":")
        _check_attn_type(text, attn_type)
        if attn_type not in CONFIG_TYPES:
            raise ValueError(f"method {text!r}: a config file applies to {CONFIG_TYPES} only")
        return Method(text, attn_type, config=config)
    _check_attn_type(text, text)
    return Method(text, text)


def parse_methods(text: str) -> list[Method]:
    """Comma-separated methods; ``dense`` always runs first (it is the baseline of every drop).

    Raises:
        ValueError: a method is malformed or listed twice.
    """
    methods = [parse_method(part) for part in text.split(",") if part.strip()]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods must be distinct, got {labels}")
    return sorted(methods, key=lambda m: not m.is_dense)


def matched_budgets(density: float, n: int) -> tuple:
    """First-guess (vertical, slash) budgets for a target density at ``n`` tokens (the calibration refines them).

    A kept column or diagonal covers about ``n`` of the ``n²/2`` causal entries, so ``density · n / 2`` lines in all,
    split like the default 1000:6096.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    lines = max(2, round(density * n / 2))
    vertical = max(1, round(lines * VERTICAL_SHARE))
    return vertical, max(1, lines - vertical)
