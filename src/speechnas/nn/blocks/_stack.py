"""The loop shared by the attention-based stacks: positions in, masks once, layers, padding out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from speechnas.nn.blocks._common import (
    check_positive,
    check_streaming,
    layer_state_names,
    stream_layers,
    zero_padding,
)
from speechnas.nn.blocks._shared import make_layer as shared_layer
from speechnas.nn.blocks.attention import PositionalInput, attention_mask
from speechnas.nn.blocks.attention_impl import additive_mask
from speechnas.nn.blocks.masks import padding_mask, stream_mask


class AttentionStack(nn.Module):
    """(B, T, d_model), lengths (B,) → (B, T, d_model), lengths (B,).

    Each layer is called as `layer(x, pad, mask)` with pad (B, T) True on padding and mask
    (B, T, T) True where attention is allowed. Absolute positions are added once at the input
    when `absolute`; `chunk` restricts attention to the own chunk plus `left_chunks` before it.
    When no layer uses the default ``sdpa`` attention, the mask is made additive (0 / -inf)
    here, once, instead of in every layer.
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
        additive: bool | None = None,
    ) -> None:
        """One layer per config: ``make_layer(d_model, **fields of the config)``; positions are
        absolute unless every layer uses relative attention (``absolute`` decides it for a
        stack without layers). ``additive``: whether the layers get an additive float mask
        (None: when every layer's ``attention_impl`` is other than ``sdpa``)."""
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
        if additive is None:
            impls = [getattr(c, "attention_impl", "sdpa") for c in cfgs]
            additive = bool(impls) and "sdpa" not in impls
        self.additive = additive
        fields = [{f.name: getattr(c, f.name) for f in dataclasses.fields(c)} for c in cfgs]
        self.layers = nn.ModuleList(shared_layer(make_layer, d_model, **f) for f in fields)
        self.norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()
        self.layer_cfgs = tuple(cfgs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_model), lengths (B,) → y (B, T, d_model), lengths (B,)."""
        t = x.shape[1]
        pad = padding_mask(lengths, t)
        mask = attention_mask(lengths, t, chunk=self.chunk, left_chunks=self.left_chunks)
        if self.additive:
            mask = additive_mask(mask)
        x = self.pos(x)
        for layer in self.layers:
            x = layer(x, pad, mask)
        return zero_padding(self.norm(x), pad), lengths

    def cache_frames(self) -> int:
        """Frames of left context a streamed chunk attends to: ``left_chunks`` chunks."""
        if self.chunk is None or self.left_chunks is None:
            raise ValueError(
                f"{type(self).__name__}: streaming needs chunk and left_chunks set (a bounded "
                f"left context), got chunk={self.chunk}, left_chunks={self.left_chunks}"
            )
        return self.chunk * self.left_chunks

    def init_states(self, batch: int) -> list[torch.Tensor]:
        """[frames streamed so far (B,)] + each layer's caches, all zeros."""
        states = [torch.zeros(batch, dtype=torch.long)]
        for layer in self.layers:
            states.extend(layer.init_states(batch, self.cache_frames()))
        return states

    def state_names(self) -> list[str]:
        return layer_state_names(self.layers)

    def streaming_forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        states: list[torch.Tensor],
        cache_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One chunk x (B, C, d_model) with ``lengths`` (B,) valid frames (C = ``chunk``; only
        the last chunk of a stream may be shorter) → y (B, C, d_model), lengths, new states.
        ``cache_valid``: see :func:`stream_mask`.

        The chunks of a stream give the frames :meth:`forward` gives for the whole stream."""
        offset, rest = states[0], states[1:]
        c = x.shape[1]
        pad = padding_mask(lengths, c)
        mask = stream_mask(offset, lengths, self.cache_frames(), c, cache_valid)
        if self.additive:
            mask = additive_mask(mask)
        x = self.pos.at(x, offset)
        x, new = stream_layers(
            self.layers, x, rest, lambda layer, y, s: layer.streaming_forward(y, pad, mask, s)
        )
        return zero_padding(self.norm(x), pad), lengths, [offset + c, *new]
