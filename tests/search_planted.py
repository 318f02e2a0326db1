"""Synthetic q/k/v whose attention has a known pattern per head (shared by the search tests)."""
from __future__ import annotations

import torch

PLANTED = ("vertical_slash", "vertical_slash", "block_sparse", "a_shape")
"""What each planted head should be searched as: vertical lines, diagonals, blocks, a local window."""


def _rotary(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    angles = positions.view(-1, 1).float() * freqs.view(1, -1)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def planted_qkv(n: int = 2048, head_dim: int = 64, seed: int = 0):
    """``q, k, v (1, 4, n, head_dim)`` float32; heads: vertical, slash, block, local (see :data:`PLANTED`)."""
    g = torch.Generator().manual_seed(seed)
    half = head_dim // 2
    pos = torch.arange(n)
    q = torch.zeros(4, n, head_dim)
    k = torch.zeros(4, n, head_dim)
    noise = lambda: 0.3 * torch.randn(n, head_dim, generator=g)

    # vertical: a dozen key columns that every later query matches strongly
    u = torch.zeros(head_dim)
    u[0] = 1.0
    columns = torch.linspace(150, n - 200, 12).long()
    q[0] = 4.0 * u + noise()
    k[0] = noise()
    k[0, columns] += 28.0 * u

    # slash: q_i . k_j peaks where i - j is one of two offsets (high rotary frequencies defeat block pooling)
    freqs = 0.5 + 2.5 * torch.rand(half, generator=g)
    offsets = (411, 1333)
    k[1] = 1.6 * _rotary(pos, freqs)
    q[1] = 1.6 * sum(_rotary(pos - o, freqs) for o in offsets)

    # blocks: key blocks carry one of 8 directions; each query block looks for the direction of one earlier block
    blocks = -(-n // 64)
    key_dir = torch.randint(0, 8, (blocks,), generator=g)
    target = torch.tensor([int(torch.randint(0, m + 1, (1,), generator=g)) for m in range(blocks)])
    directions = torch.eye(head_dim)[:8]
    k[2] = 5.0 * directions[key_dir[pos // 64]] + noise()
    q[2] = 5.0 * directions[key_dir[target[pos // 64]]] + noise()

    # local: low rotary frequencies make a smooth bump of width ~40 around the diagonal
    slow = 0.02 + 0.04 * torch.rand(half, generator=g)
    k[3] = 2.2 * _rotary(pos, slow)
    q[3] = 2.2 * _rotary(pos, slow)

    v = torch.randn(4, n, head_dim, generator=g)
    return q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)


def planted_retrieval_qkv(n: int = 2048, head_dim: int = 64, far: int = 300, seed: int = 0):
    """``q, k, v (1, 1, n, head_dim)``: a wide local window on every row, and a far key column ``far`` that only the
    last 64 query rows (those that produce the answer) attend to, almost exclusively.

    Over all rows an A-shape window keeps the most attention for its cost (the last rows are 1/32 of them at 2048),
    but it drops the far column the last rows need; vertical-slash, estimated from the last 64 queries, keeps it.
    """
    g = torch.Generator().manual_seed(seed)
    half = 16
    slow = 0.002 + 0.004 * torch.rand(half, generator=g)  # low rotary frequencies: a bump ~200 keys wide
    q = torch.zeros(n, head_dim)
    k = torch.zeros(n, head_dim)
    q[:, : 2 * half] = 1.6 * _rotary(torch.arange(n), slow)
    k[:, : 2 * half] = 1.6 * _rotary(torch.arange(n), slow)
    q[-64:, 2 * half + 8] = 10.0  # the question ...
    k[far, 2 * half + 8] = 10.0  # ... and the far key holding its answer
    v = torch.randn(1, 1, n, head_dim, generator=g)
    return q.view(1, 1, n, head_dim), k.view(1, 1, n, head_dim), v
