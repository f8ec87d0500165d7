"""Conformer encoder (Gulati et al., 2020): macaron feed-forward, self-attention, convolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.subsampling import Conv2dSubsampling4


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


# Dropout sits only on the residual branches: on a CPU, drawing dropout masks costs as much as
# the matrix products, so the wide inner activations and attention weights go without.
class _FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, hidden),
            nn.SiLU(),
            nn.Linear(hidden, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert d_model % heads == 0, f"d_model {d_model} not divisible by heads {heads}"
        self.heads = heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) True on padding → (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
        mask = ~pad[:, None, None, :]  # (B, 1, 1, T): attend to real frames only
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class _ConvModule(nn.Module):
    """Pointwise → GLU → depthwise → norm → SiLU → pointwise.

    LayerNorm stands in for the paper's BatchNorm so that an utterance's output does not depend
    on the other utterances of its batch.
    """

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        assert kernel % 2 == 1, f"conv kernel must be odd, got {kernel}"
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.dw = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.dw_norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x)), dim=-1)
        y = y.masked_fill(pad[..., None], 0.0)  # padding must read as the zeros beyond the end
        y = self.dw(y.transpose(1, 2)).transpose(1, 2)
        y = self.pw2(F.silu(self.dw_norm(y)))
        return self.drop(y)


class ConformerBlock(nn.Module):
    def __init__(
        self, *, d_model: int, heads: int, ffn_dim: int, kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.ff1 = _FeedForward(d_model, ffn_dim, dropout)
        self.attn = _SelfAttention(d_model, heads, dropout)
        self.conv = _ConvModule(d_model, kernel, dropout)
        self.ff2 = _FeedForward(d_model, ffn_dim, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, pad)
        x = x + self.conv(x, pad)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerEncoder(nn.Module):
    """Features (B, T, D_in) → encodings (B, T', d_model) with T' ≈ T / 4."""

    def __init__(
        self,
        *,
        in_dim: int,
        d_model: int,
        layers: int,
        heads: int,
        ffn_dim: int,
        kernel: int,
        dropout: float,
        subsampling_channels: int,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.subsampling = Conv2dSubsampling4(in_dim, d_model, channels=subsampling_channels)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(
                d_model=d_model, heads=heads, ffn_dim=ffn_dim, kernel=kernel, dropout=dropout
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D_in), lengths (B,) → y (B, T', d_model), lengths (B,)."""
        x, lengths = self.subsampling(x, lengths)
        x = x * math.sqrt(self.d_model) + sinusoidal_positions(x.shape[1], self.d_model).to(x)
        x = self.drop(x)
        pad = padding_mask(lengths, x.shape[1])
        for block in self.blocks:
            x = block(x, pad)
        return x, lengths
