"""Multi-head self-attention with absolute, relative or local positions, and streaming masks.

Masks are boolean with True meaning "may attend". Every query row always allows itself, so a
padded query (or a zero-length utterance) never sees an empty row and never produces NaN that
could leak into valid frames through a later layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks._common import check_choice, check_heads, check_positive, check_window
from speechnas.nn.blocks.masks import padding_mask, sinusoidal_positions

PosKind = Literal["abs", "rel", "local"]
POS_KINDS: tuple[str, ...] = ("abs", "rel", "local")

__all__ = [
    "POS_KINDS",
    "MultiHeadSelfAttention",
    "PositionalInput",
    "attention_mask",
    "chunk_mask",
    "local_mask",
    "rel_shift",
    "relative_positions",
    "sinusoidal_positions",
]


def chunk_mask(length: int, chunk: int, left_chunks: int | None) -> torch.Tensor:
    """(T, T) bool: frame i sees its own chunk and `left_chunks` chunks before it (None: all)."""
    check_positive("chunk_mask", "chunk", chunk)
    idx = torch.arange(length) // chunk
    q, k = idx[:, None], idx[None, :]
    allowed = k <= q
    if left_chunks is not None:
        allowed = allowed & (k >= q - left_chunks)  # out of place, so the ONNX tracer takes it
    return allowed


def local_mask(length: int, window: int) -> torch.Tensor:
    """(T, T) bool: |i - j| <= window."""
    idx = torch.arange(length)
    return (idx[:, None] - idx[None, :]).abs() <= window


def attention_mask(
    lengths: torch.Tensor,
    length: int,
    *,
    chunk: int | None = None,
    left_chunks: int | None = None,
) -> torch.Tensor:
    """(B,) lengths → (B, T, T) bool: valid keys, within the chunk structure, plus the diagonal."""
    valid = ~padding_mask(lengths, length)  # (B, T)
    mask = valid[:, None, :].expand(-1, length, -1)
    if chunk is not None:
        mask = mask & chunk_mask(length, chunk, left_chunks).to(lengths.device)
    # The diagonal from an index comparison rather than torch.eye: ONNX Runtime has no boolean
    # EyeLike kernel, and this keeps the time axis of an exported graph symbolic.
    idx = torch.arange(length, device=lengths.device)
    return mask | (idx[:, None] == idx[None, :])


def relative_positions(length: int, dim: int) -> torch.Tensor:
    """(2T - 1, D) sinusoidal embeddings of offsets i - j = T-1, T-2, ..., -(T-1).

    The embedding of an offset does not depend on T, which keeps relative attention independent
    of how far a batch is padded.
    """
    pe = sinusoidal_positions(length, dim)  # offsets 0..T-1
    sign = torch.ones(dim)
    sign[0::2] = -1.0  # sin(-x) = -sin(x), cos(-x) = cos(x)
    return torch.cat([pe.flip(0), pe[1:] * sign], dim=0)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """(..., T, 2T - 1) scores by offset column (T-1 - i + j) → (..., T, T) scores by key j."""
    *lead, t, w = x.shape
    assert w == 2 * t - 1, f"rel_shift expects width 2T-1={2 * t - 1}, got {w}"
    # With one zero column appended, rows are 2T wide and row i of the wanted matrix starts at
    # flat index (T - 1) + i * (2T - 1): one slicing for every T, T = 1 included, so a traced
    # graph needs no branch on the length.
    flat = F.pad(x, (0, 1)).reshape(*lead, t * (w + 1))[..., t - 1 : t - 1 + t * w]
    return flat.reshape(*lead, t, w)[..., :t]


class PositionalInput(nn.Module):
    """Scale by sqrt(d_model) and, when `absolute`, add sinusoidal positions once. (B, T, D)."""

    def __init__(self, d_model: int, *, absolute: bool) -> None:
        super().__init__()
        if absolute and d_model % 2:
            raise ValueError(f"d_model: {d_model} must be even for sinusoidal positions")
        self.d_model = d_model
        self.absolute = absolute
        self.scale = math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        if self.absolute:
            x = x + sinusoidal_positions(x.shape[1], self.d_model).to(x)
        return x


class MultiHeadSelfAttention(nn.Module):
    """Self-attention core (no norm, no residual): (B, T, D), mask (B, T, T) → (B, T, D).

    pos="abs": plain attention; positions are added at the stack input.
    pos="rel": Transformer-XL relative positions with learnable biases u (content) and v (position).
    pos="local": plain attention restricted to |i - j| <= window.
    """

    def __init__(
        self, d_model: int, heads: int, *, pos: PosKind = "abs", window: int | None = None
    ) -> None:
        super().__init__()
        owner = "MultiHeadSelfAttention"
        check_heads(owner, d_model, heads)
        check_choice(owner, "pos", pos, POS_KINDS)
        check_window(owner, pos, window)
        if pos == "rel" and d_model % 2:
            raise ValueError(f"{owner}.d_model: {d_model} must be even for relative positions")
        self.heads = heads
        self.head_dim = d_model // heads
        self.pos = pos
        self.window = window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        if pos == "rel":
            self.pos_proj = nn.Linear(d_model, d_model, bias=False)
            self.u = nn.Parameter(torch.empty(heads, self.head_dim))
            self.v = nn.Parameter(torch.empty(heads, self.head_dim))
            nn.init.xavier_uniform_(self.u)
            nn.init.xavier_uniform_(self.v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T, T) True where query i may attend key j → (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).unbind(2)  # (B, T, H, Dh)
        if self.window is not None:
            mask = mask & local_mask(t, self.window).to(mask.device)
        if self.pos == "rel":
            y = self._relative(q, k, v, mask)
        else:
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def _relative(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """q, k, v (B, T, H, Dh) → (B, H, T, Dh)."""
        t = q.shape[1]
        p = self.pos_proj(relative_positions(t, self.heads * self.head_dim).to(q))
        p = p.view(2 * t - 1, self.heads, self.head_dim).transpose(0, 1)  # (H, 2T-1, Dh)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, Dh)
        content = (q + self.u).transpose(1, 2) @ k.transpose(-2, -1)  # (B, H, T, T)
        position = rel_shift((q + self.v).transpose(1, 2) @ p.transpose(-2, -1))  # (B, H, T, T)
        scores = (content + position) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        return torch.softmax(scores, dim=-1) @ v
