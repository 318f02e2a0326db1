"""A-shape needs no index: the kernel derives each query block's sink and window tiles from ``(sink, local)``.

Inside those tiles it applies the exact predicate, so the mask is the pattern itself.
"""
from __future__ import annotations

import torch

from ..patterns.a_shape import keeps


def a_shape_index_mask_rows(
    sink: torch.Tensor, local: torch.Tensor, n: int, row_start: int, row_end: int
) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of the ``(1, H, rows, N)`` mask for per-head ``sink (H,)`` and ``local (H,)``."""
    device = sink.device
    rows = torch.arange(row_start, row_end, device=device).view(1, 1, -1, 1)
    cols = torch.arange(n, device=device).view(1, 1, 1, -1)
    sink = sink.long().view(1, -1, 1, 1)
    local = local.long().view(1, -1, 1, 1)
    return keeps(rows, cols, sink, local)
