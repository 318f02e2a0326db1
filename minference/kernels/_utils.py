"""Small helpers shared by the Triton launchers."""
from __future__ import annotations

import functools
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


def launch_options(head_dim: int, dtype: torch.dtype, rows: int = 64) -> dict:
    """Warps and pipeline depth for programs of ``rows`` query rows over 64-key tiles. One configuration under the
    interpreter (autotune cannot run there).

    Measured on an H200 (docs/benchmarks.md): for 64-row programs, 4 warps with 3 stages beat 2 stages by 9 % and
    8 warps by 2x for bf16 at head_dim 128. Each 64 rows get one warpgroup (4 warps), so 128-row programs (GQA
    packs, query-block pairs) get 8. Rows wider than 256 bytes (bf16 head_dim 256, fp32 head_dim >= 128) get one
    stage, so the K and V tiles fit in shared memory.
    """
    if interpreting():
        return {}
    row_bytes = head_dim * torch.empty((), dtype=dtype).element_size()
    return {"num_warps": 4 * rows // 64, "num_stages": 1 if row_bytes > 256 else 3}


def tile_shared_bytes(rows: int, keys: int, head_dim: int, dtype: torch.dtype, stages: int) -> int:
    """Shared memory a program holds: its query tile plus ``stages`` buffers of one K and one V tile, at the padded
    head dim. For a 128 x 128 bf16 program at head_dim 128 with three stages that is 224 KiB, what sm90 compiles."""
    row_bytes = block_head_dim(head_dim) * torch.empty((), dtype=dtype).element_size()
    return (rows + 2 * stages * keys) * row_bytes


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
    return nbytes <= _opt_in_shared_bytes(device.index if device.index is not None else torch.cuda.current_device())
