"""A-shape (StreamingLLM): the first ``sink`` keys plus a window of the ``local`` nearest keys, including itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Union

import torch

from .._checks import check_positive_int
from .base import Pattern, clip_to_lengths


@dataclass(frozen=True)
class AShape(Pattern):
    """Keep key ``j`` for query ``i`` iff ``j <= i`` and (``j < sink`` or ``i - j < local``). No estimation needed.

    Raises:
        TypeError: a budget is not an int. ValueError: ``sink < 0`` or ``local < 1``.
    """

    sink: int = 128
    local: int = 3968
    name: ClassVar[str] = "a_shape"

    def __post_init__(self):
        check_positive_int("sink", self.sink, minimum=0)
        check_positive_int("local", self.local, minimum=1)


def keeps(i, j, sink, local):
    """The A-shape predicate on broadcastable integer tensors of query positions ``i`` and key positions ``j``:
    causal, and the key is a sink (``j < sink``) or inside the window (``i - j < local``). The one definition the
    dense mask, the torch backend's rows and the Flex block mask evaluate; the Triton kernel applies it per tile."""
    return (j <= i) & ((j < sink) | (i - j < local))


def mask(
    n: int,
    sink: Union[int, Sequence[int], torch.Tensor],
    local: Union[int, Sequence[int], torch.Tensor],
    *,
    batch: int = 1,
    seqlens: Optional[torch.Tensor] = None,
    device=None,
) -> torch.Tensor:
    """The exact ``(batch, H, n, n)`` boolean mask of A-shape heads, ``H`` = number of per-head budgets (1 for ints).

    The slow twin of the kernel, written from the definition above.
    """
    sink_t = torch.as_tensor(sink, device=device).reshape(-1).long()
    local_t = torch.as_tensor(local, device=device).reshape(-1).long()
    heads = max(sink_t.numel(), local_t.numel())
    sink_t, local_t = sink_t.expand(heads), local_t.expand(heads)
    i = torch.arange(n, device=sink_t.device).view(n, 1)
    j = torch.arange(n, device=sink_t.device).view(1, n)
    keep = torch.stack([keeps(i, j, s, w) for s, w in zip(sink_t.tolist(), local_t.tolist())])
    keep = keep.unsqueeze(0).expand(batch, heads, n, n)
    return clip_to_lengths(keep, seqlens)

