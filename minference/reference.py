"""Dense attention in plain torch: the slow twin every kernel is checked against.

Everything here favours being obviously right over being fast: scores are formed in float32 (float64 when the
inputs are float64), GQA is handled by indexing the key/value head of each query head, and the causal mask and any
extra mask are applied explicitly. Rows are processed in chunks so that long sequences fit in memory.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

MaskRows = Callable[[int, int], torch.Tensor]
"""``mask_rows(row_start, row_end) -> bool (B|1, Hq|1, row_end - row_start, N)``: a mask given one row chunk at a time."""


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[Union[torch.Tensor, MaskRows]] = None,
    causal: bool = True,
    *,
    sm_scale: Optional[float] = None,
    upcast: bool = True,
    seqlens: Optional[torch.Tensor] = None,
    rows_per_chunk: int = 1024,
    rows: Optional[tuple[int, int]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (optionally masked) attention with GQA.

    Args:
        q: ``(B, Hq, N, D)`` queries.
        k, v: ``(B, Hkv, N, D)`` keys and values, ``Hq % Hkv == 0``.
        mask: optional boolean mask, ``True`` = attend. Either a tensor broadcastable to ``(B, Hq, N, N)`` or a
            callable returning the rows ``[row_start, row_end)`` of such a mask.
        causal: also require key position ``j <= i``.
        sm_scale: score scale, default ``1 / sqrt(D)``.
        upcast: compute in float32 (float64 for float64 inputs). ``False`` computes the products in the input
            dtype, like a low-precision kernel would; tests use it to measure PyTorch's own rounding error.
        seqlens: optional ``(B,)`` valid lengths of right-padded sequences; keys at or past the length are masked
            and rows at or past it are empty.
        rows_per_chunk: query rows processed at once (bounds memory to ``B * Hq * rows * N`` scores).
        rows: compute only query rows ``[start, end)`` (outputs then cover those rows); for spot checks at long N.

    Returns:
        ``(out, lse)``: ``out (B, Hq, N, D)`` in the compute dtype (float32/float64 when upcasting, else the input
        dtype) and ``lse (B, Hq, N)`` the natural log-sum-exp of the scaled scores in the compute dtype (at least
        float32). A row that attends to nothing has output 0 and lse ``-inf``.

    Raises:
        ValueError: on inconsistent shapes.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, H, N, D); got q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
    batch, hq, n, head_dim = q.shape
    hkv = k.shape[1]
    if k.shape != v.shape or k.shape[0] != batch or k.shape[2] != n or k.shape[3] != head_dim:
        raise ValueError(f"k and v must be (B, Hkv, N, D) matching q{tuple(q.shape)}; got k{tuple(k.shape)} v{tuple(v.shape)}")
    if hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale

    compute_dtype = q.dtype
    if upcast:
        compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    stats_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    kv_head = torch.arange(hq, device=q.device) // (hq // hkv)
    kk = k.index_select(1, kv_head).to(compute_dtype)
    vv = v.index_select(1, kv_head).to(compute_dtype)
    qq = q.to(compute_dtype)

    first, last = (0, n) if rows is None else rows
    if not 0 <= first < last <= n:
        raise ValueError(f"rows must satisfy 0 <= start < end <= {n}, got {rows}")
    out = torch.empty(batch, hq, last - first, head_dim, dtype=compute_dtype, device=q.device)
    lse = torch.empty(batch, hq, last - first, dtype=stats_dtype, device=q.device)
    cols = torch.arange(n, device=q.device)
    for start in range(first, last, rows_per_chunk):
        end = min(last, start + rows_per_chunk)
        row_pos = torch.arange(start, end, device=q.device)
        allowed = torch.ones(1, 1, end - start, n, dtype=torch.bool, device=q.device)
        if causal:
            allowed = allowed & (cols[None, :] <= row_pos[:, None])
        if seqlens is not None:
            valid = seqlens.to(q.device).view(-1, 1, 1, 1)
            allowed = allowed & (cols.view(1, 1, 1, n) < valid) & (row_pos.view(1, 1, -1, 1) < valid)
        if mask is not None:
            chunk_mask = mask(start, end) if callable(mask) else mask[..., start:end, :]
            allowed = allowed & chunk_mask.to(device=q.device, dtype=torch.bool)
        scores = torch.matmul(qq[:, :, start:end], kk.transpose(-1, -2)).to(stats_dtype) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        row_max = scores.amax(dim=-1, keepdim=True)
        safe_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        weights = torch.exp(scores - safe_max)
        denom = weights.sum(dim=-1, keepdim=True)
        probs = torch.where(denom > 0, weights / denom.clamp_min(torch.finfo(stats_dtype).tiny), torch.zeros_like(weights))
        out[:, :, start - first : end - first] = torch.matmul(probs.to(compute_dtype), vv)
        lse[:, :, start - first : end - first] = (safe_max + torch.log(denom)).squeeze(-1)
    return out, lse
