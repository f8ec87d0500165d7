"""Heterogeneous Conformer stack: every layer has its own FFN width, rank, kernel and order."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks._common import (
    DepthwiseConv1d,
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
from speechnas.nn.blocks.feedforward import FeedForward

ModuleOrder = Literal["mhsa_first", "conv_first"]
MODULE_ORDERS: tuple[str, ...] = ("mhsa_first", "conv_first")


@dataclass(frozen=True, slots=True)
class ConformerLayerConfig:
    """One Conformer layer. `window` is required with attention="local" and invalid otherwise."""

    heads: int = 4
    ffn_dim: int = 256
    ffn_lowrank: int = 0
    kernel: int = 15
    macaron: bool = True
    module_order: ModuleOrder = "mhsa_first"
    attention: PosKind = "rel"
    window: int | None = None
    dropout: float = 0.1

    def __post_init__(self) -> None:
        owner = "ConformerLayerConfig"
        check_positive(owner, "heads", self.heads)
        check_positive(owner, "ffn_dim", self.ffn_dim)
        check_non_negative(owner, "ffn_lowrank", self.ffn_lowrank)
        check_positive(owner, "kernel", self.kernel)
        check_choice(owner, "macaron", self.macaron, (True, False))
        check_choice(owner, "module_order", self.module_order, MODULE_ORDERS)
        check_choice(owner, "attention", self.attention, POS_KINDS)
        check_window(owner, self.attention, self.window)
        check_dropout(owner, self.dropout)


class ConvModule(nn.Module):
    """LayerNorm → pointwise → GLU → depthwise → LayerNorm → SiLU → pointwise → Dropout.

    LayerNorm replaces the paper's BatchNorm so an utterance's output does not depend on its
    batch; padded frames are zeroed before the depthwise conv, which is causal when streaming.
    """

    def __init__(self, d_model: int, kernel: int, *, causal: bool, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.dw = DepthwiseConv1d(d_model, kernel, causal=causal)
        self.dw_norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) → (B, T, D)."""
        y = F.glu(self.pw1(self.norm(x)), dim=-1)
        y = self.dw(y, pad)
        return self.drop(self.pw2(F.silu(self.dw_norm(y))))


class ConformerLayer(nn.Module):
    """[½FFN] → MHSA ⇄ Conv (per `module_order`) → ½FFN (full step without macaron) → LayerNorm."""

    def __init__(
        self,
        d_model: int,
        *,
        heads: int,
        ffn_dim: int,
        ffn_lowrank: int,
        kernel: int,
        macaron: bool,
        module_order: ModuleOrder,
        attention: PosKind,
        window: int | None,
        dropout: float,
        causal: bool = False,
    ) -> None:
        super().__init__()
        ConformerLayerConfig(
            heads=heads,
            ffn_dim=ffn_dim,
            ffn_lowrank=ffn_lowrank,
            kernel=kernel,
            macaron=macaron,
            module_order=module_order,
            attention=attention,
            window=window,
            dropout=dropout,
        )  # validates the arguments
        check_heads("ConformerLayer", d_model, heads)
        self.conv_first = module_order == "conv_first"
        self.ff_scale = 0.5 if macaron else 1.0
        self.ff1 = (
            FeedForward(d_model, ffn_dim, lowrank=ffn_lowrank, dropout=dropout) if macaron else None
        )
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, heads, pos=attention, window=window)
        self.attn_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel, causal=causal, dropout=dropout)
        self.ff2 = FeedForward(d_model, ffn_dim, lowrank=ffn_lowrank, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T), mask (B, T, T) → (B, T, D)."""
        if self.ff1 is not None:
            x = x + self.ff_scale * self.ff1(x)
        if self.conv_first:
            x = x + self.conv(x, pad)
            x = x + self._attend(x, mask)
        else:
            x = x + self._attend(x, mask)
            x = x + self.conv(x, pad)
        x = x + self.ff_scale * self.ff2(x)
        return self.norm(x)

    def _attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attn_drop(self.attn(self.attn_norm(x), mask))


class ConformerStack(AttentionStack):
    """Conformer layers over (B, T, d_model) → (B, T, d_model), one config per layer.

    With `chunk` set, attention sees the own chunk plus `left_chunks` before it (None: all) and
    every depthwise conv is causal, so no output depends on frames beyond its chunk.
    """

    def __init__(
        self,
        d_model: int,
        layer_cfgs: Sequence[ConformerLayerConfig | Mapping[str, Any]],
        *,
        chunk: int | None = None,
        left_chunks: int | None = None,
    ) -> None:
        cfgs = as_configs(ConformerLayerConfig, layer_cfgs, "ConformerStack")
        super().__init__(
            d_model,
            cfgs,
            functools.partial(ConformerLayer, causal=chunk is not None),
            chunk=chunk,
            left_chunks=left_chunks,
            final_norm=False,
        )
