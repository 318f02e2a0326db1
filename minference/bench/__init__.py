"""Library side of benchmarking: declared sweeps, index sets that look like real heads, timing, reports.

- :mod:`.shapes` declares the sweeps (frozen dataclasses).
- :mod:`.index_sets` makes vertical-slash and block-sparse indices: ``local_heavy``, ``measured``, ``random``.
- :mod:`.density` counts the tiles each kernel executes (density = executed tiles / causal tiles).
- :mod:`.timing` times a call with CUDA events after a warm-up (median over rotated inputs).
- :mod:`.kernels` runs a sweep: every pattern and the dense baselines, one :class:`~.kernels.Row` per
measurement.
- :mod:`.report` writes the markdown table, the JSON and the PNG chart.
- :mod:`.cli` is ``minference bench kernels``.

Nothing here touches the GPU at import time.
"""

from .density import causal_tiles, vertical_slash_density, block_sparse_density, a_shape_density
from .shapes import Shape, Sweep, SWEEPS

__all__ = [
    "Shape",
    "Sweep",
    "SWEEPS",
    "causal_tiles",
    "vertical_slash_density",
    "block_sparse_density",
    "a_shape_density",
]
