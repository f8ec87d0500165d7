"""E-Branchformer (Kim et al., 2022): parallel global (MHSA) and local (cgMLP) branches merged
by concatenation, a depthwise conv and a linear projection, between macaron feed-forwards."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class EBranchformerLayerConfig:
    """One E-Branchformer layer; `cgmlp_dim` is the (even) width of the cgMLP's up-projection,
    `kernel` its gating conv and `merge_kernel` the depthwise conv of the merge module;
    `head_dim` defaults to d_model / heads; `attention_impl` and `qkv`:
    :mod:`~speechnas.nn.blocks.attention_impl`."""

    heads: int = 4
    ffn_dim: int = 1024
    ffn_lowrank: int = 0
    cgmlp_dim: int = 1024
    kernel: int = 31
    merge_kernel: int = 3
    attention: PosKind = "rel"
    window: int | None = None
    dropout: float = 0.1
    head_dim: int | None = None
    attention_impl: str = "sdpa"
    qkv: str = "packed"

    def __post_init__(self) -> None:
        owner = "EBranchformerLayerConfig"
        if self.head_dim is not None:
            check_positive(owner, "head_dim", self.head_dim)
        for name in ("heads", "ffn_dim", "cgmlp_dim", "kernel", "merge_kernel"):
            check_positive(owner, name, getattr(self, name))
        if self.cgmlp_dim % 2:
            raise ValueError(f"{owner}.cgmlp_dim: {self.cgmlp_dim} must be even (gating split)")
        check_non_negative(owner, "ffn_lowrank", self.ffn_lowrank)
        check_choice(owner, "attention", self.attention, POS_KINDS)
        check_window(owner, self.attention, self.window)
        check_dropout(owner, self.dropout)
        check_choice(owner, "attention_impl", self.attention_impl, ATTENTION_IMPLS)
        check_choice(owner, "qkv", self.qkv, QKV_LAYOUTS)


class ConvGatedMLP(nn.Module):
    """cgMLP: Linear up → GELU → CSGU (split; LN + depthwise conv on one half; multiply) → Linear.

    (B, T, D) → (B, T, D); the gating conv zeroes padded frames first and is causal if asked.
    """

    def __init__(self, d_model: int, hidden: int, kernel: int, *, causal: bool) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.gate_norm = nn.LayerNorm(hidden // 2)
        self.gate_conv = DepthwiseConv1d(hidden // 2, kernel, causal=causal)
        self.down = nn.Linear(hidden // 2, d_model)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) → (B, T, D)."""
        a, b = F.gelu(self.up(x)).chunk(2, dim=-1)  # (B, T, hidden/2) each
        b = self.gate_conv(self.gate_norm(b), pad)
        return self.down(a * b)

    def step(
        self, x: torch.Tensor, pad: torch.Tensor, cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of the causal cgMLP: x (B, C, D), pad (B, C), the gate conv's cache."""
        a, b = F.gelu(self.up(x)).chunk(2, dim=-1)
        b, cache = self.gate_conv.step(self.gate_norm(b), pad, cache)
        return self.down(a * b), cache


class EBranchformerLayer(nn.Module):
    """x + ½FFN; branches MHSA(LN x) ‖ cgMLP(LN x); x + Proj(cat + DWConv(cat)); x + ½FFN; LN."""

    def __init__(
        self,
        d_model: int,
        *,
        heads: int,
        ffn_dim: int,
        ffn_lowrank: int,
        cgmlp_dim: int,
        kernel: int,
        merge_kernel: int,
        attention: PosKind,
        window: int | None,
        dropout: float,
        causal: bool = False,
        head_dim: int | None = None,
        attention_impl: str = "sdpa",
        qkv: str = "packed",
    ) -> None:
        super().__init__()
        EBranchformerLayerConfig(
            heads=heads,
            ffn_dim=ffn_dim,
            ffn_lowrank=ffn_lowrank,
            cgmlp_dim=cgmlp_dim,
            kernel=kernel,
            merge_kernel=merge_kernel,
            attention=attention,
            window=window,
            dropout=dropout,
            head_dim=head_dim,
            attention_impl=attention_impl,
            qkv=qkv,
        )  # validates the arguments
        if head_dim is None:
            check_heads("EBranchformerLayer", d_model, heads)
        self.ff1 = FeedForward(d_model, ffn_dim, lowrank=ffn_lowrank, dropout=dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(
            d_model, heads, pos=attention, window=window, head_dim=head_dim,
            impl=attention_impl, qkv=qkv,
        )  # fmt: skip
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = ConvGatedMLP(d_model, cgmlp_dim, kernel, causal=causal)
        self.branch_drop = nn.Dropout(dropout)
        self.merge_conv = DepthwiseConv1d(2 * d_model, merge_kernel, causal=causal)
        self.merge_proj = nn.Linear(2 * d_model, d_model)
        self.merge_drop = nn.Dropout(dropout)
        self.ff2 = FeedForward(d_model, ffn_dim, lowrank=ffn_lowrank, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T), mask (B, T, T) → (B, T, D)."""
        x = x + 0.5 * self.ff1(x)
        global_ = self.branch_drop(self.attn(self.attn_norm(x), mask))
        local = self.branch_drop(self.mlp(self.mlp_norm(x), pad))
        both = torch.cat([global_, local], dim=-1)  # (B, T, 2D)
        both = both + self.merge_conv(both, pad)
        x = x + self.merge_drop(self.merge_proj(both))
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)

    state_kinds = ("k", "v", "gate_conv", "merge_conv")

    def init_states(self, batch: int, cache: int) -> list[torch.Tensor]:
        """Key/value caches (B, H, cache, Dh) and both causal convs' caches, all zeros."""
        shape = (batch, self.attn.heads, cache, self.attn.head_dim)
        return [
            torch.zeros(shape),
            torch.zeros(shape),
            self.mlp.gate_conv.init_cache(batch),
            self.merge_conv.init_cache(batch),
        ]

    def streaming_forward(
        self, x: torch.Tensor, pad: torch.Tensor, mask: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One chunk (B, C, D) with its states → (B, C, D), new states."""
        k, v, gate, merge = states
        x = x + 0.5 * self.ff1(x)
        global_, k, v = self.attn.streaming_forward(self.attn_norm(x), mask, k, v)
        local, gate = self.mlp.step(self.mlp_norm(x), pad, gate)
        both = torch.cat([self.branch_drop(global_), self.branch_drop(local)], dim=-1)
        merged, merge = self.merge_conv.step(both, pad, merge)
        x = x + self.merge_drop(self.merge_proj(both + merged))
        x = x + 0.5 * self.ff2(x)
        return self.norm(x), [k, v, gate, merge]


class EBranchformerStack(AttentionStack):
    """E-Branchformer layers over (B, T, d_model) → (B, T, d_model), one config per layer.

    With `chunk` set, attention is chunk-masked and both depthwise convs are causal.
    """

    def __init__(
        self,
        d_model: int,
        layer_cfgs: Sequence[EBranchformerLayerConfig | Mapping[str, Any]],
        *,
        chunk: int | None = None,
        left_chunks: int | None = None,
    ) -> None:
        cfgs = as_configs(EBranchformerLayerConfig, layer_cfgs, "EBranchformerStack")
        super().__init__(
            d_model,
            cfgs,
            functools.partial(EBranchformerLayer, causal=chunk is not None),
            chunk=chunk,
            left_chunks=left_chunks,
            final_norm=False,
        )
