"""Shared test helpers: random inputs, and a verbose comparison against the float64 reference."""
from __future__ import annotations

from typing import Optional

import torch

from minference import reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16) if ON_GPU else (torch.float32, torch.float16)


def random_qkv(batch, hq, hkv, n, head_dim, dtype, seed, *, device=DEVICE, layout="bhnd"):
    """Random q ``(B, Hq, N, D)`` and k, v ``(B, Hkv, N, D)``. ``layout="bnhd"`` returns transposed views
    (non-contiguous, as a transformers attention layer hands them over)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def draw(heads):
        if layout == "bnhd":
            x = torch.randn(batch, n, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
            return x.transpose(1, 2)
        return torch.randn(batch, heads, n, head_dim, generator=gen).to(device=device, dtype=dtype)

    return draw(hq), draw(hkv), draw(hkv)


def poisoned_like(q: torch.Tensor) -> torch.Tensor:
    """An output buffer full of NaN: a row the kernel forgets to write fails the comparison loudly."""
    return torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)


def _worst(err: torch.Tensor, k: int = 5) -> str:
    flat = err.flatten()
    values, where = flat.topk(min(k, flat.numel()))
    coords = [tuple(int(c) for c in torch.unravel_index(torch.tensor(w), err.shape)) for w in where.tolist()]
    return ", ".join(f"{c}: {v:.3g}" for c, v in zip(coords, values.tolist()))


def assert_matches_reference(
    out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask,
    *,
    seqlens: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
    what: str = "",
) -> None:
    """``out`` equals masked attention within 2x PyTorch's own low-precision error plus a rounding floor.

    Truth is the float64 reference, except for half-precision inputs on the GPU (float32 there: float64 matmuls are
    slow, and float32's error is far below bf16/fp16's). A float32 input always gets a float64 truth: against a
    float32 truth, PyTorch's own error and the rounding floor are both zero and the tolerance would shrink to 1e-6,
    below what a different summation order with hardware ``exp2`` produces over thousands of keys.
    PyTorch's own error is the same reference computed in the input dtype; the floor is twice the cost of rounding
    the truth to that dtype.
    """
    exact = q.device.type == "cpu" or q.dtype == torch.float32
    truth_dtype = torch.float64 if exact else torch.float32
    truth, truth_lse = reference.attention(
        q.to(truth_dtype), k.to(truth_dtype), v.to(truth_dtype), mask=mask, seqlens=seqlens
    )
    low, low_lse = reference.attention(q, k, v, mask=mask, seqlens=seqlens, upcast=False)
    assert not torch.isnan(out).any(), f"{what}: NaN in output (unwritten rows?) at {_worst(torch.isnan(out).double())}"
    truth = truth.double()
    torch_err = (low.double() - truth).abs().max().item()
    floor = 2 * (truth.to(q.dtype).double() - truth).abs().max().item() + 1e-6
    err = (out.double() - truth).abs()
    tol = 2 * torch_err + floor
    assert err.max().item() <= tol, (
        f"{what}: max error {err.max().item():.3g} > tol {tol:.3g} (torch low-precision error {torch_err:.3g}, "
        f"floor {floor:.3g}); worst at {_worst(err)}"
    )
    if lse is not None:
        truth_lse = truth_lse.double()
        finite = torch.isfinite(truth_lse)
        assert torch.equal(torch.isfinite(lse), finite), f"{what}: lse is -inf exactly where a row is empty"
        lse_torch_err = (low_lse.double() - truth_lse)[finite].abs().max().item() if finite.any() else 0.0
        lse_err = (lse.double() - truth_lse)[finite].abs()
        lse_tol = 2 * lse_torch_err + 1e-5
        if lse_err.numel():
            assert lse_err.max().item() <= lse_tol, f"{what}: lse error {lse_err.max().item():.3g} > {lse_tol:.3g}"
