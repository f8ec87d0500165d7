"""Position-wise feed-forward module, optionally with low-rank factorised weights."""

from __future__ import annotations

import torch
from torch import nn

from speechnas.nn.blocks._common import check_dropout, check_non_negative, check_positive


def factorised_linear(in_dim: int, out_dim: int, rank: int) -> nn.Module:
    """Linear(in → out), or in → rank → out through a bias-free bottleneck when rank > 0."""
    if rank == 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, rank, bias=False), nn.Linear(rank, out_dim))


class FeedForward(nn.Module):
    """Pre-norm branch LayerNorm → Linear → SiLU → Linear → Dropout: (B, T, D) → (B, T, D).

    `lowrank` > 0 factorises both maps through a bottleneck: d → r → hidden and hidden → r → d.
    The residual addition (and the macaron half-step) belong to the enclosing layer.
    """

    def __init__(
        self, d_model: int, hidden: int, *, lowrank: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        check_positive("FeedForward", "hidden", hidden)
        check_non_negative("FeedForward", "lowrank", lowrank)
        check_dropout("FeedForward", dropout)
        self.norm = nn.LayerNorm(d_model)
        self.up = factorised_linear(d_model, hidden, lowrank)
        self.act = nn.SiLU()
        self.down = factorised_linear(hidden, d_model, lowrank)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) → (B, T, D)."""
        return self.drop(self.down(self.act(self.up(self.norm(x)))))
