import math

import pytest
import torch

from minference import reference


def naive_attention(q, k, v, keep):
    """Textbook softmax attention in float64 with K/V repeated per query head."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).double()
    v = v.repeat_interleave(group, dim=1).double()
    scores = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v, torch.logsumexp(scores, dim=-1)


@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2), (3, 1)])
def test_causal_reference_matches_textbook_softmax(hq, hkv):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, hq, 37, 16), torch.randn(2, hkv, 37, 16), torch.randn(2, hkv, 37, 16)
    out, lse = reference.attention(q, k, v)
    keep = torch.ones(37, 37, dtype=torch.bool).tril()
    want, want_lse = naive_attention(q, k, v, keep)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-5)


def test_masked_reference_matches_textbook_softmax_and_empty_rows_are_zero():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 20, 8, dtype=torch.float64) for _ in range(3))
    keep = torch.rand(1, 2, 20, 20) < 0.3
    keep[..., 5, :] = False
    out, lse = reference.attention(q, k, v, mask=keep, causal=False)
    assert torch.all(out[..., 5, :] == 0) and torch.all(lse[..., 5] == float("-inf"))
    rows = keep.any(-1)
    want, want_lse = naive_attention(q, k, v, keep)
    torch.testing.assert_close(out[rows], want[rows])
    torch.testing.assert_close(lse[rows], want_lse[rows])


def test_row_chunking_and_callable_mask_do_not_change_the_result():
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, h, 50, 8, dtype=torch.float64) for h in (2, 1, 1))
    keep = torch.rand(1, 2, 50, 50) < 0.5
    whole, whole_lse = reference.attention(q, k, v, mask=keep)
    chunked, chunked_lse = reference.attention(q, k, v, mask=lambda a, b: keep[..., a:b, :], rows_per_chunk=7)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_lse, whole_lse, rtol=1e-12, atol=1e-12)


def test_seqlens_hide_padding_keys_and_empty_padding_rows():
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 1, 12, 8), torch.randn(2, 1, 12, 8), torch.randn(2, 1, 12, 8)
    out, lse = reference.attention(q, k, v, seqlens=torch.tensor([12, 7]))
    alone, alone_lse = reference.attention(q[1:, :, :7], k[1:, :, :7], v[1:, :, :7])
    torch.testing.assert_close(out[1, :, :7], alone[0])
    assert torch.all(out[1, :, 7:] == 0) and torch.all(lse[1, :, 7:] == float("-inf"))


def test_reference_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple"):
        reference.attention(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))
    with pytest.raises(ValueError, match="4-D"):
        reference.attention(torch.randn(3, 4, 8), torch.randn(3, 4, 8), torch.randn(3, 4, 8))
