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
from speechnas.nn.blocks.attention_impl import ATTENTION_IMPLS, QKV_LAYOUTS
from speechnas.nn.blocks.feedforward import FeedForward

ModuleOrder = Literal["mhsa_first", "conv_first"]
MODULE_ORDERS: tuple[str, ...] = ("mhsa_first", "conv_first")


@dataclass(frozen=True, slots=True)
class ConformerLayerConfig:
    """One Conformer layer. `window` is required with attention="local" and invalid otherwise.

    `head_dim` (default d_model / heads) and `conv_dim` (the convolution module's channels,
    default d_model) let a layer's widths differ from the model's. `attention_impl` and `qkv`
    choose how attention is computed (:mod:`~speechnas.nn.blocks.attention_impl`).
    """

    heads: int = 4
    ffn_dim: int = 256
    ffn_lowrank: int = 0
    kernel: int = 15
    macaron: bool = True
    module_order: ModuleOrder = "mhsa_first"
    attention: PosKind = "rel"
    window: int | None = None
    dropout: float = 0.1
    head_dim: int | None = None
    conv_dim: int | None = None
    attention_impl: str = "sdpa"
    qkv: str = "packed"

    def __post_init__(self) -> None:
        owner = "ConformerLayerConfig"
        for name in ("head_dim", "conv_dim"):
            if getattr(self, name) is not None:
                check_positive(owner, name, getattr(self, name))
        check_positive(owner, "heads", self.heads)
        check_positive(owner, "ffn_dim", self.ffn_dim)
        check_non_negative(owner, "ffn_lowrank", self.ffn_lowrank)
        check_positive(owner, "kernel", self.kernel)
        check_choice(owner, "macaron", self.macaron, (True, False))
        check_choice(owner, "module_order", self.module_order, MODULE_ORDERS)
        check_choice(owner, "attention", self.attention, POS_KINDS)
        check_window(owner, self.attention, self.window)
        check_dropout(owner, self.dropout)
        check_choice(owner, "attention_impl", self.attention_impl, ATTENTION_IMPLS)
        check_choice(owner, "qkv", self.qkv, QKV_LAYOUTS)


class ConvModule(nn.Module):
    """LayerNorm → pointwise → GLU → depthwise → LayerNorm → SiLU → pointwise → Dropout.

    LayerNorm replaces the paper's BatchNorm so an utterance's output does not depend on its
    batch; padded frames are zeroed before the depthwise conv, which is causal when streaming.
    """

    def __init__(
        self,
        d_model: int,
        kernel: int,
        *,
        causal: bool,
        dropout: float,
        channels: int | None = None,
    ) -> None:
        """`channels` (default d_model): the width between the two pointwise maps."""
        super().__init__()
        c = d_model if channels is None else channels
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * c)
        self.dw = DepthwiseConv1d(c, kernel, causal=causal)
        self.dw_norm = nn.LayerNorm(c)
        self.pw2 = nn.Linear(c, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) → (B, T, D)."""
        y = F.glu(self.pw1(self.norm(x)), dim=-1)
        y = self.dw(y, pad)
        return self.drop(self.pw2(F.silu(self.dw_norm(y))))

    def step(
        self, x: torch.Tensor, pad: torch.Tensor, cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of the causal module: x (B, C, D), pad (B, C), cache (B, k-1, D)."""
        y = F.glu(self.pw1(self.norm(x)), dim=-1)
        y, cache = self.dw.step(y, pad, cache)
        return self.drop(self.pw2(F.silu(self.dw_norm(y)))), cache


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
        head_dim: int | None = None,
        conv_dim: int | None = None,
        attention_impl: str = "sdpa",
        qkv: str = "packed",
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
            head_dim=head_dim,
            conv_dim=conv_dim,
            attention_impl=attention_impl,
            qkv=qkv,
        )  # validates the arguments
        if head_dim is None:
            check_heads("ConformerLayer", d_model, heads)
        self.conv_first = module_order == "conv_first"
        self.ff_scale = 0.5 if macaron else 1.0
        self.ff1 = (
            FeedForward(d_model, ffn_dim, lowrank=ffn_lowrank, dropout=dropout) if macaron else None
        )
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(
            d_model, heads, pos=attention, window=window, head_dim=head_dim,
            impl=attention_impl, qkv=qkv,
        )  # fmt: skip
        self.attn_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel, causal=causal, dropout=dropout, channels=conv_dim)
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

    state_kinds = ("k", "v", "conv")

    def init_states(self, batch: int, cache: int) -> list[torch.Tensor]:
        """Key/value caches of the last ``cache`` frames (B, H, cache, Dh) and the causal conv's
        last k-1 inputs (B, k-1, channels), all zeros."""
        shape = (batch, self.attn.heads, cache, self.attn.head_dim)
        return [torch.zeros(shape), torch.zeros(shape), self.conv.dw.init_cache(batch)]

    def streaming_forward(
        self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One chunk (B, C, D) with its states → (B, C, D), new states."""
        k, v, conv = states
        if self.ff1 is not None:
            x = x + self.ff_scale * self.ff1(x)
        for first in (self.conv_first, not self.conv_first):
            if first:
                y, conv = self.conv.step(x, pad, conv)
            else:
                y, k, v = self.attn.streaming_forward(self.attn_norm(x), mask, k, v)
                y = self.attn_drop(y)
            x = x + y
        x = x + self.ff_scale * self.ff2(x)
        return self.norm(x), [k, v, conv]


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
