"""Bad input gets a clear TypeError/ValueError naming the argument, never a crash inside a kernel."""
import pytest
import torch

import minference as mi
from minference import ops


def qkv(b=1, hq=2, hkv=1, n=16, d=64, dtype=torch.float32):
    return torch.randn(b, hq, n, d, dtype=dtype), torch.randn(b, hkv, n, d, dtype=dtype), torch.randn(b, hkv, n, d, dtype=dtype)


def idx(*shape, high=16):
    return torch.randint(0, high, shape)


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: (torch.randn(2, 16, 64), *qkv()[1:]), ValueError, "q must be 4-D"),
        (lambda: (qkv()[0], torch.randn(1, 1, 15, 64), torch.randn(1, 1, 15, 64)), ValueError, "k/v must be"),
        (lambda: (*qkv(hq=3, hkv=2),), ValueError, "multiple of key/value heads"),
        (lambda: (qkv()[0], qkv()[1].half(), qkv()[2]), TypeError, "share a dtype"),
        (lambda: (qkv()[0].int(), qkv()[1].int(), qkv()[2].int()), TypeError, "q must be float"),
        (lambda: (torch.randn(1, 2, 0, 64), torch.randn(1, 1, 0, 64), torch.randn(1, 1, 0, 64)), ValueError, "empty"),
        (lambda: (qkv()[0], qkv()[1], torch.randn(1, 1, 16, 32)), ValueError, "same shape"),
        (lambda: ([1, 2], *qkv()[1:]), TypeError, "q must be a torch.Tensor"),
    ],
)
def test_bad_qkv_is_refused_by_every_op(make, error, words):
    q, k, v = make()
    with pytest.raises(error, match=words):
        mi.sparse_attention(q, k, v, mi.VerticalSlash(4, 4))
    with pytest.raises(error, match=words):
        ops.a_shape_attention(q, k, v, 1, 4)


@pytest.mark.parametrize(
    "vertical, slash, error, words",
    [
        (idx(1, 2, 3).float(), idx(1, 2, 3), TypeError, "vertical_idx must hold integers"),
        (idx(1, 2, 3), idx(1, 3, 3), ValueError, "slash_idx must have shape"),
        (idx(1, 2, 3) + 16, idx(1, 2, 3), ValueError, r"vertical_idx values must lie in \[0, 16\)"),
        (idx(1, 2, 3), idx(1, 2, 3) - 17, ValueError, r"slash_idx values must lie in \[0, 16\)"),
        (idx(2, 3), idx(1, 2, 3), ValueError, "vertical_idx must have shape"),
    ],
)
def test_bad_vertical_slash_indices_are_refused(vertical, slash, error, words):
    with pytest.raises(error, match=words):
        ops.vertical_slash_attention(*qkv(), vertical, slash)
    with pytest.raises(error, match=words):
        ops.vertical_slash_mask(16, vertical, slash)


def test_bad_block_indices_and_block_sizes_are_refused():
    q, k, v = qkv(n=100)
    with pytest.raises(ValueError, match=r"block_idx values must lie in \[-1, 2\)"):
        ops.block_sparse_attention(q, k, v, torch.full((1, 2, 2, 1), 2))
    with pytest.raises(ValueError, match="block_idx must have shape"):
        ops.block_sparse_attention(q, k, v, torch.zeros(1, 2, 3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size must be one of"):
        ops.block_sparse_attention(q, k, v, torch.zeros(1, 2, 2, 1, dtype=torch.long), block_size=48)
    with pytest.raises(TypeError, match="block_idx must hold integers"):
        ops.block_sparse_attention(q, k, v, torch.zeros(1, 2, 2, 1))


def test_bad_vertical_slash_grids_are_refused():
    q, k, v = qkv(n=100)
    index = torch.zeros(1, 2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"tile must be one of \(64, 128\), got 96"):
        ops.vertical_slash_attention(q, k, v, index, index, tile=96)
    with pytest.raises(TypeError, match="tile must be an int"):
        ops.vertical_slash_attention(q, k, v, index, index, tile="128")
    with pytest.raises(ValueError, match=r"tile must be one of \(64, 128\), got 32"):
        ops.vertical_slash_mask(100, index, index, tile=32)
    with pytest.raises(ValueError, match=r"tile must be one of \(64, 128\), got 256"):
        mi.sparse_attention(q, k, v, mi.VerticalSlash(4, 4), vertical_slash_tile=256)


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: mi.VerticalSlash(vertical=0, slash=10), ValueError, "vertical must be >= 1"),
        (lambda: mi.VerticalSlash(vertical=10, slash=-1), ValueError, "slash must be >= 1"),
        (lambda: mi.VerticalSlash(vertical=1.5, slash=10), TypeError, "vertical must be an int"),
        (lambda: mi.AShape(sink=-1, local=10), ValueError, "sink must be >= 0"),
        (lambda: mi.AShape(sink=1, local=0), ValueError, "local must be >= 1"),
        (lambda: mi.BlockSparse(top_k=0), ValueError, "top_k must be >= 1"),
        (lambda: mi.BlockSparse(top_k=4, block_size=24), ValueError, "block_size must be one of"),
    ],
)
def test_bad_budgets_are_refused_when_the_pattern_is_built(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_bad_patterns_argument_is_refused():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="one pattern per query head"):
        mi.sparse_attention(q, k, v, [mi.Dense()])
    with pytest.raises(TypeError, match=r"patterns\[1\] must be"):
        mi.sparse_attention(q, k, v, [mi.Dense(), "dense"])
    with pytest.raises(TypeError, match="patterns must be a pattern"):
        mi.sparse_attention(q, k, v, "dense")


def test_bad_backend_seqlens_and_per_head_budgets_are_refused():
    q, k, v = qkv(b=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        mi.sparse_attention(q, k, v, mi.Dense(), backend="cuda")
    with pytest.raises(ValueError, match=r"seqlens must lie in \[1, 16\]"):
        mi.sparse_attention(q, k, v, mi.Dense(), seqlens=torch.tensor([16, 0]))
    with pytest.raises(ValueError, match=r"seqlens must have shape \(2,\)"):
        mi.sparse_attention(q, k, v, mi.Dense(), seqlens=torch.tensor([16]))
    with pytest.raises(TypeError, match="seqlens must hold integers"):
        mi.sparse_attention(q, k, v, mi.Dense(), seqlens=torch.tensor([16.0, 3.0]))
    with pytest.raises(ValueError, match="local must be an int or one value per query head"):
        ops.a_shape_attention(q, k, v, 1, [4, 4, 4])
    with pytest.raises(ValueError, match="out must be"):
        mi.sparse_attention(q, k, v, mi.AShape(1, 4), out=torch.empty(3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-without-kernels error")
def test_triton_backend_refuses_unsupported_head_dim_and_bf16_under_the_interpreter():
    q, k, v = qkv(d=48)
    with pytest.raises(ValueError, match="head_dim must be one of"):
        mi.sparse_attention(q, k, v, mi.AShape(1, 4), backend="triton")
    q, k, v = qkv(dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16"):
        mi.sparse_attention(q, k, v, mi.AShape(1, 4), backend="triton")


def test_triton_backend_on_cpu_without_the_interpreter_is_an_error(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the triton backend is valid")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        mi.sparse_attention(*qkv(), mi.AShape(1, 4), backend="triton")
