"""Which A-shape query heads can share one K/V tile load (GQA packing), decided on the host.

A packed A-shape program stacks the rows of ``pack`` query heads that read the same K/V head and have the same
``(sink, local)`` budget, so the tiles it walks are identical for all of them and each K/V tile is loaded once.
Heads that cannot be packed run one per program, as without packing.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from .._checks import HALF_DTYPES

PACKS = (1, 2)
"""Supported pack sizes. Two heads make a 128-row program on 8 warps (two warpgroups, one K/V tile load). Compiled
for sm90 (triton 3.9, bf16, head_dim 128) it holds 210 registers per thread and 128 KiB of shared memory. Four heads
need 255 registers and spill (120-byte stack), so they are not offered."""


def default_pack(head_dim: int, dtype: torch.dtype) -> int:
    """The pack size ops use unless told otherwise. Measured on an H200 (bf16, A-shape at 32K and 128K, same-call
    ratios in docs/benchmarks.md), two heads per program against one: 1.65x faster at head_dim 256, 1.06-1.11x at
    128, 1.06-1.08x at 96, but 0.81-0.86x at 64, where a 64-row program is already short of work per K/V load and
    halving the number of programs costs more than the shared load saves. So: 2 above head_dim 64 for half types.
    float32 stays unpacked: its exact products run on FMA units rather than tensor cores, packing it was never
    measured faster, and each packed float32 kernel is another ~40 s compile (sm90, triton 3.9, on a CPU host)."""
    return 2 if head_dim > 64 and dtype in HALF_DTYPES else 1


class PackPlan(NamedTuple):
    packed_heads: list[int]  # pack-major: heads of pack 0, then pack 1, ...
    sinks: list[int]  # one per pack
    locals: list[int]  # one per pack
    single_heads: list[int]  # heads left to the unpacked launch, in the order given


def check_pack(pack) -> int:
    """``pack`` as an int from :data:`PACKS`.

    Raises:
        TypeError: not an int. ValueError: not one of :data:`PACKS`.
    """
    if not isinstance(pack, int) or isinstance(pack, bool):
        raise TypeError(f"gqa_pack must be an int, got {type(pack).__name__}")
    if pack not in PACKS:
        raise ValueError(f"gqa_pack must be one of {PACKS}, got {pack}")
    return pack


def plan_packs(heads: Sequence[int], sinks: Sequence[int], locals_: Sequence[int], group: int,
               pack: int) -> PackPlan:
    """Split ``heads`` (query heads with budgets ``sinks[i]``, ``locals_[i]``) into packs of ``pack`` heads of one
    K/V head (``head // group``) and one budget, taken in the order given, and the heads left over.

    Raises:
        ValueError: the three sequences differ in length, ``group < 1``, or ``pack`` is not supported.
    """
    check_pack(pack)
    if not (len(heads) == len(sinks) == len(locals_)):
        raise ValueError(f"heads, sinks and locals must have one entry per head, got {len(heads)}, {len(sinks)}, "
                         f"{len(locals_)}")
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    waiting: dict[tuple, list[int]] = {}
    plan = PackPlan([], [], [], [])
    for head, sink, local in zip(heads, sinks, locals_):
        key = (head // group, sink, local)
        members = waiting.setdefault(key, [])
        members.append(head)
        if len(members) == pack:
            plan.packed_heads.extend(members)
            plan.sinks.append(sink)
            plan.locals.append(local)
            del waiting[key]
    leftover = {head for members in waiting.values() for head in members}
    plan.single_heads.extend(head for head in heads if head in leftover)
    return plan
