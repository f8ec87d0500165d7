"""(B)LSTM encoder: pre-norm residual LSTM layers; padding never reaches a valid frame.

Each layer is ``x + dropout(proj(LSTM(LayerNorm(x))))`` and the stack ends in a LayerNorm, the
Transformer's pre-norm layout with an LSTM as the sequence mixer. A plain stack of ``nn.LSTM``
layers did not learn within the step budgets the search trains at: PyTorch's initialisation
leaves every layer's output near 0.03 standard deviation whatever its input, so the input's
signal fades with depth, and 4- and 6-layer stacks sat at 92% dev WER (LSTM) and 100% (BLSTM)
after 1,000 steps where Conformers and Transformers of the same table reach 25-35%. The norm
gives every layer a unit-scale input and the residual carries the input past it, as in
residual LSTM acoustic models.

Padding sits after each row's frames, and a forward recurrence never reads ahead, so the
forward direction runs on the padded batch as it is. The backward direction runs forward over
each row reversed within its own length (padding still last) and is reversed back. Both are
exact for the valid frames, and on CPU they train about 2.5 times faster than
``pack_padded_sequence`` (measured: a 4-layer 192/256 stack, forward and backward, one thread).
"""

from __future__ import annotations

import torch
from torch import nn

from speechnas.nn.blocks._common import check_dropout, check_positive, zero_padding
from speechnas.nn.blocks.masks import padding_mask


def reverse_within(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, D) with every row's first ``lengths[b]`` frames reversed and its padding left in
    place; its own inverse. ``lengths`` None: every row is full length."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    n = lengths.to(x.device)[:, None]  # (B, 1)
    index = torch.where(t < n, n - 1 - t, t)  # (B, T)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))


class LSTMLayer(nn.Module):
    """(B, T, d) → (B, T, d): ``x + dropout(proj(LSTM(LayerNorm(x))))``."""

    def __init__(self, d: int, hidden: int, *, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.lstm = nn.LSTM(d, hidden, batch_first=True)
        self.lstm_back = nn.LSTM(d, hidden, batch_first=True) if bidirectional else None
        self.proj = nn.Linear(2 * hidden if bidirectional else hidden, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d), lengths (B,) or None (every row full length) → (B, T, d)."""
        return self.step(x, lengths, None)[0]

    def step(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None,
        state: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The layer with its forward direction started from ``state`` (None: zeros) → its
        output and the forward direction's last (h, c)."""
        n = self.norm(x)
        y, hc = self.lstm(n, state)
        if self.lstm_back is not None:
            back, _ = self.lstm_back(reverse_within(n, lengths))
            y = torch.cat([y, reverse_within(back, lengths)], dim=-1)
        return x + self.dropout(self.proj(y)), hc


class LSTMEncoder(nn.Module):
    """(B, T, in_dim), lengths (B,) → (B, T, out_dim), lengths (B,).

    ``layers`` pre-norm residual LSTM layers (:class:`LSTMLayer`) of ``hidden`` units per
    direction on a ``d_model``-wide residual stream (``in_dim`` when not given; a linear layer
    maps ``in_dim`` to it when they differ); ``out_dim`` is that width. Unidirectional layers
    stream (``streaming_forward``); bidirectional ones (``bidirectional=True``) read the future.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        layers: int,
        *,
        bidirectional: bool = False,
        d_model: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        owner = "LSTMEncoder"
        for name, value in (("in_dim", in_dim), ("hidden", hidden), ("layers", layers)):
            check_positive(owner, name, value)
        if d_model is not None:
            check_positive(owner, "d_model", d_model)
        check_dropout(owner, dropout)
        d = d_model if d_model is not None else in_dim
        self.in_dim = in_dim
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.inp = nn.Linear(in_dim, d) if d != in_dim else None
        self.layers = nn.ModuleList(
            LSTMLayer(d, hidden, bidirectional=bidirectional, dropout=dropout)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d)
        self.out_dim = d

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, in_dim), lengths (B,) → y (B, T, out_dim), lengths (B,)."""
        pad = padding_mask(lengths, x.shape[1])
        if self.inp is not None:
            x = self.inp(x)
        for layer in self.layers:
            x = layer(x, lengths)
        return zero_padding(self.norm(x), pad), lengths

    def _check_streamable(self) -> None:
        if self.bidirectional:
            raise ValueError("LSTMEncoder: a bidirectional LSTM cannot stream; use lstm, not blstm")

    def init_states(self, batch: int) -> list[torch.Tensor]:
        """Hidden and cell states (layers, B, hidden), zeros: a unidirectional LSTM streams."""
        self._check_streamable()
        shape = (len(self.layers), batch, self.hidden)
        return [torch.zeros(shape), torch.zeros(shape)]

    def state_names(self) -> list[str]:
        return ["h", "c"]

    def streaming_forward(
        self, x: torch.Tensor, lengths: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One chunk x (B, C, in_dim), lengths (B,) → y, lengths, new (h, c); only the last
        chunk of a stream may hold padding."""
        self._check_streamable()
        if self.inp is not None:
            x = self.inp(x)
        hs, cs = [], []
        for i, layer in enumerate(self.layers):
            x, (h, c) = layer.step(x, None, (states[0][i : i + 1], states[1][i : i + 1]))
            hs.append(h)
            cs.append(c)
        y = zero_padding(self.norm(x), padding_mask(lengths, x.shape[1]))
        return y, lengths, [torch.cat(hs), torch.cat(cs)]
