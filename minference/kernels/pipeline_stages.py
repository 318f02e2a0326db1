"""How many shared-memory buffers the software pipeliner gives each kernel's K/V tiles, read from the TTGIR that
Triton compiles for a CUDA target. No GPU is needed: Triton compiles for any target on the CPU.

Why it is worth checking: when a K/V address depends on a load issued in the same loop iteration (a block offset, a
block id), the pipeliner spends one of its ``num_stages`` on that load. The tiles then get two buffers and a full
drain before every tile instead of three buffers and overlap. On an H200 that cost the vertical-slash and
block-sparse kernels 4-11 % (docs/benchmarks.md), with nothing in the outputs to show it.

    python -m minference.kernels.pipeline_stages            # sm90, the launcher's warps and stages
    python -m minference.kernels.pipeline_stages --arch 80
    python -m minference.kernels.pipeline_stages --tma     # K/V through tensor descriptors (the sm90 default)

Prints one line per kernel with the buffer count of every K/V tile allocation. It cannot run under
``TRITON_INTERPRET=1``, where the kernels are interpreted functions with nothing to compile.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import torch

from ..patterns.vertical_slash import TILE
from ._utils import block_head_dim, dot_precision, interpreting
from .launch import launch_options

# pointer arguments and their element types; every other non-constexpr argument is an i32 (or the fp32 scale)
_POINTERS = {
    "Lse": "*fp32", "HeadMap": "*i32", "Seqlens": "*i32",
    "BlockOffsets": "*i32", "BlockCount": "*i32", "BlockPresent": "*i8", "Columns": "*i32", "ColumnCount": "*i32",
    "Blocks": "*i32", "Sinks": "*i32", "Locals": "*i32",
}
# kernel name, its block constants, and the query rows of one program (what the launcher sizes warps by)
_KERNELS = {
    "vertical_slash": ("_vertical_slash_kernel", {"BLOCK_M": TILE, "BLOCK_N": TILE}, TILE),
    "block_sparse": ("_block_sparse_kernel", {"BLOCK_SIZE": TILE, "BLOCK_M": TILE, "BLOCK_N": TILE}, TILE),
    "a_shape": ("_a_shape_kernel", {"BLOCK_M": TILE, "BLOCK_N": TILE}, TILE),
    "vertical_slash_wide": ("_vertical_slash_kernel", {"BLOCK_M": 2 * TILE, "BLOCK_N": 2 * TILE}, 2 * TILE),
    "block_sparse_wide": ("_block_sparse_kernel", {"BLOCK_SIZE": 2 * TILE, "BLOCK_M": 2 * TILE, "BLOCK_N": 2 * TILE},
                          2 * TILE),
}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compile_ttgir(kernel: str, *, arch: int = 90, head_dim: int = 128, dtype: str = "bf16",
                  num_warps: int | None = None, num_stages: int | None = None, pack: int = 1,
                  tma: bool = False) -> str:
    """The TTGIR of ``kernel`` (``vertical_slash``, ``block_sparse`` or ``a_shape``) compiled for ``sm_{arch}``,
    specialised as the launcher would be for contiguous inputs (unit last stride, 16-byte aligned pointers).
    ``pack`` > 1 (A-shape only) compiles the GQA-packed program on the launcher's ``4 * pack`` warps; ``tma``
    loads K/V through ``(B, H, N, D)`` tensor descriptors as the launcher does on sm90."""
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}")
    if pack != 1 and kernel != "a_shape":
        raise ValueError(f"pack applies to the a_shape kernel only, got pack={pack} for {kernel!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if interpreting():
        raise RuntimeError("TRITON_INTERPRET=1 is set: interpreted kernels cannot be compiled; unset it")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import a_shape, block_sparse, vertical_slash

    name, blocks, rows = _KERNELS[kernel]
    family = {"vertical_slash": vertical_slash, "block_sparse": block_sparse, "a_shape": a_shape}
    fn = getattr(family[name.strip("_").removesuffix("_kernel")], name)
    options = launch_options(head_dim, _DTYPES[dtype], rows * pack)
    options = {"num_warps": num_warps or options["num_warps"], "num_stages": num_stages or options["num_stages"]}
    if pack > 1:
        blocks = dict(blocks, PACK=pack)
    constants = dict(blocks, HEAD_DIM=head_dim, BLOCK_D=block_head_dim(head_dim), STORE_LSE=False,
                     PRECISION=dot_precision(_DTYPES[dtype]), EVEN_D=head_dim == block_head_dim(head_dim), TMA=tma)
    descriptor = f"tensordesc<{dtype}[1,1,{blocks.get('BLOCK_N', TILE)},{block_head_dim(head_dim)}]>" if tma else None
    # constexpr parameters left at their defaults must still be passed as constants, or they compile as ints
    for param in fn.params:
        if param.is_constexpr and param.has_default and param.name not in constants:
            constants[param.name] = param.default
    signature, divisible = {}, []
    for position, arg in enumerate(fn.arg_names):
        if arg in constants:
            signature[arg] = "constexpr"
        elif arg.startswith("stride_") and arg.endswith("d"):
            signature[arg], constants[arg] = "constexpr", 1
        elif arg in ("DescK", "DescV") and tma:
            signature[arg] = descriptor
        elif arg in ("Q", "K", "V", "Out", "DescK", "DescV") or arg in _POINTERS:  # pointer launches pass K, V
            signature[arg] = _POINTERS.get(arg, f"*{dtype}")
            divisible.append(position)
        else:
            signature[arg] = "fp32" if arg == "qk_scale" else "i32"
            if arg.startswith("stride_"):
                divisible.append(position)
    source = ASTSource(
        fn=fn, signature=signature,
        constexprs={(fn.arg_names.index(arg),): value for arg, value in constants.items()},
        attrs={(position,): [["tt.divisibility", 16]] for position in divisible},
    )
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options).asm["ttgir"]


def tile_buffer_depths(ttgir: str, rows: int = TILE, head_dim: int = 128) -> list[int]:
    """Buffer count of every multi-buffered ``rows x head_dim`` shared-memory allocation (the K and V tiles of each
    pipelined loop; ``1x1xrows x head_dim`` for tiles a tensor descriptor loads), in the order they appear."""
    pattern = rf"local_alloc\s*:\s*\(\)\s*->\s*!ttg\.memdesc<(\d+)x(?:1x1x)?{rows}x{block_head_dim(head_dim)}x"
    return [int(depth) for depth in re.findall(pattern, ttgir)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability as one number (90 = sm_90)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    parser.add_argument("--num-stages", type=int, default=None, help="default: the launcher's choice")
    parser.add_argument("--json", action="store_true", help="print {kernel: [buffers, ...]} as JSON")
    parser.add_argument("--a-shape-pack", type=int, default=1, help="also compile the GQA-packed A-shape program")
    parser.add_argument("--tma", action="store_true", help="K/V through tensor descriptors (the sm90 default)")
    args = parser.parse_args(argv)
    depths = {}
    for kernel in _KERNELS:
        ttgir = compile_ttgir(kernel, arch=args.arch, head_dim=args.head_dim, dtype=args.dtype,
                              num_stages=args.num_stages, tma=args.tma)
        key_rows = _KERNELS[kernel][1].get("BLOCK_N", TILE)
        depths[kernel] = tile_buffer_depths(ttgir, rows=key_rows, head_dim=args.head_dim)
    if args.a_shape_pack > 1:
        ttgir = compile_ttgir("a_shape", arch=args.arch, head_dim=args.head_dim, dtype=args.dtype,
                              num_stages=args.num_stages, pack=args.a_shape_pack, tma=args.tma)
        depths[f"a_shape_pack{args.a_shape_pack}"] = tile_buffer_depths(ttgir, head_dim=args.head_dim)
    if args.json:
        print(json.dumps(depths))
    else:
        for kernel, buffers in depths.items():
            print(f"{kernel}: K/V tile buffers {buffers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
