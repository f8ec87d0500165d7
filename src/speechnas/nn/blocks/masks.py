"""Padding masks and sinusoidal positions, shared by every encoder block and decoder."""

from __future__ import annotations

import math

import torch

__all__ = ["padding_mask", "sinusoidal_positions"]


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths → (B, T) bool, True on padded frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(T, D) absolute sinusoidal position encoding."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe
