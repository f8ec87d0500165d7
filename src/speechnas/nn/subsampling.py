"""Front-end subsampling of feature frames."""

from __future__ import annotations

import torch
from torch import nn


class Conv2dSubsampling4(nn.Module):
    """Two 3x3 stride-2 convolutions: (B, T, D) → (B, T', d_model), T' = ((T - 1) // 2 - 1) // 2.

    No padding in time, so an output frame sees only real input frames and padding never leaks
    into the valid part of a batch.
    """

    def __init__(self, in_dim: int, d_model: int, *, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
        )
        freq = ((in_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), lengths (B,) → (B, T', d_model), (B,)."""
        y = self.conv(x.unsqueeze(1))  # (B, C, T', D')
        b, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(b, t, c * f))
        return y, self.output_lengths(lengths)
