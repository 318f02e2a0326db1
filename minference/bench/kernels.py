"""Run a kernel sweep: each sparse pattern on each index set, FlexAttention on its mask, dense baselines.

One :class:`Row` per measurement. ``ms`` of a ``minference`` row is one call of the public explicit-index op
(index build + kernel, ``validate=False``, preallocated output); ``estimate_ms`` is the pattern's online
estimation plus its index build on the same q, k, timed separately. ``density`` is executed tiles / causal
tiles (:mod:`minference.bench.density`); dense-equivalent TFLOP/s uses the causal FLOPs ``2 B Hq D N^2``,
TFLOP/s on kept work multiplies that by the density.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from .. import ops
from ..index import TILE, build_block_sparse_index, build_vertical_slash_index
from ..patterns import AShape, BlockSparse, VerticalSlash
from ..patterns import block_sparse as block_sparse_pattern
from ..patterns import vertical_slash as vertical_slash_pattern
from . import flex as flex_masks
from .density import a_shape_density, block_sparse_density, vertical_slash_density
from .report import machine_info  # noqa: F401  (rows carry it; the kernels sweep API)
from .index_sets import block_sparse_indices, index_set_label, load_head_stats, vertical_slash_indices
from .shapes import DENSE_METHODS, Shape, Sweep
from .timing import TimingConfig, input_copies, time_call

METHODS = ("minference", "flex") + DENSE_METHODS
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SPEEDUP_BASELINES = ("sdpa_flash", "sdpa_cudnn", "flex")


@dataclass
class Row:
    """One measurement (or the reason there is none: ``status`` other than ``"ok"``)."""

    method: str
    pattern: str
    budget: str
    index_set: str
    n: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    status: str = "ok"
    density: Optional[float] = None
    ms: Optional[float] = None
    ms_min: Optional[float] = None
    ms_max: Optional[float] = None
    reps: int = 0
    estimate_ms: Optional[float] = None
    dense_tflops: Optional[float] = None
    kept_tflops: Optional[float] = None
    kept_share_of_cudnn: Optional[float] = None
    speedup_vs_sdpa_flash: Optional[float] = None
    speedup_vs_sdpa_cudnn: Optional[float] = None
    speedup_vs_flex: Optional[float] = None
    extrapolated: bool = False
    backend: str = ""
    note: str = ""
    machine: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def budget_label(pattern) -> str:
    """``v=1000 s=6096`` / ``top_k=100 bs=64`` / ``sink=128 local=4096``."""
    if isinstance(pattern, VerticalSlash):
        return f"v={pattern.vertical} s={pattern.slash}"
    if isinstance(pattern, BlockSparse):
        return f"top_k={pattern.top_k} bs={pattern.block_size}"
    if isinstance(pattern, AShape):
        return f"sink={pattern.sink} local={pattern.local}"
    raise TypeError(f"pattern must be VerticalSlash, BlockSparse or AShape, got {type(pattern).__name__}")


def add_derived(rows: Sequence[Row]) -> None:
    """Fill TFLOP/s, the kept share of cuDNN and the speedups against every baseline of the same shape (pattern and
    set, for Flex)."""

    def key(row: Row, *extra):
        return (row.n, row.batch, row.heads, row.kv_heads, row.head_dim, row.dtype) + extra

    dense = {key(r, r.method): r.ms for r in rows if r.status == "ok" and r.method in DENSE_METHODS}
    flex = {
        key(r, r.pattern, r.budget, r.index_set): r.ms
        for r in rows
        if r.status == "ok" and r.method == "flex"
    }
    for row in rows:
        if row.status != "ok" or not row.ms:
            continue
        shape = Shape(row.n, row.batch, row.heads, row.kv_heads, row.head_dim)
        row.dense_tflops = shape.causal_flops() / (row.ms * 1e-3) / 1e12
        row.kept_tflops = row.dense_tflops * row.density if row.density is not None else None
        for method in DENSE_METHODS:
            base = dense.get(key(row, method))
            setattr(row, f"speedup_vs_{method}", base / row.ms if base else None)
        # the kernels' efficiency target: TFLOP/s on the kept tiles over cuDNN's dense TFLOP/s at the same shape
        if row.density is not None and row.speedup_vs_sdpa_cudnn is not None:
            row.kept_share_of_cudnn = row.density * row.speedup_vs_sdpa_cudnn
        base = (
            flex.get(key(row, row.pattern, row.budget, row.index_set)) if row.method == "minference" else None
        )
        row.speedup_vs_flex = base / row.ms if base else None


class Inputs:
    """Rotating copies of q, k, v for one shape (standard normal, drawn on the device), one output buffer."""

    def __init__(self, shape: Shape, device, dtype, copies: int, seed: int = 0):
        gen = torch.Generator(device=device).manual_seed(seed)

        def draw(heads):
            return torch.randn(shape.batch, heads, shape.n, shape.head_dim, generator=gen, device=device,
                               dtype=dtype)

        self.sets = [(draw(shape.heads), draw(shape.kv_heads), draw(shape.kv_heads)) for _ in range(copies)]
        self.out = torch.empty_like(self.sets[0][0])

    def __call__(self, rep: int):
        return self.sets[rep % len(self.sets)]


def dense_call(method: str, inputs: Inputs, device) -> Callable[[int], object]:
    """SDPA with one backend (CPU: whatever SDPA picks). GQA natively, else K/V expanded once beforehand."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}
    cuda = torch.device(device).type == "cuda"

    def native(rep):
        q, k, v = inputs(rep)
        if not cuda:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        with sdpa_kernel(backends[method]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    try:
        native(0)
        return native
    except RuntimeError:
        if not cuda:
            raise
    group = inputs.sets[0][0].shape[1] // inputs.sets[0][1].shape[1]
    expanded = [(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)) for q, k, v in inputs.sets]

    def repeated(rep):
        q, k, v = expanded[rep % len(expanded)]
        with sdpa_kernel(backends[method]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    repeated.note = "K/V expanded (no native GQA)"
    return repeated


def estimate_call(pattern, inputs: Inputs, n: int) -> Callable[[int], object]:
    """Online estimation for every query head plus the index build (vertical-slash or block-sparse)."""
    heads = list(range(inputs.sets[0][0].shape[1]))
    if isinstance(pattern, VerticalSlash):

        def run(rep):
            q, k, _ = inputs(rep)
            vertical_idx, slash_idx = vertical_slash_pattern.estimate(q, k, [pattern] * len(heads), heads)
            return build_vertical_slash_index(n, vertical_idx, slash_idx, ops.default_vertical_slash_tile(q))
    else:

        def run(rep):
            q, k, _ = inputs(rep)
            return build_block_sparse_index(
                block_sparse_pattern.estimate(q, k, [pattern] * len(heads), heads)
            )

    return run


def _vertical_slash_call(inputs: Inputs, rep: int, vertical_idx, slash_idx):
    return ops.vertical_slash_attention(*inputs(rep), vertical_idx, slash_idx, validate=False, out=inputs.out)


def _block_sparse_call(inputs: Inputs, rep: int, block_idx, block_size: int):
    return ops.block_sparse_attention(*inputs(rep), block_idx, block_size, validate=False, out=inputs.out)


def _a_shape_call(inputs: Inputs, rep: int, sink: int, local: int, pack: Optional[int] = None):
    return ops.a_shape_attention(*inputs(rep), sink, local, validate=False, out=inputs.out, gqa_pack=pack)


def pattern_cases(pattern, sweep: Sweep, shape: Shape, device, stats,
                  dtype: torch.dtype = torch.bfloat16) -> Iterator[tuple]:
    """``(index set label, density, our call maker, flex mask maker)`` for each index set of ``pattern``; the flex
    maker is None for a row Flex cannot run and False where Flex was already timed on the same mask. Vertical-slash
    rows run on the library's grid for ``dtype`` inputs on ``device``
    (:func:`~minference.ops.default_vertical_slash_tile`)."""
    n = shape.n
    if isinstance(pattern, AShape):
        sink, local = pattern.sink, min(pattern.local, n)
        for i, pack in enumerate(sweep.a_shape_packs):
            yield (
                "static" if pack is None else f"static, gqa_pack={pack}",
                a_shape_density(n, sink, local),
                functools.partial(_a_shape_call, sink=sink, local=local, pack=pack),
                functools.partial(flex_masks.a_shape_block_mask, n, sink, local, device) if i == 0 else False,
            )
        return
    for name in sweep.index_sets:
        label = index_set_label(name, stats)
        if name == "random" and sweep.random_max_n is not None and n > sweep.random_max_n:
            yield label, None, f"skipped: random set only up to N={sweep.random_max_n}", None
            continue
        if isinstance(pattern, VerticalSlash):
            vertical_idx, slash_idx = vertical_slash_indices(
                name, n, shape.batch, shape.heads, pattern, device=device, stats=stats
            )
            # the op decides by the inputs' device, dtype, head_dim and length: one element stands in for them
            inputs_like = torch.empty(1, 1, 1, shape.head_dim, dtype=dtype, device=device).expand(1, 1, n, -1)
            index = build_vertical_slash_index(n, vertical_idx, slash_idx, ops.default_vertical_slash_tile(inputs_like))
            yield (
                label + ("" if index.tile == TILE else f", tile={index.tile}"),
                float(vertical_slash_density(index, n).mean()),
                functools.partial(_vertical_slash_call, vertical_idx=vertical_idx, slash_idx=slash_idx),
                functools.partial(flex_masks.vertical_slash_block_mask, index, n),
            )
        else:
            block_idx = block_sparse_indices(
                name, n, shape.batch, shape.heads, pattern, device=device, stats=stats
            )
            index = build_block_sparse_index(block_idx)
            yield (
                label,
                float(block_sparse_density(index, n, pattern.block_size).mean()),
                functools.partial(_block_sparse_call, block_idx=block_idx, block_size=pattern.block_size),
                functools.partial(flex_masks.block_sparse_block_mask, index, n, pattern.block_size),
            )


def _required_bytes(shape: Shape, copies: int, element_size: int) -> int:
    q_bytes = element_size * shape.batch * shape.heads * shape.n * shape.head_dim
    return copies * shape.io_bytes(element_size) + 2 * q_bytes + (2 << 30)


def plan_rows(sweep: Sweep, device) -> int:
    """How many rows :func:`run_sweep` will produce (for a progress bar)."""
    cuda = torch.device(device).type == "cuda"
    per_shape = len(DENSE_METHODS) if cuda else 1
    for pattern in sweep.patterns:
        sets = 1 if isinstance(pattern, AShape) else len(sweep.index_sets)
        per_shape += sets * (2 if sweep.flex and cuda else 1)
    return per_shape * len(sweep.shapes)


def run_sweep(
    sweep: Sweep,
    *,
    device="cuda",
    dtype: torch.dtype = torch.bfloat16,
    timing: Optional[TimingConfig] = None,
    deadline: Optional[float] = None,
    on_row: Optional[Callable[[Row], None]] = None,
    stats: Optional[dict] = None,
) -> list[Row]:
    """Measure every row of ``sweep`` on ``device``; returns the rows with speedups filled.

    Args:
        device: ``"cuda"`` (Triton kernels, SDPA flash/cuDNN, FlexAttention) or ``"cpu"`` (the torch backend
            and plain SDPA as the dense baseline ``sdpa``; a plumbing check, not a speed measurement).
        deadline: ``time.monotonic()`` value after which remaining rows are recorded as skipped.
        on_row: called with each finished row (progress, incremental writes).
        stats: captured head statistics for the ``measured`` set (default: the shipped file).

    Raises:
        ValueError: ``device`` is CUDA but no GPU is visible.
    """
    device = torch.device(device)
    timing = timing or TimingConfig()
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError("device is cuda but torch.cuda.is_available() is False")
    stats = stats if stats is not None else load_head_stats()
    machine = machine_info(device, dtype)
    dtype_name = machine["dtype"]
    rows: list[Row] = []

    def emit(row: Row) -> None:
        row.machine = machine
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for shape in sweep.shapes:
        base = dict(
            n=shape.n,
            batch=shape.batch,
            heads=shape.heads,
            kv_heads=shape.kv_heads,
            head_dim=shape.head_dim,
            dtype=dtype_name,
        )
        pending = list(_shape_rows(sweep, shape, device, cuda))
        skip = None
        copies = input_copies(shape.io_bytes(dtype.itemsize), timing)
        if cuda:
            free, _ = torch.cuda.mem_get_info(device)
            need = _required_bytes(shape, copies, dtype.itemsize)
            if need > free:
                skip = f"skipped: needs ~{need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"
        if skip is None and deadline is not None and time.monotonic() > deadline:
            skip = "skipped: time budget spent"
        if skip:
            for method, pattern, budget, label in pending:
                emit(Row(method, pattern, budget, label, **base, status=skip))
            continue
        _measure_shape(sweep, shape, device, dtype, timing, copies, deadline, stats, base, emit, rows)
        if cuda:
            torch.cuda.empty_cache()
    add_derived(rows)
    return rows


def _shape_rows(sweep: Sweep, shape: Shape, device, cuda: bool):
    """Placeholders ``(method, pattern, budget, index set)`` for a shape that is skipped whole."""
    for method in DENSE_METHODS if cuda else ("sdpa",):
        yield method, "dense", "", "–"
    for pattern in sweep.patterns:
        sets = ["static"] if isinstance(pattern, AShape) else list(sweep.index_sets)
        for name in sets:
            yield "minference", pattern.name, budget_label(pattern), name
            if sweep.flex and cuda:
                yield "flex", pattern.name, budget_label(pattern), name


def _status(error: BaseException) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "oom"
    return f"error: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"


def _measure_shape(sweep, shape, device, dtype, timing, copies, deadline, stats, base, emit, rows) -> None:
    cuda = device.type == "cuda"
    backend = "triton" if cuda else "torch"
    inputs = Inputs(shape, device, dtype, copies)

    def over_time() -> bool:
        return deadline is not None and time.monotonic() > deadline

    def measure(row: Row, fn) -> Row:
        if over_time():
            row.status = "skipped: time budget spent"
            return row
        try:
            result = time_call(fn, device, timing)
            row.ms, row.ms_min, row.ms_max, row.reps = (
                result.median_ms,
                result.min_ms,
                result.max_ms,
                result.reps,
            )
        except Exception as error:  # a failing method must not end the sweep
            row.status = _status(error)
            if cuda:
                torch.cuda.empty_cache()
        return row

    for method in DENSE_METHODS if cuda else ("sdpa",):
        row = Row(method, "dense", "", "–", **base, density=1.0, backend="sdpa")
        if sweep.dense_max_n is not None and shape.n > sweep.dense_max_n:
            emit(_extrapolate(row, rows))
            continue
        try:
            fn = dense_call(method, inputs, device)
            row.note = getattr(fn, "note", "")
            emit(measure(row, fn))
        except Exception as error:
            row.status = _status(error)
            emit(row)

    for pattern in sweep.patterns:
        budget = budget_label(pattern)
        estimate_ms = 0.0 if isinstance(pattern, AShape) else None
        if estimate_ms is None:
            probe = measure(
                Row("estimate", pattern.name, budget, "", **base), estimate_call(pattern, inputs, shape.n)
            )
            estimate_ms = probe.ms
        for label, density, ours, make_flex in pattern_cases(pattern, sweep, shape, device, stats, dtype):
            row = Row(
                "minference",
                pattern.name,
                budget,
                label,
                **base,
                density=density,
                backend=backend,
                estimate_ms=estimate_ms,
            )
            if isinstance(ours, str):
                row.status = ours
                emit(row)
            else:
                emit(measure(row, lambda rep, ours=ours: ours(inputs, rep)))
            if not (sweep.flex and cuda) or make_flex is False:
                continue
            flex_row = Row("flex", pattern.name, budget, label, **base, backend="flex_attention")
            if make_flex is None:
                flex_row.status = row.status
            elif sweep.flex_max_n is not None and shape.n > sweep.flex_max_n:
                flex_row.status = f"skipped: Flex only up to N={sweep.flex_max_n}"
            else:
                emit(_measure_flex(flex_row, make_flex, inputs, measure))
                continue
            emit(flex_row)


def _measure_flex(row: Row, make_flex, inputs: Inputs, measure) -> Row:
    try:
        block_mask, row.density = make_flex()
        flex = flex_masks.flex_attention_compiled()
    except Exception as error:
        row.status = _status(error)
        return row
    return measure(row, lambda rep: flex(*inputs(rep), block_mask=block_mask, enable_gqa=True))


def _extrapolate(row: Row, rows: Sequence[Row]) -> Row:
    """Dense time ∝ N² from the largest measured N of the same method and batch/head shape."""
    same = [
        r
        for r in rows
        if r.method == row.method
        and r.status == "ok"
        and not r.extrapolated
        and (r.batch, r.heads, r.kv_heads, r.head_dim, r.dtype)
        == (row.batch, row.heads, row.kv_heads, row.head_dim, row.dtype)
    ]
    if not same:
        row.status = "skipped: above dense_max_n and nothing measured to extrapolate from"
        return row
    ref = max(same, key=lambda r: r.n)
    row.ms = ref.ms * (row.n / ref.n) ** 2
    row.extrapolated = True
    row.note = f"extrapolated from N={ref.n}"
    return row
