"""Dense causal attention: the pattern that keeps everything."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Pattern


@dataclass(frozen=True)
class Dense(Pattern):
    """Every key ``j <= i``. Heads with this pattern run dense attention."""

    name: ClassVar[str] = "dense"
