"""Argument checks shared by the public ops: each failure names the argument and what was expected."""
from __future__ import annotations

from typing import Optional

import torch

KERNEL_HEAD_DIMS = (64, 80, 96, 128, 256)
HALF_DTYPES = (torch.float16, torch.bfloat16)
FLOAT_DTYPES = (*HALF_DTYPES, torch.float32)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q ``(B, Hq, N, D)``, k/v ``(B, Hkv, N, D)``: same dtype and device, ``Hq % Hkv == 0``, nothing empty."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES + (torch.float64,):
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k, v must be on one device, got q {q.device}, k {k.device}, v {v.device}")
    batch, hq, n, head_dim = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if k.shape[0] != batch or k.shape[2] != n or k.shape[3] != head_dim:
        raise ValueError(
            f"k/v must be (batch={batch}, Hkv, seq={n}, head_dim={head_dim}) to match q, got {tuple(k.shape)}"
        )
    if hq % k.shape[1] != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({k.shape[1]})")


def check_kernel_inputs(q: torch.Tensor) -> None:
    """What the Triton kernels add to :func:`check_qkv`: a supported head_dim and dtype for the device."""
    from .kernels._utils import interpreting

    if q.shape[-1] not in KERNEL_HEAD_DIMS:
        raise ValueError(f"q head_dim must be one of {KERNEL_HEAD_DIMS} for the Triton kernels, got {q.shape[-1]}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"q dtype must be one of {FLOAT_DTYPES} for the Triton kernels, got {q.dtype}")
    if q.device.type == "cuda":
        return
    if not interpreting():
        raise ValueError(
            f"backend='triton' needs CUDA tensors (q is on {q.device}); set TRITON_INTERPRET=1 before importing "
            "minference to run the kernels on the CPU, or use backend='torch'"
        )
    if q.dtype == torch.bfloat16:
        raise TypeError("q dtype bfloat16 is computed wrongly by the Triton interpreter; use float32/float16 on CPU")


def check_seqlens(seqlens: Optional[torch.Tensor], batch: int, n: int, device, validate: bool) -> Optional[torch.Tensor]:
    """``(B,)`` integer lengths of right-padded sequences, each in ``[1, N]``; returned as int32 on ``device``."""
    if seqlens is None:
        return None
    if not isinstance(seqlens, torch.Tensor):
        seqlens = torch.as_tensor(seqlens)
    if seqlens.dtype.is_floating_point or seqlens.dtype == torch.bool:
        raise TypeError(f"seqlens must hold integers, got {seqlens.dtype}")
    if seqlens.shape != (batch,):
        raise ValueError(f"seqlens must have shape ({batch},), got {tuple(seqlens.shape)}")
    if validate and bool(((seqlens < 1) | (seqlens > n)).any()):
        raise ValueError(f"seqlens must lie in [1, {n}], got {seqlens.tolist()}")
    return seqlens.to(device=device, dtype=torch.int32)


def check_index(name: str, index: torch.Tensor, shape_prefix: tuple, low: int, high: int, device, validate: bool) -> None:
    """An index tensor of integers whose leading dims are ``shape_prefix`` and whose values lie in ``[low, high)``."""
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got {index.dtype}")
    if tuple(index.shape[: len(shape_prefix)]) != tuple(shape_prefix) or index.dim() != len(shape_prefix) + 1:
        raise ValueError(f"{name} must have shape {tuple(shape_prefix) + ('K',)}, got {tuple(index.shape)}")
    if index.device != device:
        raise ValueError(f"{name} must be on {device}, got {index.device}")
    if validate and index.numel() and bool(((index < low) | (index >= high)).any()):
        bad = index[(index < low) | (index >= high)]
        raise ValueError(f"{name} values must lie in [{low}, {high}), got e.g. {bad[:4].tolist()}")
