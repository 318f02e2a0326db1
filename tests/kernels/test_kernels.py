"""Kernels == dense attention restricted to their exact mask, over drawn shapes (interpreter on CPU, GPU in bf16)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minference as mi
from helpers import DEVICE, KERNEL_DTYPES, ON_GPU, assert_matches_reference, poisoned_like, random_qkv
from minference import ops
from minference.kernels import launch

pytestmark = pytest.mark.kernels

EXAMPLES = 10
SMALL_LENGTHS = [1, 63, 64, 65, 127, 130]
LENGTHS = st.sampled_from(SMALL_LENGTHS + ([4097, 1000, 2049] if ON_GPU else [200]))
HEAD_DIMS = st.sampled_from([64, 80, 96, 128, 256] if ON_GPU else [64, 64, 80])
cases = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw, dtypes=KERNEL_DTYPES, head_dims=HEAD_DIMS):
    hkv = draw(st.integers(1, 2))
    return dict(
        batch=draw(st.integers(1, 2)),
        hkv=hkv,
        hq=hkv * draw(st.sampled_from([1, 2, 4])),
        n=draw(LENGTHS),
        head_dim=draw(head_dims),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**31 - 1)),
        layout=draw(st.sampled_from(["bhnd", "bnhd"])),
    )


def make_inputs(shape):
    return random_qkv(shape["batch"], shape["hq"], shape["hkv"], shape["n"], shape["head_dim"], shape["dtype"],
                      shape["seed"], layout=shape["layout"])


def index_generator(shape):
    return torch.Generator().manual_seed(shape["seed"] + 1)


def grids_that_fit(q) -> list:
    """The vertical-slash grids the Triton backend runs for ``q``: 128 x 128 programs need shared memory for their
    query tile and at least one K/V stage."""
    return [64, 128] if launch.wide_tile_stages(q) is not None else [64]


@cases
@given(shapes(), st.integers(0, 40), st.integers(0, 40), st.sampled_from([64, 128]))
def test_vertical_slash_kernel_equals_masked_reference(shape, nv, ns, tile):
    q, k, v = make_inputs(shape)
    n, gen = shape["n"], index_generator(shape)
    vertical = torch.randint(0, n, (shape["batch"], shape["hq"], nv), generator=gen).to(DEVICE)
    slash = torch.randint(0, n, (shape["batch"], shape["hq"], ns), generator=gen).to(DEVICE)
    if tile == 128 and launch.wide_tile_stages(q) is None:  # float32 at head_dim 256 on a GPU: 384 KiB with one stage
        with pytest.raises(ValueError, match="tile=128"):
            ops.vertical_slash_attention(q, k, v, vertical, slash, backend="triton", tile=tile)
        return
    out, lse = ops.vertical_slash_attention(q, k, v, vertical, slash, backend="triton", return_lse=True,
                                            out=poisoned_like(q), tile=tile)
    mask = ops.vertical_slash_mask(n, vertical, slash, tile=tile)
    assert_matches_reference(out, q, k, v, mask, lse=lse, what=f"vertical-slash tile {tile} {shape}")


@pytest.mark.parametrize("switches", [{}, dict(LOADS_AHEAD=False)])
def test_vertical_slash_128_token_grid_over_several_column_chunks(switches):
    """128-row programs gather columns 128 at a time: several chunks, a partial last one, columns inside walked
    blocks skipped, padded rows, in each loop order, against the masked reference."""
    from minference.index import build_vertical_slash_index
    from minference.kernels.vertical_slash import vertical_slash_forward

    n = 700
    gen = torch.Generator().manual_seed(11)
    q, k, v = random_qkv(2, 4, 2, n, 64, torch.float32, seed=11, layout="bhnd")
    vertical = torch.randint(0, n, (2, 4, 500), generator=gen)
    slash = torch.randint(0, 200, (2, 4, 3), generator=gen)
    index = build_vertical_slash_index(n, vertical.to(DEVICE), slash.to(DEVICE), 128)
    assert int(index.column_count.max()) > 2 * 128
    heads = torch.arange(4, dtype=torch.int32, device=DEVICE)
    seqlens = torch.tensor([n, n - 150], dtype=torch.int32)
    out, lse = poisoned_like(q), torch.full(q.shape[:3], float("nan"), device=DEVICE)
    vertical_slash_forward(q, k, v, index, heads, out, lse, seqlens.to(DEVICE), launch=switches)
    mask = ops.vertical_slash_mask(n, vertical, slash, seqlens=seqlens, tile=128)
    assert_matches_reference(out, q, k, v, mask, lse=lse, seqlens=seqlens.to(DEVICE), what=f"tile 128 {switches}")


def test_vertical_slash_loop_orders_equal_the_default_bit_for_bit():
    """The kernel's two loop orders (:func:`loop_order` picks one by length) change when indices load, not what is
    computed: the inline order writes the default's output and lse exactly, padded rows and partial column chunks
    included."""
    from minference.index import build_vertical_slash_index
    from minference.kernels.vertical_slash import vertical_slash_forward

    n = 300
    gen = torch.Generator().manual_seed(5)
    q, k, v = random_qkv(2, 4, 2, n, 64, torch.float32, seed=5, layout="bhnd")
    # about 170 distinct columns: three chunks, so a chunk's flags come from columns loaded two chunks ahead; near
    # diagonals only, so the walk covers the last blocks (whose columns must be skipped) but not the first ones
    index = build_vertical_slash_index(n, torch.randint(0, n, (2, 4, 250), generator=gen).to(DEVICE),
                                       torch.randint(0, 100, (2, 4, 3), generator=gen).to(DEVICE))
    heads = torch.arange(4, dtype=torch.int32, device=DEVICE)
    seqlens = torch.tensor([n, n - 70], dtype=torch.int32, device=DEVICE)
    assert int(index.column_count.max()) > 2 * 64
    results = []
    for options in ({}, dict(LOADS_AHEAD=False)):
        out, lse = poisoned_like(q), torch.full(q.shape[:3], float("nan"), device=DEVICE)
        vertical_slash_forward(q, k, v, index, heads, out, lse, seqlens, launch=options)
        results.append((out, lse))
    (out, lse), (out_switched, lse_switched) = results
    assert not out.isnan().any() and torch.equal(out_switched, out) and torch.equal(lse_switched, lse)


@cases
@given(shapes(), st.sampled_from([16, 32, 64, 128]), st.integers(1, 6))
def test_block_sparse_kernel_equals_masked_reference(shape, block_size, slots):
    q, k, v = make_inputs(shape)
    n, gen = shape["n"], index_generator(shape)
    blocks = -(-n // block_size)
    block_idx = torch.randint(-1, blocks, (shape["batch"], shape["hq"], blocks, slots), generator=gen).to(DEVICE)
    out, lse = ops.block_sparse_attention(q, k, v, block_idx, block_size, backend="triton", return_lse=True,
                                          out=poisoned_like(q))
    mask = ops.block_sparse_mask(n, block_idx, block_size)
    assert_matches_reference(out, q, k, v, mask, lse=lse, what=f"block-sparse {block_size} {shape}")


@cases
@given(shapes(dtypes=[d for d in KERNEL_DTYPES if d != torch.float32]), st.integers(1, 3), st.data())
def test_block_sparse_wide_programs_equal_masked_reference(shape, slots, data):
    """128-token blocks: one program per query block over whole 128 x 128 tiles (half precision, head_dim <= 128;
    wider heads fall back to 64 rows), random lists and padded rows, lse included."""
    block_size = 128
    q, k, v = make_inputs(shape)
    n, gen = shape["n"], index_generator(shape)
    blocks = -(-n // block_size)
    block_idx = torch.randint(-1, blocks, (shape["batch"], shape["hq"], blocks, slots), generator=gen).to(DEVICE)
    seqlens = torch.tensor(data.draw(st.lists(st.integers(1, n), min_size=shape["batch"], max_size=shape["batch"])))
    out, lse = ops.block_sparse_attention(q, k, v, block_idx, block_size, seqlens=seqlens, backend="triton",
                                          return_lse=True, out=poisoned_like(q))
    mask = ops.block_sparse_mask(n, block_idx, block_size, seqlens=seqlens)
    assert_matches_reference(out, q, k, v, mask, lse=lse, seqlens=seqlens.to(DEVICE),
                             what=f"block-sparse {block_size}-token blocks, 128 rows {seqlens.tolist()} {shape}")


@cases
@given(shapes(), st.data())
def test_a_shape_kernel_equals_masked_reference(shape, data):
    q, k, v = make_inputs(shape)
    n, hq = shape["n"], shape["hq"]
    sinks = data.draw(st.lists(st.integers(0, n + 70), min_size=hq, max_size=hq))
    windows = data.draw(st.lists(st.integers(1, n + 70), min_size=hq, max_size=hq))
    out, lse = ops.a_shape_attention(q, k, v, sinks, windows, backend="triton", return_lse=True, out=poisoned_like(q))
    mask = ops.a_shape_mask(n, sinks, windows).to(DEVICE)
    assert_matches_reference(out, q, k, v, mask, lse=lse, what=f"a-shape {sinks} {windows} {shape}")


@cases
@given(shapes(), st.data(), st.just(2))
def test_gqa_packed_a_shape_equals_masked_reference(shape, data, pack):
    """Packed programs (query heads of one K/V head with equal budgets share each K/V tile) compute the same masked
    attention, padded rows and lse included; budgets come from a short list so that packs actually form."""
    q, k, v = make_inputs(shape)
    n, hq = shape["n"], shape["hq"]
    budgets = data.draw(st.lists(st.sampled_from([(0, 1), (0, 70), (3, 17), (64, 64), (5, n + 3)]),
                                 min_size=hq, max_size=hq))
    sinks, windows = [b[0] for b in budgets], [b[1] for b in budgets]
    seqlens = torch.tensor(data.draw(st.lists(st.integers(1, n), min_size=shape["batch"], max_size=shape["batch"])))
    out, lse = ops.a_shape_attention(q, k, v, sinks, windows, seqlens=seqlens, backend="triton", return_lse=True,
                                     out=poisoned_like(q), gqa_pack=pack)
    mask = ops.a_shape_mask(n, sinks, windows).to(DEVICE)
    assert_matches_reference(out, q, k, v, mask, lse=lse, seqlens=seqlens.to(DEVICE),
                             what=f"a-shape packed by {pack} {budgets} {seqlens.tolist()} {shape}")


@cases
@given(shapes(), st.data())
def test_padded_batch_rows_match_each_sequence_alone(shape, data):
    """Right-padded variable lengths: valid rows equal the masked reference, padding rows are written as 0."""
    q, k, v = make_inputs(shape)
    n = shape["n"]
    seqlens = torch.tensor(data.draw(st.lists(st.integers(1, n), min_size=shape["batch"], max_size=shape["batch"])))
    gen = index_generator(shape)
    vertical = torch.randint(0, n, (shape["batch"], shape["hq"], 8), generator=gen).to(DEVICE)
    slash = torch.randint(0, n, (shape["batch"], shape["hq"], 8), generator=gen).to(DEVICE)
    tile = data.draw(st.sampled_from(grids_that_fit(q)))
    out = ops.vertical_slash_attention(q, k, v, vertical, slash, seqlens=seqlens, backend="triton",
                                       out=poisoned_like(q), tile=tile)
    mask = ops.vertical_slash_mask(n, vertical, slash, seqlens=seqlens, tile=tile)
    assert_matches_reference(out, q, k, v, mask, seqlens=seqlens.to(DEVICE),
                             what=f"padded {seqlens} tile {tile} {shape}")



@cases
@given(shapes(), st.data())
def test_sparse_attention_mixed_heads_equal_their_masks(shape, data):
    """Per-head patterns, one launch per type: every head equals the reference over the mask of its estimate."""
    q, k, v = make_inputs(shape)
    hq, n = shape["hq"], shape["n"]
    choices = [mi.VerticalSlash(vertical=7, slash=9, sink=2, local=3), mi.AShape(sink=4, local=30),
               mi.BlockSparse(top_k=2, block_size=32), mi.Dense(), mi.VerticalSlash(vertical=40, slash=3),
               mi.BlockSparse(top_k=1, block_size=128)]  # 128 x 128 programs in half precision
    patterns = [choices[i] for i in data.draw(st.lists(st.integers(0, len(choices) - 1), min_size=hq, max_size=hq))]
    vs_tile = data.draw(st.sampled_from([None, *grids_that_fit(q)]))
    out = mi.sparse_attention(q, k, v, patterns, backend="triton", out=poisoned_like(q), vertical_slash_tile=vs_tile)
    vs_heads = [h for h, p in enumerate(patterns) if isinstance(p, mi.VerticalSlash)]
    mask = torch.zeros(shape["batch"], hq, n, n, dtype=torch.bool)
    if vs_heads:
        vertical, slash = mi.patterns.vertical_slash.estimate(q, k, [patterns[h] for h in vs_heads], vs_heads)
        tile = vs_tile or ops.default_vertical_slash_tile(q)
        mask[:, vs_heads] = ops.vertical_slash_mask(n, vertical.cpu(), slash.cpu(), tile=tile)
    for block_size in (32, 128):
        bs_heads = [h for h, p in enumerate(patterns) if isinstance(p, mi.BlockSparse) and p.block_size == block_size]
        if bs_heads:
            block_idx = mi.patterns.block_sparse.estimate(q, k, [patterns[h] for h in bs_heads], bs_heads)
            mask[:, bs_heads] = ops.block_sparse_mask(n, block_idx.cpu(), block_size)
    for h, p in enumerate(patterns):
        if isinstance(p, (mi.AShape, mi.Dense)):
            sink, local = (p.sink, p.local) if isinstance(p, mi.AShape) else (0, n)
            mask[:, h] = ops.a_shape_mask(n, sink, local)[0, 0]
    assert_matches_reference(out, q, k, v, mask.to(DEVICE), what=f"mixed {patterns} tile {vs_tile} {shape}")


# one test per kernel rather than one for all three: on a GPU each compiles its own shapes, and xdist runs them side
# by side (together they were the slowest test of the tier, 245 s)
@pytest.mark.parametrize("kind", ["vertical_slash", "block_sparse", "a_shape"])
@cases
@given(shape=shapes())
def test_full_budgets_equal_dense_attention(kind, shape):
    q, k, v = make_inputs(shape)
    n = shape["n"]
    dense = torch.ones(1, 1, n, n, dtype=torch.bool, device=DEVICE)
    pattern = {"vertical_slash": mi.VerticalSlash(vertical=n, slash=n),
               "block_sparse": mi.BlockSparse(top_k=n, block_size=64), "a_shape": mi.AShape(sink=0, local=n)}[kind]
    out = mi.sparse_attention(q, k, v, pattern, backend="triton", out=poisoned_like(q))
    assert_matches_reference(out, q, k, v, dense, what=f"full {pattern} {shape}")


@cases
@given(shapes())
def test_gqa_equals_the_same_call_with_repeated_kv(shape):
    q, k, v = make_inputs(shape)
    group = shape["hq"] // shape["hkv"]
    pattern = mi.VerticalSlash(vertical=10, slash=20, sink=3, local=5)
    n, gen = shape["n"], index_generator(shape)
    vertical = torch.randint(0, n, (shape["batch"], shape["hq"], 10), generator=gen).to(DEVICE)
    slash = torch.randint(0, n, (shape["batch"], shape["hq"], 10), generator=gen).to(DEVICE)
    grouped = ops.vertical_slash_attention(q, k, v, vertical, slash, backend="triton")
    repeated = ops.vertical_slash_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                            vertical, slash, backend="triton")
    assert torch.equal(grouped, repeated)
    assert torch.equal(mi.sparse_attention(q, k, v, pattern, backend="triton"),
                       mi.sparse_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), pattern,
                                           backend="triton"))


@cases
@given(shapes())
def test_a_batch_of_two_equals_two_calls(shape):
    shape = {**shape, "batch": 2}
    q, k, v = make_inputs(shape)
    cycle = [mi.VerticalSlash(vertical=5, slash=6, sink=1, local=2), mi.BlockSparse(top_k=1), mi.AShape(3, 17)]
    pattern = [cycle[h % 3] for h in range(shape["hq"])]
    both = mi.sparse_attention(q, k, v, pattern, backend="triton")
    for b in range(2):
        alone = mi.sparse_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], pattern, backend="triton")
        assert torch.equal(both[b:b + 1], alone)


# One test per dtype: a float32 kernel (exact FMA dots) takes ~35 s to compile per shape on the GPU, so ten drawn
# examples of one test took up to 6 minutes (docs/testing.md); split by dtype, the GPU tier runs them on parallel
# workers. Causality does not depend on the head dim, so float32 keeps one there (the masked-reference properties
# draw every head dim in float32); half precision, cheap to compile, draws them all.
CAUSALITY_FLOAT32_HEAD_DIMS = st.sampled_from([64]) if ON_GPU else HEAD_DIMS


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=lambda dtype: str(dtype).removeprefix("torch."))
@pytest.mark.parametrize("kind", ["vertical_slash", "block_sparse", "a_shape"])
@cases
@given(data=st.data())
def test_changing_later_keys_never_changes_earlier_rows(kind, dtype, data):
    head_dims = CAUSALITY_FLOAT32_HEAD_DIMS if dtype == torch.float32 else HEAD_DIMS
    shape = data.draw(shapes(dtypes=(dtype,), head_dims=head_dims), label="shape")
    q, k, v = make_inputs(shape)
    n = shape["n"]
    cut = data.draw(st.integers(0, n - 1))
    gen = index_generator(shape)
    vertical = torch.randint(0, n, (shape["batch"], shape["hq"], 12), generator=gen).to(DEVICE)
    slash = torch.randint(0, n, (shape["batch"], shape["hq"], 12), generator=gen).to(DEVICE)
    block_idx = torch.randint(-1, -(-n // 64), (shape["batch"], shape["hq"], -(-n // 64), 3), generator=gen).to(DEVICE)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, cut + 1:] = torch.randn_like(k2[:, :, cut + 1:])
    v2[:, :, cut + 1:] = 100.0
    run = {
        "vertical_slash": lambda kk, vv: ops.vertical_slash_attention(q, kk, vv, vertical, slash, backend="triton"),
        "block_sparse": lambda kk, vv: ops.block_sparse_attention(q, kk, vv, block_idx, backend="triton"),
        "a_shape": lambda kk, vv: ops.a_shape_attention(q, kk, vv, 5, 40, backend="triton"),
    }[kind]
    assert torch.equal(run(k, v)[:, :, : cut + 1], run(k2, v2)[:, :, : cut + 1])


@pytest.mark.parametrize("with_lse", [True, False])
@pytest.mark.parametrize("op", ["vertical_slash", "vertical_slash_128", "block_sparse", "a_shape"])
def test_torch_backend_equals_masked_reference(op, with_lse):
    """The CPU backend computes the same function as the kernels (same reference, same mask), padded rows included;
    without lse it runs SDPA over the mask, with lse the reference itself."""
    q, k, v = random_qkv(2, 4, 2, 150, 32, torch.float32, seed=7, device="cpu")
    seqlens = torch.tensor([150, 97])
    gen = torch.Generator().manual_seed(3)
    common = dict(backend="torch", return_lse=with_lse, seqlens=seqlens, out=poisoned_like(q))
    if op.startswith("vertical_slash"):
        vertical, slash = torch.randint(0, 150, (2, 4, 9), generator=gen), torch.randint(0, 150, (2, 4, 5), generator=gen)
        tile = 128 if op.endswith("128") else 64
        result = ops.vertical_slash_attention(q, k, v, vertical, slash, tile=tile, **common)
        mask = ops.vertical_slash_mask(150, vertical, slash, tile=tile)
    elif op == "block_sparse":
        block_idx = torch.randint(-1, 3, (2, 4, 3, 2), generator=gen)
        result = ops.block_sparse_attention(q, k, v, block_idx, **common)
        mask = ops.block_sparse_mask(150, block_idx)
    else:
        result = ops.a_shape_attention(q, k, v, [0, 3, 9, 200], [1, 20, 64, 5], **common)
        mask = ops.a_shape_mask(150, [0, 3, 9, 200], [1, 20, 64, 5])
    out, lse = result if with_lse else (result, None)
    assert torch.all(out[1, :, 97:] == 0), "padding rows are zero"
    assert_matches_reference(out, q, k, v, mask, seqlens=seqlens, lse=lse, what=f"torch backend {op} lse={with_lse}")
