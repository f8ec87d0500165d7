"""Encoder registry and a chain of `(x, lengths) -> (y, lengths)` stages."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from speechnas.nn.blocks.cnn import SeparableConvStack
from speechnas.nn.blocks.conformer import ConformerStack
from speechnas.nn.blocks.ebranchformer import EBranchformerStack
from speechnas.nn.blocks.rnn import LSTMEncoder
from speechnas.nn.blocks.transformer import TransformerStack


def lstm_encoder(
    in_dim: int, hidden: int, layers: int, *, d_model: int | None = None, dropout: float = 0.0
) -> LSTMEncoder:
    """Unidirectional (streamable) LSTM encoder."""
    return LSTMEncoder(
        in_dim, hidden, layers, bidirectional=False, d_model=d_model, dropout=dropout
    )


def blstm_encoder(
    in_dim: int, hidden: int, layers: int, *, d_model: int | None = None, dropout: float = 0.0
) -> LSTMEncoder:
    """Bidirectional LSTM encoder."""
    return LSTMEncoder(in_dim, hidden, layers, bidirectional=True, d_model=d_model, dropout=dropout)


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "conformer": ConformerStack,
    "transformer": TransformerStack,
    "ebranchformer": EBranchformerStack,
    "lstm": lstm_encoder,
    "blstm": blstm_encoder,
    "cnn": SeparableConvStack,
}


def make_encoder(kind: str, **kwargs: Any) -> nn.Module:
    """Build the encoder registered as `kind` with its constructor's arguments."""
    if kind not in ENCODERS:
        raise ValueError(f"encoder kind {kind!r} is unknown; choose from {sorted(ENCODERS)}")
    return ENCODERS[kind](**kwargs)


class EncoderChain(nn.Module):
    """Stages run in order, each `(x, lengths) -> (y, lengths)` with `in_dim`/`out_dim`,
    e.g. frontend → subsampling → encoder. (B, T, in_dim) → (B, T', out_dim)."""

    def __init__(self, *stages: nn.Module) -> None:
        super().__init__()
        if not stages:
            raise ValueError("EncoderChain: expected at least one stage")
        for prev, nxt in itertools.pairwise(stages):
            if prev.out_dim != nxt.in_dim:
                raise ValueError(
                    f"EncoderChain: {type(prev).__name__}.out_dim={prev.out_dim} does not match "
                    f"{type(nxt).__name__}.in_dim={nxt.in_dim}"
                )
        self.stages = nn.ModuleList(stages)
        self.in_dim: int = stages[0].in_dim
        self.out_dim: int = stages[-1].out_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, in_dim), lengths (B,) → y (B, T', out_dim), lengths (B,)."""
        for stage in self.stages:
            x, lengths = stage(x, lengths)
        return x, lengths
