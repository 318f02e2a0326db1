"""The kernel of ``bench/probes/hopper_body_probe.py`` (dense causal attention through TMA tensor descriptors) computes
causal attention, so the timings it reports are of a correct kernel."""
import sys
from pathlib import Path

import pytest
import torch
from helpers import DEVICE, ON_GPU, assert_matches_reference, random_qkv

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "probes"))
import hopper_body_probe  # noqa: E402

pytestmark = pytest.mark.kernels
GPU_WITHOUT_TMA = ON_GPU and torch.cuda.get_device_capability()[0] < 9


CASES = [(variant, False) for variant in hopper_body_probe.VARIANTS] + \
    [(variant, True) for variant in hopper_body_probe.BLOCK_ID_VARIANTS]


@pytest.mark.skipif(GPU_WITHOUT_TMA, reason="tensor-descriptor (TMA) loads need sm90 or newer")
@pytest.mark.parametrize("variant, block_ids", CASES,
                         ids=lambda case: "{}x{}-w{}-s{}-ws{}".format(*case) if isinstance(case, tuple) else
                         ("block-ids" if case else "in-order"))
def test_tma_probe_kernel_equals_causal_reference(variant, block_ids):
    block_m, block_n, warps, stages, warp_specialize = variant
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    q, k, v = random_qkv(2, 4, 2, 256, 64, dtype, seed=block_m + block_n + warps)
    try:
        out = hopper_body_probe.tma_attention(q, k, v, block_m, block_n, warps, stages, warp_specialize, block_ids)
    except RuntimeError as error:  # the probe records such variants as errors; a wrong result is never excused
        if ON_GPU and "PassManager" in str(error):
            pytest.xfail(f"this Triton cannot compile the variant: {error}")
        raise
    mask = torch.ones(256, 256, dtype=torch.bool, device=DEVICE).tril()
    assert_matches_reference(out, q, k, v, mask, what=f"tma probe {variant}, block ids {block_ids}")


def test_tma_probe_refuses_lengths_its_tiles_do_not_divide():
    q = torch.zeros(1, 2, 100, 64, device=DEVICE)
    with pytest.raises(ValueError, match=r"N \(100\) must be a multiple of BLOCK_M \(64\)"):
        hopper_body_probe.tma_attention(q, q[:, :1], q[:, :1], 64, 64, 4, 3, False)
