"""What a call launches: Dense heads through SDPA, and the vertical-slash loop order by length (host side)."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import poisoned_like, random_qkv
from minference import ops, planning
from minference.index import build_vertical_slash_index
from minference.kernels import vertical_slash as kernels


def expected_dense(q, k, v, heads):
    group = q.shape[1] // k.shape[1]
    kv = [h // group for h in heads]
    return F.scaled_dot_product_attention(q[:, heads].double(), k[:, kv].double(), v[:, kv].double(), is_causal=True)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 2, 4]), st.sampled_from(["bhnd", "bnhd"]), st.data())
def test_dense_heads_through_sdpa_write_exactly_their_heads(kv_heads, group, layout, data):
    """Any subset of query heads, in any order: uniform per K/V head (one call) or not (one call per K/V head)."""
    hq = kv_heads * group
    heads = data.draw(st.lists(st.integers(0, hq - 1), min_size=1, max_size=hq, unique=True))
    q, k, v = random_qkv(2, hq, kv_heads, 37, 16, torch.float32, seed=len(heads), device="cpu", layout=layout)
    out = poisoned_like(q)
    ops._dense_heads_through_sdpa(q, k, v, heads, out, None)
    torch.testing.assert_close(out[:, heads].double(), expected_dense(q, k, v, heads), rtol=1e-5, atol=1e-6)
    others = [h for h in range(hq) if h not in heads]
    assert out[:, others].isnan().all(), "heads not listed stay untouched"


@pytest.mark.parametrize("one_call_bytes, calls", [(1 << 30, 1), (0, 2)])
def test_dense_heads_through_sdpa_bound_their_copy_with_one_call_per_kv_head(monkeypatch, one_call_bytes, calls):
    """Every K/V head serves two listed heads: one call while their copy is small, else one call per K/V head."""
    made = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(ops.F, "scaled_dot_product_attention", lambda q, *args, **kw: made.append(q.shape[1]) or
                        sdpa(q, *args, **kw))
    monkeypatch.setattr(ops, "SDPA_ONE_CALL_BYTES", one_call_bytes)
    q, k, v = random_qkv(1, 8, 2, 40, 16, torch.float32, seed=3, device="cpu")
    out = poisoned_like(q)
    heads = [0, 2, 5, 7]
    ops._dense_heads_through_sdpa(q, k, v, heads, out, None)
    assert made == ([4] if calls == 1 else [2, 2])
    torch.testing.assert_close(out[:, heads].double(), expected_dense(q, k, v, heads), rtol=1e-5, atol=1e-6)


def test_dense_heads_through_sdpa_honour_the_scale():
    q, k, v = random_qkv(1, 4, 2, 20, 8, torch.float32, seed=1, device="cpu")
    out = poisoned_like(q)
    ops._dense_heads_through_sdpa(q, k, v, [1, 2], out, 0.3)
    kv = [0, 1]
    expected = F.scaled_dot_product_attention(q[:, [1, 2]], k[:, kv], v[:, kv], is_causal=True, scale=0.3)
    torch.testing.assert_close(out[:, [1, 2]], expected)


def test_dense_heads_stay_in_the_window_kernel_off_the_gpu():
    """On the CPU (interpreted kernels) and wherever SDPA cannot stand in, Dense heads are not routed to SDPA."""
    q = torch.randn(1, 2, 8, 16)
    patterns = [ops.AShape(0, 4), ops.Dense()]
    assert not planning.dense_heads_to_sdpa(q, patterns, True, "triton")
    assert not planning.dense_heads_to_sdpa(q, patterns, False, "triton")


def test_vertical_slash_loop_order_switches_at_long_contexts():
    short, long = kernels.loop_order(kernels.LONG_CONTEXT - 1), kernels.loop_order(kernels.LONG_CONTEXT)
    assert short == dict(LOADS_AHEAD=True)
    assert long == dict(LOADS_AHEAD=False)
    parameters = inspect.signature(kernels._vertical_slash_kernel.fn).parameters
    defaults = {name: parameters[name].default for name in short}
    assert defaults == short, "the kernel's own defaults are the short-context order"


@pytest.mark.parametrize("n_ctx, launch, expected", [
    (64, None, kernels.loop_order(64)),
    (kernels.LONG_CONTEXT, None, kernels.loop_order(kernels.LONG_CONTEXT)),
    (64, {"LOADS_AHEAD": False}, {"LOADS_AHEAD": False}),
])
def test_vertical_slash_forward_launches_the_order_for_its_length(monkeypatch, n_ctx, launch, expected):
    launched = {}

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **meta: launched.update(meta)

    monkeypatch.setattr(kernels, "_vertical_slash_kernel", Recorder())
    q = torch.empty(1, 1, n_ctx, 16)
    zeros = torch.zeros(1, 1, 1, dtype=torch.long)
    index = build_vertical_slash_index(n_ctx, zeros, zeros)
    kernels.vertical_slash_forward(q, q, q, index, torch.zeros(1, dtype=torch.int32), q, launch=launch)
    assert {name: launched[name] for name in expected} == expected
