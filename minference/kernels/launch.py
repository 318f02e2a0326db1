"""How a launch is shaped, decided on the host: warps and pipeline stages, whether a program fits in shared memory,
whether K/V load through TMA descriptors, and the vertical-slash grid rule that follows from what fits.

One rule for every program wider than 64 x 64 (GQA packs, 128 x 128 tiles): :func:`program_fits`. No CUDA query
runs at import time.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from .._checks import HALF_DTYPES
from ..index.vertical_slash import TILE
from ._utils import block_head_dim, interpreting


def launch_options(head_dim: int, dtype: torch.dtype, rows: int = 64) -> dict:
    """Warps and pipeline depth for programs of ``rows`` query rows over 64-key tiles. One configuration under the
    interpreter (autotune cannot run there).

    Measured on an H200 (docs/benchmarks.md): for 64-row programs, 4 warps with 3 stages beat 2 stages by 9 % and
    8 warps by 2x for bf16 at head_dim 128. Each 64 rows get one warpgroup (4 warps), so 128-row programs (GQA
    packs, query-block pairs) get 8. Rows wider than 256 bytes (bf16 head_dim 256, fp32 head_dim >= 128) get one
    stage, so the K and V tiles fit in shared memory.
    """
    return {} if interpreting() else compiled_launch_options(head_dim, dtype, rows)


def compiled_launch_options(head_dim: int, dtype: torch.dtype, rows: int = 64) -> dict:
    """:func:`launch_options` for a compiled launch, whatever the process runs (what routing tests stand in)."""
    row_bytes = head_dim * torch.empty((), dtype=dtype).element_size()
    return {"num_warps": 4 * rows // 64, "num_stages": 1 if row_bytes > 256 else 3}


def tile_shared_bytes(rows: int, keys: int, head_dim: int, dtype: torch.dtype, stages: int) -> int:
    """Shared memory a program holds: its query tile plus ``stages`` buffers of one K and one V tile, at the padded
    head dim. For a 128 x 128 bf16 program at head_dim 128 with three stages that is 224 KiB, what sm90 compiles."""
    row_bytes = block_head_dim(head_dim) * torch.empty((), dtype=dtype).element_size()
    return (rows + 2 * stages * keys) * row_bytes


def _cuda_index(device: torch.device) -> int:
    """The ordinal of a CUDA ``device``; a bare ``cuda`` means the current one."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _opt_in_shared_bytes(device_index: int) -> int:
    props = torch.cuda.get_device_properties(device_index)
    return getattr(props, "shared_memory_per_block_optin", props.shared_memory_per_block)


def shared_memory_fits(nbytes: int, device: torch.device) -> bool:
    """Whether one program may hold ``nbytes`` of shared memory on ``device``: its opt-in limit per block on CUDA
    (227 KiB on H100/H200, 163 KiB on A100, 99 KiB on consumer cards); always under the interpreter, which has no
    shared memory to run out of."""
    if device.type != "cuda":
        return True
    return nbytes <= _opt_in_shared_bytes(_cuda_index(device))


TMA_SETTING = "MINFERENCE_TMA"
"""Environment variable: ``0`` keeps K/V loads on pointers everywhere, ``1`` uses tensor descriptors wherever the
tensors allow (the Triton interpreter included: how the CPU tests cover that path); unset, the device decides."""


@functools.lru_cache(maxsize=None)
def _compute_capability(device_index: int) -> tuple:
    return torch.cuda.get_device_capability(device_index)


def tma_wanted(device: torch.device) -> bool:
    """Whether launches on ``device`` load K/V tiles through TMA tensor descriptors: by default on Hopper (compute
    capability 9.x, where the A/B in docs/benchmarks.md was measured), unless :data:`TMA_SETTING` says otherwise.
    Later architectures have TMA too but keep pointer loads until measured there (``MINFERENCE_TMA=1`` tries it)."""
    setting = os.environ.get(TMA_SETTING, "").strip().lower()
    if setting in ("0", "1"):
        return setting == "1"
    if setting:
        raise ValueError(f"{TMA_SETTING} must be 0 or 1 (or unset for the device's default), got {setting!r}")
    if device.type != "cuda" or interpreting():
        return False
    return _compute_capability(_cuda_index(device))[0] == 9


def _descriptor_layout(t: torch.Tensor, keys: int, block_d: int):
    """``(shape, strides, block)`` of a 4-d descriptor over ``t (B, H, N, D)`` with its dims in memory order: heads
    outside positions ``(B, H, N, D)`` or inside them ``(B, N, H, D)``, the tile ``keys x block_d`` of one head.
    None when TMA cannot address it: the head dim must be contiguous, the base and every other stride 16-byte
    aligned, a tile row at least 16 bytes and no box side over 256."""
    size = t.element_size()
    if t.dim() != 4 or t.stride(3) != 1 or t.data_ptr() % 16 or block_d * size < 16 or max(keys, block_d) > 256:
        return None
    batch, heads, n, head_dim = t.shape
    stride_b, stride_h, stride_n = t.stride()[:3]
    if heads == 1 or stride_h >= stride_n:
        shape, strides, block = [batch, heads, n, head_dim], [stride_b, stride_h, stride_n, 1], [1, 1, keys, block_d]
    else:
        shape, strides, block = [batch, n, heads, head_dim], [stride_b, stride_n, stride_h, 1], [1, keys, 1, block_d]
    # a dim of extent 1 is only ever at coordinate 0, so its stride is free: give it one TMA accepts
    span = max(head_dim, *(st * ex for st, ex in zip(strides[1:3], shape[1:3])))
    strides = [-(-span // 16) * 16 if extent == 1 else st for st, extent in zip(strides[:3], shape[:3])] + [1]
    if any(st * size % 16 for st in strides[:3]):
        return None
    return shape, strides, block


def kv_descriptors(k: torch.Tensor, v: torch.Tensor, keys: int, block_d: int):
    """TMA descriptors for ``keys``-row tiles of K and V (``(B, Hkv, N, D)``, any strides), or None where either
    cannot be read that way or the two order their dims differently (the kernels address both alike)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    layouts = [_descriptor_layout(t, keys, block_d) for t in (k, v)]
    if None in layouts or layouts[0][2] != layouts[1][2]:
        return None
    return tuple(TensorDescriptor(t, *layout) for t, layout in zip((k, v), layouts))


def program_fits(rows: int, keys: int, q: torch.Tensor, stages: Optional[int] = None) -> bool:
    """Whether a program of ``rows`` query rows over ``keys``-key tiles, with ``stages`` K/V stages (default: those
    the launcher gives it), fits in the shared memory of ``q``'s device (the interpreter has no limit). It counts
    what sm90 allocates; older architectures allocate less for the same program (a 64-row bf16 program at head_dim
    128: 88 KiB on sm86 against 112 KiB on sm90, compiled with Triton 3.9), so there it errs towards the narrower
    program, never towards a launch that cannot start."""
    head_dim = q.shape[-1]
    if stages is None:
        stages = launch_options(head_dim, q.dtype, rows).get("num_stages", 1)  # none under the interpreter
    return shared_memory_fits(tile_shared_bytes(rows, keys, head_dim, q.dtype, stages), q.device)


def wide_tiles_fit(q: torch.Tensor) -> bool:
    """Whether 128 x 128 programs are the fast choice for ``q``: in half precision at head_dim <= 128, where the
    query tile and the launcher's three K/V stages fit in shared memory (224 KiB at head_dim 128). Measured on an
    H200 (bf16, head_dim 128, docs/benchmarks.md): 128-token blocks as whole 128 x 128 tiles run 1.25-1.32x faster
    than two 64-row programs per block, and 1.05-1.10x faster than 64-token blocks of the same coverage."""
    if q.dtype not in HALF_DTYPES or q.shape[-1] > 128:
        return False
    return program_fits(2 * TILE, 2 * TILE, q)


def wide_tile_stages(q: torch.Tensor) -> Optional[int]:
    """The most K/V stages, up to the launcher's, with which a 128 x 128 program fits (None if not even one)."""
    launcher = launch_options(q.shape[-1], q.dtype, 2 * TILE).get("num_stages", 1)  # none under the interpreter
    return next((depth for depth in range(launcher, 0, -1) if program_fits(2 * TILE, 2 * TILE, q, depth)), None)


def wide_grid_possible(q: torch.Tensor) -> bool:
    """Whether the default may put ``q``'s vertical-slash heads on the 128-token grid: CUDA tensors whose 128 x 128
    programs keep the launcher's pipeline (:func:`wide_tiles_fit`). The grid changes the mask, so unlike the
    block-sparse program height it is not chosen for the interpreter."""
    return q.is_cuda and wide_tiles_fit(q)


WIDE_GRID_MAX_TOKENS = 262144
"""The longest prompt :func:`default_vertical_slash_tile` puts on the 128-token grid."""


def default_vertical_slash_tile(q: torch.Tensor) -> int:
    """The grid vertical-slash ops keep diagonals on for inputs like ``q`` when not told: 128 tokens up to
    :data:`WIDE_GRID_MAX_TOKENS` where whole 128 x 128 programs run with their full pipeline (CUDA, half precision,
    head_dim <= 128, 224 KiB of shared memory: H100/H200, not A100 or consumer cards), else 64. It depends on the
    inputs, not on the backend, so both backends compute the same function for the same inputs.

    Measured on an H200 (bf16, 32/8 heads, head_dim 128, budgets (1000, 6096), docs/benchmarks.md): at 32K-256K
    the 128-token grid computes 0.7-6 % more entries and runs 1.03-1.12x faster on both index sets. Beyond, the
    measured set's diagonals spread out, and a lone diagonal costs twice the area on the wider grid: at 512K its
    cover is 24 % larger and 0.93x as fast, at 1M 48 % and 0.78x (the local-heavy set still gains 1.13x there).
    """
    return 2 * TILE if wide_grid_possible(q) and q.shape[2] <= WIDE_GRID_MAX_TOKENS else TILE
