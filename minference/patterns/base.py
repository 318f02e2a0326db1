"""What every head pattern shares: a frozen set of budgets with a name, and conversion to/from config entries."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Optional

import torch


@dataclass(frozen=True)
class Pattern:
    name: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return {"pattern": self.name, **asdict(self)}


def clip_to_lengths(keep: torch.Tensor, seqlens: Optional[torch.Tensor]) -> torch.Tensor:
    """Drop rows and columns at or past each sequence's length from a ``(B, H, N, N)`` mask."""
    if seqlens is None:
        return keep
    n = keep.shape[-1]
    pos = torch.arange(n, device=keep.device)
    lengths = torch.as_tensor(seqlens, device=keep.device).view(-1, 1, 1, 1)
    return keep & (pos.view(1, 1, -1, 1) < lengths) & (pos.view(1, 1, 1, -1) < lengths)
