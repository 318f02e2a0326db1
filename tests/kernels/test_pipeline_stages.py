"""The walked loops of every kernel keep the pipeline depth of a loop without indirection (CUDA TTGIR, no GPU).

Loading a loop's block offsets in the same iteration as the K/V tiles they address once cost the vertical-slash
and block-sparse kernels a pipeline stage (4-11 % on an H200, docs/benchmarks.md) and nothing else showed it.
"""
import json
import os
import subprocess
import sys

import pytest

from minference.kernels import pipeline_stages


def compiled_depths(*options: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "minference.kernels.pipeline_stages", "--arch", "90", "--json",
                           "--a-shape-pack", "2", *options],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sm90_depths():
    return compiled_depths()


@pytest.fixture(scope="module")
def sm90_tma_depths():
    return compiled_depths("--tma")


def test_every_kernel_pipelines_its_key_tiles_three_deep_on_hopper(sm90_depths):
    # the launcher asks for 3 stages at bf16 head_dim 128; the A-shape loops walk contiguous blocks (no indirection)
    assert sm90_depths["a_shape"] and set(sm90_depths["a_shape"]) == {3}
    assert sm90_depths["vertical_slash"] and set(sm90_depths["vertical_slash"]) == {3}
    assert sm90_depths["block_sparse"] and set(sm90_depths["block_sparse"]) == {3}
    assert sm90_depths["a_shape_pack2"] and set(sm90_depths["a_shape_pack2"]) == {3}  # GQA-packed, 8 warps
    assert sm90_depths["block_sparse_wide"] and set(sm90_depths["block_sparse_wide"]) == {3}  # 128 x 128 tiles
    assert sm90_depths["vertical_slash_wide"] and set(sm90_depths["vertical_slash_wide"]) == {3}  # 128-token grid


# K and V of every walk: a loop the pipeliner gives up on keeps single-buffered tiles, which tile_buffer_depths
# does not list, so the counts catch it (the vertical-slash column loop did, once its ids loaded two chunks ahead)
PIPELINED_TILES = {"vertical_slash": 4, "vertical_slash_wide": 4, "block_sparse": 2, "block_sparse_wide": 2, "a_shape": 10,
                   "a_shape_pack2": 10}


@pytest.mark.parametrize("kernel", sorted(PIPELINED_TILES))
def test_no_walk_loses_its_pipeline(sm90_depths, sm90_tma_depths, kernel):
    assert len(sm90_depths[kernel]) == PIPELINED_TILES[kernel], sm90_depths[kernel]
    assert len(sm90_tma_depths[kernel]) == PIPELINED_TILES[kernel], sm90_tma_depths[kernel]


# loops that mask their tiles (the diagonal, the A-shape edges) zero V past the sequence after a TMA load, which
# leaves that loop's V two buffers; these are the few masked tiles of a row, not its walk
MASKED_LOOPS = {"vertical_slash": 0, "vertical_slash_wide": 0, "block_sparse": 0, "block_sparse_wide": 0, "a_shape": 3,
                "a_shape_pack2": 3}


@pytest.mark.parametrize("kernel", sorted(MASKED_LOOPS))
def test_tma_loads_keep_the_walks_three_deep_on_hopper(sm90_tma_depths, kernel):
    depths = sm90_tma_depths[kernel]
    assert depths and set(depths) <= {2, 3}, depths
    assert depths.count(2) <= MASKED_LOOPS[kernel], depths


def test_tile_buffer_depths_reads_only_multibuffered_tiles_of_the_given_shape():
    ttgir = "\n".join([
        "%0 = ttg.local_alloc : () -> !ttg.memdesc<3x64x128xbf16, #shared, #smem, mutable>",
        "%1 = ttg.local_alloc : () -> !ttg.memdesc<2x64x128xbf16, #shared, #smem, mutable>",
        "%2 = ttg.local_alloc %q : (tensor<64x128xbf16>) -> !ttg.memdesc<64x128xbf16, #shared, #smem>",
        "%3 = ttg.local_alloc : () -> !ttg.memdesc<2x64xi32, #shared1, #smem, mutable>",
        "%4 = ttg.local_alloc : () -> !ttg.memdesc<4x64x64xf16, #shared, #smem, mutable>",
        "%5 = ttg.local_alloc : () -> !ttg.memdesc<3x1x1x64x128xbf16, #shared, #smem, mutable>",  # a TMA tile
    ])
    assert pipeline_stages.tile_buffer_depths(ttgir) == [3, 2, 3]
    assert pipeline_stages.tile_buffer_depths(ttgir, head_dim=64) == [4]
    assert pipeline_stages.tile_buffer_depths(ttgir, head_dim=80) == [3, 2, 3]  # 80 is padded to a 128-wide tile
    assert pipeline_stages.tile_buffer_depths(ttgir, rows=32) == []


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="kernel must be one of"):
        pipeline_stages.compile_ttgir("dense")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pipeline_stages.compile_ttgir("a_shape", dtype="fp8")
    with pytest.raises(ValueError, match="pack applies to the a_shape kernel only"):
        pipeline_stages.compile_ttgir("block_sparse", pack=2)
