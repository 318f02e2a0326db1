"""Executed-tile densities for the benchmarks: re-exported from :mod:`minference.index.tiles`, where the op's
density fallback also reads them."""

from ..index.tiles import (  # noqa: F401
    a_shape_density,
    a_shape_tiles,
    block_sparse_density,
    causal_tiles,
    vertical_slash_density,
    vertical_slash_tiles,
)
