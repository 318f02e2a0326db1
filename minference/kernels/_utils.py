"""Small helpers shared by the Triton kernels and launchers: interpreter detection, tile width, dot precision."""
from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``, read at import time by Triton)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def block_head_dim(head_dim: int) -> int:
    """Triton tiles need a power-of-two width; the launcher masks the padding lanes."""
    return 1 << (head_dim - 1).bit_length()


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs get exact products (tf32 would lose ~3 digits); half types use the tensor cores as they are."""
    return "ieee" if dtype == torch.float32 else "tf32"
