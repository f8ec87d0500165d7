"""The loop shared by the attention-based stacks: positions in, masks once, layers, padding out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from speechnas.nn.blocks._common import check_positive, check_streaming, zero_padding
from speechnas.nn.blocks.attention import PositionalInput, attention_mask
from speechnas.nn.blocks.masks import padding_mask


class AttentionStack(nn.Module):
    """(B, T, d_model), lengths (B,) → (B, T, d_model), lengths (B,).

    Each layer is called as `layer(x, pad, mask)` with pad (B, T) True on padding and mask
    (B, T, T) True where attention is allowed. Absolute positions are added once at the input
    when `absolute`; `chunk` restricts attention to the own chunk plus `left_chunks` before it.
    """

    def __init__(
        self,
        d_model: int,
        cfgs: Sequence[Any],
        make_layer: Callable[..., nn.Module],
        *,
        chunk: int | None,
        left_chunks: int | None,
        final_norm: bool,
        absolute: bool | None = None,
    ) -> None:
        """One layer per config: ``make_layer(d_model, **fields of the config)``; positions are
        absolute unless every layer uses relative attention (``absolute`` decides it for a
        stack without layers)."""
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, "d_model", d_model)
        check_streaming(owner, chunk, left_chunks)
        self.in_dim = d_model
        self.out_dim = d_model
        self.chunk = chunk
        self.left_chunks = left_chunks
        if absolute is None:
            absolute = any(c.attention != "rel" for c in cfgs)
        self.pos = PositionalInput(d_model, absolute=absolute)
        fields = [{f.name: getattr(c, f.name) for f in dataclasses.fields(c)} for c in cfgs]
        self.layers = nn.ModuleList(make_layer(d_model, **f) for f in fields)
        self.norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()
        self.layer_cfgs = tuple(cfgs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_model), lengths (B,) → y (B, T, d_model), lengths (B,)."""
        t = x.shape[1]
        pad = padding_mask(lengths, t)
        mask = attention_mask(lengths, t, chunk=self.chunk, left_chunks=self.left_chunks)
        x = self.pos(x)
        for layer in self.layers:
            x = layer(x, pad, mask)
        return zero_padding(self.norm(x), pad), lengths
