"""K/V tiles through TMA tensor descriptors: which tensors qualify, how the choice is made, and that every kernel
computes the same attention through descriptors as through pointers (interpreter on CPU, bf16 on the GPU)."""
import pytest
import torch

from helpers import DEVICE, ON_GPU, assert_matches_reference, poisoned_like, random_qkv
from minference import ops
from minference.index import build_block_sparse_index, build_vertical_slash_index
from minference.kernels import launch
from minference.kernels.a_shape import a_shape_forward
from minference.kernels.block_sparse import block_sparse_forward
from minference.kernels.vertical_slash import vertical_slash_forward


def layout(t, keys=64, block_d=64):
    return launch._descriptor_layout(t, keys, block_d)


def test_descriptor_dims_follow_memory_order():
    bhnd = torch.empty(2, 3, 50, 64, dtype=torch.float16)
    assert layout(bhnd) == ([2, 3, 50, 64], [9600, 3200, 64, 1], [1, 1, 64, 64])
    bnhd = torch.empty(2, 50, 3, 64, dtype=torch.float16).transpose(1, 2)  # what a transformers layer hands over
    assert layout(bnhd) == ([2, 50, 3, 64], [9600, 192, 64, 1], [1, 64, 1, 64])


def test_descriptor_gives_unit_dims_a_stride_tma_accepts():
    # batch 1 and one head: their strides are never used, so odd values there must not disqualify the tensor
    t = torch.empty(40, 64, dtype=torch.float16).as_strided((1, 1, 40, 64), (7, 3, 64, 1))
    shape, strides, block = layout(t)
    assert shape == [1, 1, 40, 64] and strides[2:] == [64, 1] and all(s * 2 % 16 == 0 for s in strides[:3])


@pytest.mark.parametrize("make, why", [
    (lambda: torch.empty(1, 2, 40, 65, dtype=torch.float16)[..., :64], "row stride of 130 bytes"),
    (lambda: torch.empty(5121, dtype=torch.float16)[1:].view(1, 2, 40, 64), "base off 16-byte alignment"),
    (lambda: torch.empty(1, 2, 64, 40, dtype=torch.float16).transpose(-1, -2), "head dim not contiguous"),
])
def test_tensors_tma_cannot_address_fall_back(make, why):
    assert layout(make(), block_d=64) is None, why


def test_narrow_rows_fall_back():
    assert layout(torch.empty(1, 1, 40, 4, dtype=torch.float16), block_d=4) is None  # 8-byte rows
    assert layout(torch.empty(1, 1, 40, 8, dtype=torch.float16), block_d=8) is not None


def test_k_and_v_ordered_differently_fall_back():
    k = torch.empty(1, 2, 40, 64, dtype=torch.float16)
    v = torch.empty(1, 40, 2, 64, dtype=torch.float16).transpose(1, 2)
    assert launch.kv_descriptors(k, v, 64, 64) is None
    assert launch.kv_descriptors(k, k.clone(), 64, 64) is not None


def test_the_setting_decides_and_names_itself(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(launch.TMA_SETTING, raising=False)
    assert launch.tma_wanted(cpu) is False  # no descriptors by default off CUDA
    monkeypatch.setenv(launch.TMA_SETTING, "1")
    assert launch.tma_wanted(cpu) is True
    monkeypatch.setenv(launch.TMA_SETTING, "0")
    assert launch.tma_wanted(cpu) is False
    monkeypatch.setenv(launch.TMA_SETTING, "yes")
    with pytest.raises(ValueError, match="MINFERENCE_TMA must be 0 or 1"):
        launch.tma_wanted(cpu)


@pytest.mark.parametrize("capability, wanted", [((8, 0), False), ((9, 0), True), ((10, 0), False), ((12, 0), False)])
def test_descriptors_are_the_default_where_they_were_measured(monkeypatch, capability, wanted):
    """Hopper only: the A/B was measured on an H200; other architectures keep pointers until measured there."""
    monkeypatch.delenv(launch.TMA_SETTING, raising=False)
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "_compute_capability", lambda index: capability)
    assert launch.tma_wanted(torch.device("cuda", 0)) is wanted


def test_asking_for_tma_on_tensors_it_cannot_address_names_the_launch_option():
    q = torch.zeros(1, 2, 40, 65, dtype=torch.float16, device=DEVICE)[..., :64]
    heads = torch.arange(2, dtype=torch.int32, device=DEVICE)
    one = torch.ones(2, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="launch TMA=True"):
        a_shape_forward(q, q, q, one, one, heads, torch.empty_like(q), launch={"TMA": True})


# --- every kernel, descriptors against pointers -------------------------------------------------------------------

N, SEQLENS = 300, [300, 203]
KINDS = ["vertical_slash", "vertical_slash_wide", "block_sparse16", "block_sparse64", "block_sparse128",
         "block_sparse_wide", "a_shape", "a_shape_packed"]


def run_kind(kind, q, k, v, seqlens, tma):
    """``kind``'s launch with K/V through descriptors or pointers; returns (out, lse, mask)."""
    batch, hq = q.shape[:2]
    gen = torch.Generator().manual_seed(7)
    heads = torch.arange(hq, dtype=torch.int32, device=DEVICE)
    out, lse = poisoned_like(q), torch.full((batch, hq, N), float("nan"), device=DEVICE)
    launch = {"TMA": tma}
    if kind.startswith("vertical_slash"):
        vertical = torch.randint(0, N, (batch, hq, 9), generator=gen)
        slash = torch.randint(0, N, (batch, hq, 5), generator=gen)
        tile = 128 if kind.endswith("wide") else 64
        index = build_vertical_slash_index(N, vertical.to(DEVICE), slash.to(DEVICE), tile)
        vertical_slash_forward(q, k, v, index, heads, out, lse, seqlens, launch=launch)
        return out, lse, ops.vertical_slash_mask(N, vertical, slash, seqlens=seqlens.cpu(), tile=tile)
    if kind.startswith("block_sparse"):
        block_size = {"block_sparse16": 16, "block_sparse128": 128, "block_sparse_wide": 128}.get(kind, 64)
        blocks = -(-N // block_size)
        block_idx = torch.randint(-1, blocks, (batch, hq, blocks, 3), generator=gen)
        index = build_block_sparse_index(block_idx.to(DEVICE))
        block_sparse_forward(q, k, v, index, block_size, heads, out, lse, seqlens, launch=launch,
                                wide=kind == "block_sparse_wide")
        return out, lse, ops.block_sparse_mask(N, block_idx, block_size, seqlens=seqlens.cpu())
    # A-shape: heads 0, 1 share a K/V head and a budget (one pack of two when packed)
    budgets = [(3, 70), (3, 70), (64, 17), (0, 1)][:hq]
    sinks, locals_ = [b[0] for b in budgets], [b[1] for b in budgets]
    pack = 2 if kind == "a_shape_packed" else 1
    if pack == 2:
        heads, sinks_run, locals_run = heads[:2], sinks[:1], locals_[:1]
        budgets = budgets[:2]
    else:
        sinks_run, locals_run = sinks, locals_
    a_shape_forward(q, k, v, torch.tensor(sinks_run, dtype=torch.int32, device=DEVICE),
                       torch.tensor(locals_run, dtype=torch.int32, device=DEVICE), heads, out, lse, seqlens,
                       launch=launch, pack=pack)
    hs = len(budgets)
    mask = ops.a_shape_mask(N, sinks[:hs], locals_[:hs]).expand(batch, hs, N, N)
    return out[:, :hs], lse[:, :hs], mask


@pytest.mark.kernels
@pytest.mark.parametrize("layout_name", ["bhnd", "bnhd"])
@pytest.mark.parametrize("kind", KINDS)
def test_descriptor_loads_equal_pointer_loads(kind, layout_name):
    """Same output through descriptors and pointers, both equal to the masked reference, with NaN in K and V past
    each sequence's length: a TMA tile reads those rows (it only zero-fills past N) and must mask them itself."""
    half = torch.bfloat16 if ON_GPU else torch.float16
    dtype = half if kind == "block_sparse_wide" else (torch.bfloat16 if ON_GPU else torch.float32)
    q, k, v = random_qkv(2, 4, 2, N, 64, dtype, seed=11, layout=layout_name)
    seqlens = torch.tensor(SEQLENS, dtype=torch.int32, device=DEVICE)
    for t in (k, v):
        t[1, :, SEQLENS[1]:] = float("nan")
    assert launch.kv_descriptors(k, v, 64, 64) is not None
    results = {tma: run_kind(kind, q, k, v, seqlens, tma) for tma in (False, True)}
    (out_ptr, lse_ptr, mask), (out_tma, lse_tma, _) = results[False], results[True]
    hs = out_tma.shape[1]  # the packed A-shape run writes the first K/V head's two query heads
    k_ref, v_ref = (torch.nan_to_num(t, nan=0.0)[:, :hs // 2] for t in (k, v))  # padding rows never count
    assert_matches_reference(out_tma, q[:, :hs], k_ref, v_ref, mask.to(DEVICE), seqlens=seqlens,
                             lse=lse_tma, what=f"{kind} {layout_name} through descriptors")
    assert_matches_reference(out_ptr, q[:, :hs], k_ref, v_ref, mask.to(DEVICE), seqlens=seqlens,
                             lse=lse_ptr, what=f"{kind} {layout_name} through pointers")
    if not ON_GPU:  # the interpreter loads the same values either way, so the arithmetic is the same
        assert torch.equal(out_tma, out_ptr) and torch.equal(lse_tma, lse_ptr)
