"""Look-ahead for streaming encoders: each frame sees a bounded number of future frames.

A chunk-masked encoder sees no frame beyond its chunk. Look-ahead adds ``frames`` frames of
future context once, right after the subsampling, as a residual depthwise convolution over the
frame and the ``frames`` frames after it (the look-ahead convolution of Deep Speech 2). Putting
it in one place keeps the look-ahead of every layer above exact and bounded: a chunk is ready as
soon as ``frames`` frames past its end have arrived, whatever the depth of the encoder (a
right-context mask in every attention layer would let the look-ahead grow with each layer).
The convolution starts at zero, so a new look-ahead stage begins as the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks._common import check_positive, zero_padding
from speechnas.nn.blocks.masks import padding_mask

__all__ = ["Lookahead"]


class Lookahead(nn.Module):
    """(B, T, D), lengths (B,) → (B, T, D), lengths: y_t = x_t + Σ_{k=0..R} w_k ⊙ x_{t+k} + b,
    frames past an utterance's end read as zeros.

    ``active`` (at most ``frames``, default ``frames``) runs it with less look-ahead, the first
    ``active + 1`` taps only: a model trained with varied look-ahead serves every value."""

    def __init__(self, d_model: int, frames: int) -> None:
        super().__init__()
        check_positive("Lookahead", "d_model", d_model)
        check_positive("Lookahead", "frames", frames)
        self.in_dim = d_model
        self.out_dim = d_model
        self.frames = frames
        self.active = frames  # look-ahead in use: fewer frames use the first taps only
        self.conv = nn.Conv1d(d_model, d_model, frames + 1, groups=d_model)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), lengths (B,) → y (B, T, D), lengths (B,)."""
        y = zero_padding(x, padding_mask(lengths, x.shape[1])).transpose(1, 2)
        return x + self._conv(F.pad(y, (0, self.active))).transpose(1, 2), lengths

    def chunk(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """A chunk and its look-ahead x (B, C + R, D), of which ``valid`` (B,) frames exist →
        the chunk's C output frames (B, C, D), equal to :meth:`forward` over the stream."""
        y = zero_padding(x, padding_mask(valid, x.shape[1])).transpose(1, 2)
        c = x.shape[1] - self.active
        return x[:, :c] + self._conv(y).transpose(1, 2)

    def _conv(self, y: torch.Tensor) -> torch.Tensor:
        if self.active == self.frames:
            return self.conv(y)
        weight = self.conv.weight[..., : self.active + 1]
        return F.conv1d(y, weight, self.conv.bias, groups=self.conv.groups)
