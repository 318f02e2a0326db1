"""GQA packing plan: which A-shape heads share one program (host side, exact)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minference as mi
from minference import ops, planning
from minference.kernels import launch
from minference.kernels.gqa_pack import PACKS, check_pack, default_pack, plan_packs


def test_heads_pack_by_kv_head_and_budget_in_the_order_given():
    # group 4: heads 0-3 read K/V head 0, heads 4-7 K/V head 1
    heads = list(range(8))
    sinks = [0, 4, 0, 4, 0, 0, 0, 0]
    locals_ = [64, 64, 64, 64, 64, 64, 32, 64]
    plan = plan_packs(heads, sinks, locals_, group=4, pack=2)
    assert plan.packed_heads == [0, 2, 1, 3, 4, 5]
    assert plan.sinks == [0, 4, 0] and plan.locals == [64, 64, 64]
    assert plan.single_heads == [6, 7]


def test_heads_of_different_kv_heads_never_share_a_pack():
    plan = plan_packs([0, 1, 2, 3], [0] * 4, [64] * 4, group=1, pack=2)
    assert plan.packed_heads == [] and plan.single_heads == [0, 1, 2, 3]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from(PACKS), st.data())
def test_a_plan_covers_every_head_once_with_uniform_packs(kv_heads, group, pack, data):
    heads = data.draw(st.permutations(list(range(kv_heads * group))))
    sinks = data.draw(st.lists(st.sampled_from([0, 4]), min_size=len(heads), max_size=len(heads)))
    locals_ = data.draw(st.lists(st.sampled_from([16, 64]), min_size=len(heads), max_size=len(heads)))
    budget = {h: (s, w) for h, s, w in zip(heads, sinks, locals_)}
    plan = plan_packs(heads, sinks, locals_, group, pack)
    assert sorted(plan.packed_heads + plan.single_heads) == sorted(heads)
    assert len(plan.packed_heads) == pack * len(plan.sinks) == pack * len(plan.locals)
    for i in range(len(plan.sinks)):
        members = plan.packed_heads[i * pack:(i + 1) * pack]
        assert len({h // group for h in members}) == 1
        assert all(budget[h] == (plan.sinks[i], plan.locals[i]) for h in members)
    # what is left cannot form another pack
    left = [(h // group, *budget[h]) for h in plan.single_heads]
    assert all(left.count(key) < pack for key in left)


def test_bad_pack_sizes_name_the_argument():
    with pytest.raises(TypeError, match="gqa_pack must be an int"):
        check_pack(2.0)
    with pytest.raises(TypeError, match="gqa_pack must be an int"):
        check_pack(True)
    with pytest.raises(ValueError, match=r"gqa_pack must be one of \(1, 2\), got 3"):
        check_pack(3)
    with pytest.raises(ValueError, match="one entry per head"):
        plan_packs([0, 1], [0], [1, 1], group=1, pack=2)
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="gqa_pack must be one of"):
        ops.a_shape_attention(q, q[:, :1], q[:, :1], 0, 4, gqa_pack=4)


H200_SHARED, A100_SHARED, CONSUMER_SHARED = 232448, 167936, 101376  # opt-in bytes per block: sm90, sm80, sm86/89


def on_device_with(monkeypatch, shared_bytes):
    """Route as on a CUDA device whose blocks may opt in to ``shared_bytes``: CPU tensors stand in for CUDA ones,
    and the launcher's stages are those of a compiled launch (three for half-precision rows of <= 256 bytes, one
    for wider rows), not the interpreter's."""
    from minference.kernels import launch

    monkeypatch.setattr(launch, "_opt_in_shared_bytes", lambda index: shared_bytes)
    monkeypatch.setattr(launch, "launch_options", launch.compiled_launch_options)
    fits = launch.shared_memory_fits
    monkeypatch.setattr(launch, "shared_memory_fits", lambda nbytes, device: fits(
        nbytes, torch.device("cuda", 0)))


@pytest.mark.parametrize("shared_bytes, dtype, head_dim, packed", [
    (H200_SHARED, torch.float16, 128, True),   # 128 query rows + 3 K/V stages: 128 KiB
    (H200_SHARED, torch.float16, 256, True),   # 512-byte rows get one stage: 128 KiB
    (H200_SHARED, torch.float32, 128, True),
    (H200_SHARED, torch.float32, 256, False),  # 1 KiB rows: 256 KiB
    (A100_SHARED, torch.float16, 256, True),
    (CONSUMER_SHARED, torch.float16, 256, False),
    (CONSUMER_SHARED, torch.float16, 128, False),
])
def test_packs_run_unpacked_where_the_device_cannot_hold_their_program(monkeypatch, shared_bytes, dtype, head_dim,
                                                                       packed):
    from minference.kernels import a_shape

    on_device_with(monkeypatch, shared_bytes)
    packs = []
    monkeypatch.setattr(a_shape, "a_shape_forward", lambda *args, pack=1, **kw: packs.append(pack))
    q = torch.randn(1, 4, 64, head_dim).to(dtype)
    ops.a_shape_attention(q, q[:, :2], q[:, :2], 0, 16, backend="triton", gqa_pack=2)
    assert packs == ([2] if packed else [1])


def test_off_the_gpu_every_program_fits():
    """The interpreter has no shared memory to run out of: packs run as asked there."""
    assert launch.program_fits(256, 64, torch.zeros(1, 1, 1, 256))


@pytest.mark.parametrize("head_dim, dtype, pack", [(64, torch.float16, 1), (96, torch.float16, 2),
                                                   (128, torch.float16, 2), (128, torch.float32, 1)])
def test_a_shape_heads_pack_by_default_where_packing_measured_faster(monkeypatch, head_dim, dtype, pack):
    """``gqa_pack=None`` (a_shape_attention) and sparse_attention's window heads use ``default_pack``; bfloat16
    follows float16 (``HALF_DTYPES``) but cannot run under the interpreter."""
    assert default_pack(head_dim, torch.bfloat16) == default_pack(head_dim, torch.float16)
    from minference.kernels import a_shape

    assert default_pack(head_dim, dtype) == pack
    packs = []
    monkeypatch.setattr(a_shape, "a_shape_forward", lambda *args, pack=1, **kw: packs.append(pack))
    q = torch.randn(1, 4, 64, head_dim).to(dtype)
    ops.a_shape_attention(q, q[:, :2], q[:, :2], 0, 16, backend="triton")
    ops.sparse_attention(q, q[:, :2], q[:, :2], [mi.AShape(0, 16)] * 2 + [mi.Dense()] * 2, backend="triton")
    assert packs == [pack, pack]
    packs.clear()
    ops.a_shape_attention(q, q[:, :2], q[:, :2], 0, 16, backend="triton", gqa_pack=1)
    assert packs == [1]


@pytest.mark.parametrize("dtype, head_dim, block_size, expected", [
    (torch.float16, 128, 128, ("block_sparse_forward", True)),
    (torch.float16, 64, 128, ("block_sparse_forward", True)),
    (torch.float32, 128, 128, ("block_sparse_forward", False)),  # float32 tiles: not measured, may not fit
    (torch.float16, 256, 128, ("block_sparse_forward", False)),  # 128 x 256 K/V tiles overflow shared memory
    (torch.float16, 128, 64, ("block_sparse_forward", False)),
])
def test_wide_block_sparse_programs_only_where_their_tiles_fit(monkeypatch, dtype, head_dim, block_size, expected):
    from minference.kernels import block_sparse

    launched = []
    monkeypatch.setattr(block_sparse, "block_sparse_forward",
                        lambda *args, wide=False, **kw: launched.append(("block_sparse_forward", wide)))
    q = torch.randn(1, 2, 256, head_dim).to(dtype)
    blocks = 256 // block_size
    ops.block_sparse_attention(q, q[:, :1], q[:, :1], torch.zeros(1, 2, blocks, 1, dtype=torch.long), block_size,
                               backend="triton")
    assert launched == [expected]


@pytest.mark.parametrize("shared_bytes, wide", [(232448, True), (167936, False)])  # H100/H200, A100 opt-in limits
def test_128_token_blocks_default_to_wide_programs_where_the_device_holds_them(monkeypatch, shared_bytes, wide):
    """In ``block_sparse_attention`` and in ``sparse_attention``'s block-sparse heads, 128-token blocks run as
    128 x 128 tiles when the device's shared memory holds the query tile and three K/V stages (224 KiB at head_dim
    128); 64-token blocks keep 64 rows."""
    from minference.kernels import launch
    from minference.kernels import block_sparse

    assert launch.tile_shared_bytes(128, 128, 128, torch.bfloat16, 3) == 224 * 1024
    assert launch.shared_memory_fits(1 << 40, torch.device("cpu")), "the interpreter has no shared-memory limit"
    monkeypatch.setattr(launch, "_opt_in_shared_bytes", lambda index: shared_bytes)
    assert launch.shared_memory_fits(224 * 1024, torch.device("cuda", 0)) is wide
    # the CPU tensors stand in for CUDA ones: the device's shared memory and the compiled launch's three stages
    # (what launch_options gives half-precision rows of <= 256 bytes off the interpreter) decide
    fits = launch.shared_memory_fits
    monkeypatch.setattr(launch, "shared_memory_fits", lambda nbytes, device: fits(
        nbytes, torch.device("cuda", 0)))
    monkeypatch.setattr(launch, "launch_options", launch.compiled_launch_options)
    launched = []
    monkeypatch.setattr(block_sparse, "block_sparse_forward",
                        lambda *args, wide=False, **kw: launched.append((args[4], wide)))
    q = torch.randn(1, 2, 256, 128).to(torch.float16)
    kv = q[:, :1]
    ops.block_sparse_attention(q, kv, kv, torch.zeros(1, 2, 2, 1, dtype=torch.long), 128, backend="triton")
    ops.block_sparse_attention(q, kv, kv, torch.zeros(1, 2, 4, 1, dtype=torch.long), 64, backend="triton")
    ops.sparse_attention(q, kv, kv, [mi.BlockSparse(top_k=1, block_size=128)] * 2, backend="triton")
    assert launched == [(128, wide), (64, False), (128, wide)]


@pytest.mark.parametrize("shared_bytes, dtype, head_dim, chosen, stages", [
    (H200_SHARED, torch.float16, 128, True, 3),     # 128 query rows + 3 stages of 128-key K/V tiles: 224 KiB
    (H200_SHARED, torch.float16, 256, False, 1),    # 512-byte rows get one stage: 192 KiB
    (H200_SHARED, torch.float32, 128, False, 1),
    (H200_SHARED, torch.float32, 256, False, None),  # 384 KiB even with one stage
    (A100_SHARED, torch.float16, 128, False, 2),    # 224 KiB does not fit in 164 KiB; two stages (160 KiB) do
    (CONSUMER_SHARED, torch.float16, 128, False, 1),
])
def test_the_128_token_vertical_slash_grid_runs_where_its_programs_fit(monkeypatch, shared_bytes, dtype, head_dim,
                                                                       chosen, stages):
    """The 128-token grid is chosen where whole 128 x 128 programs keep their three stages; asked for elsewhere it
    runs with the stages that fit, or is refused by name where not even one does."""
    from minference.kernels import vertical_slash

    on_device_with(monkeypatch, shared_bytes)
    launches = []
    monkeypatch.setattr(vertical_slash, "vertical_slash_forward",
                        lambda q, k, v, index, *args, launch=None: launches.append((index.tile, launch)))
    q = torch.randn(1, 2, 128, head_dim).to(dtype)
    assert launch.wide_tiles_fit(q) == chosen and launch.wide_tile_stages(q) == stages
    index = torch.zeros(1, 2, 1, dtype=torch.long)
    if stages is None:
        with pytest.raises(ValueError, match="tile=128 needs a 128 x 128 program"):
            ops.vertical_slash_attention(q, q[:, :1], q[:, :1], index, index, backend="triton", tile=128)
        return
    ops.vertical_slash_attention(q, q[:, :1], q[:, :1], index, index, backend="triton", tile=128)
    ops.sparse_attention(q, q[:, :1], q[:, :1], mi.VerticalSlash(1, 1), backend="triton", vertical_slash_tile=128)
    ops.vertical_slash_attention(q, q[:, :1], q[:, :1], index, index, backend="triton", tile=64)
    launcher = 3 if dtype == torch.float16 and head_dim <= 128 else 1
    assert launches == [(128, None if stages == launcher else {"num_stages": stages})] * 2 + [(64, None)]


def test_the_default_grid_stops_at_the_length_measured_to_pay(monkeypatch):
    """Without a tile count the default is a length rule: the 128-token grid up to ``WIDE_GRID_MAX_TOKENS``, where
    every index set measured gained, and 64 beyond, where spread diagonals made it lose."""
    monkeypatch.setattr(launch, "wide_grid_possible", lambda q: True)
    row = torch.zeros(1, 1, 1, 128, dtype=torch.float16)
    assert ops.default_vertical_slash_tile(row.expand(1, 1, ops.WIDE_GRID_MAX_TOKENS, 128)) == 128
    assert ops.default_vertical_slash_tile(row.expand(1, 1, ops.WIDE_GRID_MAX_TOKENS + 1, 128)) == 64
    assert planning.vertical_slash_grids(row, None, counting=True) == (64, 128), "a tile count chooses between both"
    assert planning.vertical_slash_grids(row, 64, counting=True) == (64,)


def test_off_the_gpu_vertical_slash_keeps_the_64_token_grid():
    """The device decides the default grid, not the backend: CPU tensors (the torch backend, the interpreter) keep
    64 tokens whatever their dtype."""
    for dtype in (torch.float16, torch.float32):
        assert ops.default_vertical_slash_tile(torch.zeros(1, 1, 1, 128, dtype=dtype)) == 64
