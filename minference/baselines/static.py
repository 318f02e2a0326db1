"""``minference_static``: the "MInference w/ static" ablation. Vertical-slash indices are estimated once, on the
first prompt a layer sees, and reused for every later prompt: the same columns and diagonals whatever the input.

The indices live on the attention module (``module.minference_static_index``), one set per layer, estimated per
query head from batch row 0 (upstream estimated once for all heads; per head is the closer twin of the dynamic
method, so the comparison isolates "estimated per input" from "estimated per head"). A later prompt of another
length reuses them: columns and offsets beyond its length become column / offset 0, which every vertical-slash
head keeps anyway (sink columns and the main diagonal), so nothing is added. Heads whose pattern is not
vertical-slash run as :func:`minference.sparse_attention` runs them. Re-patching with other budgets re-estimates;
:func:`reset` forgets the indices of a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .._device_cache import device_tensor
from ..patterns import AShape, VerticalSlash
from ..patterns import vertical_slash as vertical_slash_pattern

STATIC_ATTR = "minference_static_index"


@dataclass(frozen=True)
class StaticIndex:
    """Indices a layer estimated on its first prompt: ``vertical (1, Hs, NV)``, ``slash (1, Hs, NS)`` int32 for the
    query heads ``heads`` (those with a vertical-slash pattern in ``patterns``)."""

    patterns: tuple
    heads: tuple
    vertical: torch.Tensor
    slash: torch.Tensor
    tokens: int


def _clip(index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.where(index < n, index, torch.zeros_like(index))


@dataclass(frozen=True)
class StaticMInference:
    """The attention type: vertical-slash heads with indices frozen after the first prompt (see the module doc)."""

    name: ClassVar[str] = "minference_static"

    def __call__(self, q, k, v, *, settings, seqlens, scaling, module=None) -> torch.Tensor:
        """``q (B, Hq, N, D)``, ``k, v (B, Hkv, N, D)`` -> ``(B, Hq, N, D)``.

        Raises:
            ValueError: ``module`` is None (the indices are stored on it).
        """
        if module is None:
            raise ValueError("module must be the attention module: minference_static stores its indices on it")
        patterns = tuple(settings.patterns)
        heads = tuple(h for h, p in enumerate(patterns) if isinstance(p, VerticalSlash))
        if not heads:
            return ops.sparse_attention(
                q, k, v, list(patterns), seqlens=seqlens, sm_scale=scaling, backend=settings.backend, validate=False
            )
        stored = getattr(module, STATIC_ATTR, None)
        if stored is None or stored.patterns != patterns:
            stored = self.estimate(q, k, patterns, heads, seqlens, scaling)
            setattr(module, STATIC_ATTR, stored)
        return self.attend(q, k, v, stored, settings, seqlens, scaling)

    @staticmethod
    def estimate(q, k, patterns, heads, seqlens, scaling) -> StaticIndex:
        """Estimate the vertical-slash heads' indices on this prompt (batch row 0) as :class:`StaticIndex`."""
        lengths = None if seqlens is None else seqlens[:1]
        vertical, slash = vertical_slash_pattern.estimate(
            q[:1], k[:1], [patterns[h] for h in heads], list(heads), seqlens=lengths, sm_scale=scaling
        )
        return StaticIndex(patterns, heads, vertical, slash, q.shape[2])

    @staticmethod
    def attend(q, k, v, stored: StaticIndex, settings, seqlens, scaling) -> torch.Tensor:
        """Attention with the stored indices on the vertical-slash heads; other heads by their own patterns."""
        batch, hq, n, _ = q.shape
        patterns = stored.patterns
        vertical = _clip(stored.vertical.to(q.device), n)
        slash = _clip(stored.slash.to(q.device), n)
        if len(stored.heads) == hq:
            return ops.vertical_slash_attention(
                q, k, v, vertical.expand(batch, -1, -1), slash.expand(batch, -1, -1), seqlens=seqlens,
                sm_scale=scaling, backend=settings.backend, validate=False,
            )
        # Mixed layer: one launch per kind over all heads, each head doing only a diagonal tile's work in the
        # launch that is not its own, then the vertical-slash heads' rows are taken from the second launch.
        cheap = AShape(sink=0, local=1)
        others = [cheap if h in stored.heads else p for h, p in enumerate(patterns)]
        out = ops.sparse_attention(
            q, k, v, others, seqlens=seqlens, sm_scale=scaling, backend=settings.backend, validate=False
        )
        full_vertical = torch.zeros(1, hq, vertical.shape[-1], dtype=vertical.dtype, device=q.device)
        full_slash = torch.zeros(1, hq, slash.shape[-1], dtype=slash.dtype, device=q.device)
        head_index = device_tensor(stored.heads, q.device, torch.long)
        full_vertical[:, head_index] = vertical
        full_slash[:, head_index] = slash
        static_out = ops.vertical_slash_attention(
            q, k, v, full_vertical.expand(batch, -1, -1), full_slash.expand(batch, -1, -1), seqlens=seqlens,
            sm_scale=scaling, backend=settings.backend, validate=False,
        )
        out[:, head_index] = static_out[:, head_index]
        return out


def reset(model) -> int:
    """Forget the static indices stored on ``model``'s modules; returns how many layers had some."""
    count = 0
    for module in model.modules():
        if STATIC_ATTR in module.__dict__:
            delattr(module, STATIC_ATTR)
            count += 1
    return count
