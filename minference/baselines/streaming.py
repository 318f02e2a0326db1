"""StreamingLLM prefill baselines: sinks plus a recent window, and two spaced-window variants.

- ``streaming``: every head A-shape, 128 sink keys + the 3968 nearest keys (the published experiments' setting),
  through our A-shape kernel.
- ``streaming_dilated`` / ``streaming_strided``: the "StreamingLLM w/ dilated / w/ strided" rows of the published
  perplexity figure, whose window skips every other position so the same budget spans twice the distance. Upstream
  keeps 1024 sink columns and (dilated) every other diagonal of the last 8192 offsets, or (strided) 2048 dense
  nearest offsets then every other diagonal up to offset 6144; these are the defaults here.

The spaced windows run on the vertical-slash kernel with explicit indices: sinks are vertical columns (exact, one
column each) and the window is a set of slashes. That kernel's unit of work is a 64x64 tile, and a slash at offset
``o`` makes it compute the whole tile-diagonals it crosses, so skipping every other *token* offset would still touch
every tile of the span and cost as much as a dense window twice as long. The spacing is therefore applied to
tile-diagonals: slashes are placed at multiples of 64, each selecting exactly one tile-diagonal ``p`` (query
``i`` keeps key ``j`` when ``i // 64 - j // 64 == p``), and the window keeps every ``step``-th tile-diagonal. The
budget (keys per row) is the upstream one; only the grain of the spacing is a tile instead of a token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from .. import ops
from .._checks import check_positive_int
from .._device_cache import device_tensor
from ..patterns.base import clip_to_lengths
from ..patterns.vertical_slash import TILE


@dataclass(frozen=True)
class StreamingLLM:
    """Every query head keeps the first ``sink`` keys and its ``local`` nearest keys (A-shape).

    Called as an attention type (see :data:`minference.integrations.hf.PrefillFunction`); the layer's per-head config
    is ignored.

    Raises:
        TypeError: a budget is not an int. ValueError: ``sink < 0`` or ``local < 1``.
    """

    sink: int = 128
    local: int = 3968
    name: ClassVar[str] = "streaming"

    def __post_init__(self):
        check_positive_int("sink", self.sink, minimum=0)
        check_positive_int("local", self.local)

    def __call__(self, q, k, v, *, settings, seqlens, scaling, module=None) -> torch.Tensor:
        """``q (B, Hq, N, D)``, ``k, v (B, Hkv, N, D)`` -> ``(B, Hq, N, D)``."""
        return ops.a_shape_attention(
            q, k, v, self.sink, self.local, seqlens=seqlens, sm_scale=scaling, backend=settings.backend,
            validate=False,
        )


@dataclass(frozen=True)
class SpacedStreaming:
    """Sinks plus a window of tile-diagonals: all of the nearest ``local`` offsets, then every ``step``-th
    tile-diagonal up to offset ``span``.

    Query ``i`` keeps key ``j <= i`` iff ``j < sink`` or ``p = i // 64 - j // 64`` satisfies ``p < local / 64`` or
    (``p < span / 64`` and ``(p - local / 64) % step == 0``). Tile-diagonal 0 (each row's own tile) is always kept.

    Attributes:
        sink: leading key columns every query keeps (``>= 1``).
        local: offsets kept densely, a multiple of 64 (0 allowed: the whole window is spaced).
        span: offsets the window reaches, a multiple of 64, ``>= local``.
        step: keep every ``step``-th tile-diagonal beyond ``local`` (2 = dilation 1 in upstream's wording).

    Raises:
        TypeError: an argument is not an int. ValueError: ``sink < 1``, ``step < 1``, ``local``/``span`` not a
            multiple of 64, or ``span < local``.
    """

    sink: int = 1024
    local: int = 0
    span: int = 8192
    step: int = 2

    def __post_init__(self):
        check_positive_int("sink", self.sink)
        check_positive_int("local", self.local, minimum=0)
        check_positive_int("span", self.span, minimum=TILE)
        check_positive_int("step", self.step)
        for name in ("local", "span"):
            if getattr(self, name) % TILE:
                raise ValueError(f"{name} must be a multiple of the kernel tile ({TILE}), got {getattr(self, name)}")
        if self.span < self.local:
            raise ValueError(f"span must be >= local ({self.local}), got {self.span}")

    def tile_diagonals(self) -> list:
        """The kept tile-diagonals ``p`` (ascending)."""
        dense = list(range(self.local // TILE))
        spaced = list(range(self.local // TILE, self.span // TILE, self.step))
        return sorted(set([0] + dense + spaced))

    def indices(self, n: int, device) -> tuple:
        """``(vertical_idx (1, 1, NV), slash_idx (1, 1, NS))`` int32 for an ``n``-token prompt (clipped to ``n``)."""
        columns = list(range(min(self.sink, n)))
        offsets = [p * TILE for p in self.tile_diagonals() if p * TILE < n]
        return device_tensor(columns, device).view(1, 1, -1), device_tensor(offsets, device).view(1, 1, -1)

    def mask(self, n: int, *, seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The exact ``(1, 1, n, n)`` boolean mask (``(B, 1, n, n)`` with ``seqlens``), from the definition above;
        tests only."""
        i = torch.arange(n).view(n, 1)
        j = torch.arange(n).view(1, n)
        diagonal = i // TILE - j // TILE
        kept = torch.isin(diagonal, torch.tensor(self.tile_diagonals()))
        keep = ((j <= i) & ((j < self.sink) | kept)).view(1, 1, n, n)
        if seqlens is not None:
            keep = keep.expand(len(seqlens), 1, n, n)
        return clip_to_lengths(keep, seqlens)

    def __call__(self, q, k, v, *, settings, seqlens, scaling, module=None) -> torch.Tensor:
        """``q (B, Hq, N, D)``, ``k, v (B, Hkv, N, D)`` -> ``(B, Hq, N, D)``; every head the same indices."""
        batch, heads, n, _ = q.shape
        vertical, slash = self.indices(n, q.device)
        return ops.vertical_slash_attention(  # on the grid its tile-diagonals are defined on
            q, k, v, vertical.expand(batch, heads, -1), slash.expand(batch, heads, -1), seqlens=seqlens,
            sm_scale=scaling, backend=settings.backend, validate=False, tile=TILE,
        )


DILATED = SpacedStreaming(sink=1024, local=0, span=8192, step=2)
"""``streaming_dilated``: 1024 sinks + every other tile-diagonal of the last 8192 offsets (upstream ``dilated1``)."""

STRIDED = SpacedStreaming(sink=1024, local=2048, span=6144, step=2)
"""``streaming_strided``: 1024 sinks + the 2048 nearest offsets + every other tile-diagonal up to offset 6144
(upstream ``dilated2``)."""
