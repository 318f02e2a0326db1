"""Pattern choices -> the tile index a kernel walks (sorted, unique, causal-clipped), and that index -> its mask."""
from .a_shape import a_shape_index_mask_rows
from .block_sparse import (
    BlockSparseIndex,
    BlockSparseKeep,
    block_sparse_index_mask_rows,
    block_sparse_keep,
    block_sparse_keeps,
    build_block_sparse_index,
)
from .vertical_slash import (
    TILE,
    TILES,
    VerticalSlashIndex,
    VerticalSlashKeep,
    build_vertical_slash_index,
    vertical_slash_gathers,
    vertical_slash_index_mask_rows,
    vertical_slash_keep,
    vertical_slash_keeps,
    vertical_slash_kept_tiles,
    vertical_slash_walks,
)

__all__ = [
    "TILE",
    "TILES",
    "VerticalSlashIndex",
    "build_vertical_slash_index",
    "vertical_slash_index_mask_rows",
    "VerticalSlashKeep",
    "vertical_slash_keep",
    "vertical_slash_keeps",
    "vertical_slash_walks",
    "vertical_slash_gathers",
    "vertical_slash_kept_tiles",
    "BlockSparseIndex",
    "build_block_sparse_index",
    "block_sparse_index_mask_rows",
    "BlockSparseKeep",
    "block_sparse_keep",
    "block_sparse_keeps",
    "a_shape_index_mask_rows",
]
