"""Head patterns: budgets, online estimation from q and k, and each pattern's exact mask (the kernels' slow twin)."""
from typing import Union

from .a_shape import AShape
from .base import Pattern
from .block_sparse import BlockSparse
from .dense import Dense
from .vertical_slash import VerticalSlash

AnyPattern = Union[AShape, VerticalSlash, BlockSparse, Dense]

__all__ = ["Pattern", "AnyPattern", "AShape", "VerticalSlash", "BlockSparse", "Dense"]
