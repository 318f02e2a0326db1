"""Declared benchmark sweeps: what is measured, as frozen data.

A :class:`Sweep` is the cross product of its shapes, pattern budgets and index sets, plus the dense baselines
at every shape. Shapes default to Llama-3-8B attention (32 query heads, 8 KV heads, head_dim 128).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from ..patterns import AShape, BlockSparse, VerticalSlash
from ..kernels.gqa_pack import PACKS

K = 1024

INDEX_SETS = ("local_heavy", "measured", "measured_qwen", "random")
"""Index sets for estimated patterns (A-shape needs none and is labelled ``static``)."""

DENSE_METHODS = ("sdpa_flash", "sdpa_cudnn")
"""Dense baselines: SDPA with the FlashAttention-2 backend, SDPA with the cuDNN backend."""


@dataclass(frozen=True)
class Shape:
    """One attention call: ``q (batch, heads, n, head_dim)``, ``k, v (batch, kv_heads, n, head_dim)``.

    Raises:
        TypeError: a field is not an int. ValueError: a field is below 1 or ``heads % kv_heads != 0``.
    """

    n: int
    batch: int = 1
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128

    def __post_init__(self):
        for name in ("n", "batch", "heads", "kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")

    @property
    def label(self) -> str:
        """``"128K x1"``-style id, stable across runs (used in pytest ids)."""
        size = f"{self.n // K}K" if self.n % K == 0 else str(self.n)
        return f"{size}x{self.batch}"

    def io_bytes(self, element_size: int = 2) -> int:
        """Bytes of q, k, v and the output."""
        return element_size * self.batch * self.n * self.head_dim * (2 * self.heads + 2 * self.kv_heads)

    def causal_flops(self) -> float:
        """FLOPs of dense causal attention forward: ``4 * B * Hq * D * N^2 / 2`` (two matmuls, half the
        square)."""
        return 2.0 * self.batch * self.heads * self.head_dim * self.n * self.n


@dataclass(frozen=True)
class Sweep:
    """A declared experiment.

    Attributes:
        name: id used in file names and ``--sweep``.
        shapes: the shapes, in order.
        patterns: sparse patterns with their budgets.
        index_sets: index sets for estimated patterns.
        flex: also time FlexAttention on each pattern's block mask.
        dense_max_n: above this N the dense baselines are not run but extrapolated ``∝ N^2`` from the largest
            measured N of the same batch (rows say ``extrapolated``); ``None`` runs them everywhere.
        flex_max_n: above this N FlexAttention is skipped (its block mask is built densely, ``O((N/128)^2)``).
        random_max_n: above this N the ``random`` set is skipped (it is nearly dense, so as slow as dense).
        a_shape_packs: GQA pack sizes to time the A-shape kernel with: ``None`` (default) the library's choice for
            the head dim (rows labelled ``static``), 1 or 2 that size (``static, gqa_pack=P``; 1 = unpacked).
    """

    name: str
    shapes: tuple[Shape, ...]
    patterns: tuple = (VerticalSlash(1000, 6096), BlockSparse(top_k=100), BlockSparse(top_k=50, block_size=128),
                       AShape(sink=128, local=4096))
    index_sets: tuple[str, ...] = INDEX_SETS
    flex: bool = True
    dense_max_n: Optional[int] = None
    flex_max_n: Optional[int] = None
    random_max_n: Optional[int] = None
    a_shape_packs: tuple[Optional[int], ...] = (None,)
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.shapes:
            raise ValueError("shapes must list at least one Shape")
        if not self.a_shape_packs or any(p is not None and p not in PACKS for p in self.a_shape_packs):
            raise ValueError(f"a_shape_packs must list sizes among {PACKS}, got {self.a_shape_packs}")
        unknown = [s for s in self.index_sets if s not in INDEX_SETS]
        if unknown:
            raise ValueError(f"index_sets must be among {INDEX_SETS}, got {unknown}")

    def with_shapes(self, shapes) -> "Sweep":
        """The same sweep over other shapes (CLI overrides)."""
        return replace(self, shapes=tuple(shapes))


def _grid(ns, batches, **shape) -> tuple[Shape, ...]:
    return tuple(Shape(n=n, batch=b, **shape) for b in batches for n in ns)


SWEEPS: dict[str, Sweep] = {
    sweep.name: sweep
    for sweep in (
        Sweep(
            "full",
            _grid((8 * K, 32 * K, 128 * K, 256 * K, 512 * K, 1024 * K), (1,))
            + _grid((8 * K, 32 * K, 128 * K), (4,)),
            dense_max_n=512 * K,
            flex_max_n=128 * K,
            random_max_n=256 * K,
            description="The targets' grid: 8K-1M at batch 1, 8K-128K at batch 4 (larger batch-4 runs exceed 80 GB).",
        ),
        Sweep(
            "quick",
            _grid((8 * K, 32 * K, 128 * K), (1,)) + _grid((32 * K,), (4,)),
            description="A few minutes on an H100: the pytest-benchmark default.",
        ),
        Sweep(
            "smoke",
            _grid((128, 256), (1,), heads=4, kv_heads=2, head_dim=32),
            patterns=(
                VerticalSlash(vertical=8, slash=40, sink=4, local=16),
                BlockSparse(top_k=2),
                BlockSparse(top_k=1, block_size=128),
                AShape(sink=16, local=64),
            ),
            flex=False,
            description="Tiny CPU run for CI: checks the plumbing, not speed.",
        ),
    )
}
