"""Pattern choices -> the tile index a kernel walks (sorted, unique, causal-clipped), and that index -> its mask."""
from .a_shape import a_shape_index_mask_rows
from .block_sparse import BlockSparseIndex, block_sparse_index_mask_rows, build_block_sparse_index
from .vertical_slash import TILE, TILES, VerticalSlashIndex, build_vertical_slash_index, vertical_slash_index_mask_rows

__all__ = [
    "TILE",
    "TILES",
    "VerticalSlashIndex",
    "build_vertical_slash_index",
    "vertical_slash_index_mask_rows",
    "BlockSparseIndex",
    "build_block_sparse_index",
    "block_sparse_index_mask_rows",
    "a_shape_index_mask_rows",
]
