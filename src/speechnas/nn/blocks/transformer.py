"""Pre-LayerNorm Transformer encoder with per-layer attention kind, FFN width and rank."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechnas.nn.blocks._common import (
    as_configs,
    check_choice,
    check_dropout,
    check_heads,
    check_non_negative,
    check_positive,
    check_window,
)
from speechnas.nn.blocks._stack import AttentionStack
from speechnas.nn.blocks.attention import POS_KINDS, MultiHeadSelfAttention, PosKind
from speechnas.nn.blocks.attention_impl import ATTENTION_IMPLS, QKV_LAYOUTS
from speechnas.nn.blocks.feedforward import FeedForward


@dataclass(frozen=True, slots=True)
class TransformerLayerConfig:
    """One Transformer layer. `window` is required with attention="local" and invalid otherwise;
    `attention_impl` and `qkv`: :mod:`~speechnas.nn.blocks.attention_impl`."""

    heads: int = 4
    ffn_dim: int = 1024
    ffn_lowrank: int = 0
    attention: PosKind = "abs"
    window: int | None = None
    dropout: float = 0.1
    attention_impl: str = "sdpa"
    qkv: str = "packed"

    def __post_init__(self) -> None:
        owner = "TransformerLayerConfig"
        check_positive(owner, "heads", self.heads)
        check_positive(owner, "ffn_dim", self.ffn_dim)
        check_non_negative(owner, "ffn_lowrank", self.ffn_lowrank)
        check_choice(owner, "attention", self.attention, POS_KINDS)
        check_window(owner, self.attention, self.window)
        check_dropout(owner, self.dropout)
        check_choice(owner, "attention_impl", self.attention_impl, ATTENTION_IMPLS)
        check_choice(owner, "qkv", self.qkv, QKV_LAYOUTS)


class TransformerLayer(nn.Module):
    """x + MHSA(LN(x)), then x + FFN(x) (the FFN carries its own pre-norm). (B, T, D)."""

    def __init__(
        self,
        d_model: int,
        *,
        heads: int,
        ffn_dim: int,
        ffn_lowrank: int,
        attention: PosKind,
        window: int | None,
        dropout: float,
        attention_impl: str = "sdpa",
        qkv: str = "packed",
    ) -> None:
        super().__init__()
        TransformerLayerConfig(
            heads=heads,
            ffn_dim=ffn_dim,
            ffn_lowrank=ffn_lowrank,
            attention=attention,
            window=window,
            dropout=dropout,
            attention_impl=attention_impl,
            qkv=qkv,
        )  # validates the arguments
        check_heads("TransformerLayer", d_model, heads)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(
            d_model, heads, pos=attention, window=window, impl=attention_impl, qkv=qkv
        )
        self.attn_drop = nn.Dropout(dropout)
        self.ff = FeedForward(d_model, ffn_dim, lowrank=ffn_lowrank, dropout=dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) (unused: nothing here mixes frames but attention),
        mask (B, T, T) → (B, T, D)."""
        x = x + self.attn_drop(self.attn(self.attn_norm(x), mask))
        return x + self.ff(x)

    state_kinds = ("k", "v")

    def init_states(self, batch: int, cache: int) -> list[torch.Tensor]:
        """Key and value caches of the last ``cache`` frames: (B, H, cache, Dh) zeros each."""
        shape = (batch, self.attn.heads, cache, self.attn.head_dim)
        return [torch.zeros(shape), torch.zeros(shape)]

    def streaming_forward(
        self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One chunk (B, C, D) with its states → (B, C, D), new states."""
        y, k, v = self.attn.streaming_forward(self.attn_norm(x), mask, *states)
        x = x + self.attn_drop(y)
        return x + self.ff(x), [k, v]


class TransformerStack(AttentionStack):
    """Pre-LN Transformer layers over (B, T, d_model) → (B, T, d_model), final LayerNorm.

    With `chunk` set, attention sees the own chunk plus `left_chunks` chunks before it.
    """

    def __init__(
        self,
        d_model: int,
        layer_cfgs: Sequence[TransformerLayerConfig | Mapping[str, Any]],
        *,
        chunk: int | None = None,
        left_chunks: int | None = None,
    ) -> None:
        cfgs = as_configs(TransformerLayerConfig, layer_cfgs, "TransformerStack")
        super().__init__(
            d_model,
            cfgs,
            TransformerLayer,
            chunk=chunk,
            left_chunks=left_chunks,
            final_norm=True,
        )
