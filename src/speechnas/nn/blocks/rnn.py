"""(B)LSTM encoder on packed sequences, so padding never enters the recurrence."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechnas.nn.blocks._common import check_dropout, check_positive, zero_padding
from speechnas.nn.blocks.masks import padding_mask


class LSTMEncoder(nn.Module):
    """(B, T, in_dim), lengths (B,) → (B, T, out_dim), lengths (B,).

    out_dim is `hidden` (unidirectional, streamable) or 2 * hidden (bidirectional), or `d_model`
    when given (a linear projection of the LSTM output). `dropout` sits between LSTM layers.
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
        self.in_dim = in_dim
        self.bidirectional = bidirectional
        self.lstm = nn.LSTM(
            in_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        lstm_dim = 2 * hidden if bidirectional else hidden
        self.proj = nn.Linear(lstm_dim, d_model) if d_model is not None else None
        self.out_dim = d_model if d_model is not None else lstm_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, in_dim), lengths (B,) → y (B, T, out_dim), lengths (B,)."""
        t = x.shape[1]
        # pack_padded_sequence rejects empty rows; a zero-length row runs one frame whose output
        # is zeroed below with the rest of the padding.
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        y, _ = self.lstm(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=t)  # (B, T, lstm_dim)
        if self.proj is not None:
            y = self.proj(y)
        return zero_padding(y, padding_mask(lengths, t)), lengths

    def init_states(self, batch: int) -> list[torch.Tensor]:
        """Hidden and cell states (layers, B, hidden), zeros: a unidirectional LSTM streams."""
        if self.bidirectional:
            raise ValueError("LSTMEncoder: a bidirectional LSTM cannot stream; use lstm, not blstm")
        shape = (self.lstm.num_layers, batch, self.lstm.hidden_size)
        return [torch.zeros(shape), torch.zeros(shape)]

    def state_names(self) -> list[str]:
        return ["h", "c"]

    def streaming_forward(
        self, x: torch.Tensor, lengths: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One chunk x (B, C, in_dim), lengths (B,) → y, lengths, new (h, c); only the last
        chunk of a stream may hold padding."""
        if self.bidirectional:
            raise ValueError("LSTMEncoder: a bidirectional LSTM cannot stream; use lstm, not blstm")
        y, (h, c) = self.lstm(x, (states[0], states[1]))
        if self.proj is not None:
            y = self.proj(y)
        return zero_padding(y, padding_mask(lengths, x.shape[1])), lengths, [h, c]
