"""Small constant tensors (head maps, per-head budgets) built once per device.

Copying a Python list to the GPU is a synchronous host-to-device copy; on the prefill hot path it would stall the
host once per layer. These tensors depend only on the model's configuration, so they are cached and never mutated.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import torch


@lru_cache(maxsize=4096)
def _cached(values: tuple, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def device_tensor(values: Iterable[int], device, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """A read-only tensor of ``values`` on ``device``, created on first use only."""
    return _cached(tuple(int(v) for v in values), str(torch.device(device)), dtype)
