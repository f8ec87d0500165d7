"""1-D depthwise-separable convolution encoder (ContextNet / QuartzNet family)."""

from __future__ import annotations

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
    check_positive,
    layer_state_names,
    stream_layers,
    zero_padding,
)
from speechnas.nn.blocks._shared import make_layer
from speechnas.nn.blocks.masks import padding_mask


@dataclass(frozen=True, slots=True)
class SeparableConvLayerConfig:
    """One residual block: depthwise conv (`kernel`, `dilation`), pointwise, LN, SiLU, [SE]."""

    kernel: int = 5
    dilation: int = 1
    se: bool = False
    se_reduction: int = 8
    dropout: float = 0.1

    def __post_init__(self) -> None:
        owner = "SeparableConvLayerConfig"
        for name in ("kernel", "dilation", "se_reduction"):
            check_positive(owner, name, getattr(self, name))
        check_choice(owner, "se", self.se, (True, False))
        check_dropout(owner, self.dropout)


class SqueezeExcite(nn.Module):
    """Channel gates from the mean over valid frames: (B, T, C), pad (B, T) → (B, T, C).

    Non-causal: one mean per utterance over its `lengths` frames. Causal: the running mean of
    frames 0..t, so a gate never looks ahead. Either way padding does not enter the mean.
    """

    def __init__(self, channels: int, reduction: int, *, causal: bool) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.causal = causal

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        valid = zero_padding(x, pad)
        if self.causal:
            count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)
            mean = valid.cumsum(dim=1) / count[:, None]  # (B, T, C)
        else:
            count = (~pad).sum(dim=1).clamp(min=1).to(x.dtype)
            mean = valid.sum(dim=1, keepdim=True) / count[:, None, None]  # (B, 1, C)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(mean))))

    def step(
        self, x: torch.Tensor, pad: torch.Tensor, offset: torch.Tensor, total: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of the causal gate: x (B, C, ch), pad (B, C), frames before the chunk
        ``offset`` (B,) and their sum ``total`` (B, ch) → gated x, the new sum."""
        sums = total[:, None] + zero_padding(x, pad).cumsum(dim=1)  # (B, C, ch)
        count = offset[:, None] + torch.arange(1, x.shape[1] + 1, device=x.device)  # (B, C)
        mean = sums / count[..., None].to(x.dtype)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(mean)))), sums[:, -1]


class SeparableConvLayer(nn.Module):
    """x + Dropout([SE](SiLU(LN(Pointwise(DepthwiseConv(x)))))). (B, T, D) → (B, T, D)."""

    def __init__(
        self,
        d_model: int,
        *,
        kernel: int,
        dilation: int,
        se: bool,
        se_reduction: int,
        dropout: float,
        causal: bool = False,
    ) -> None:
        super().__init__()
        SeparableConvLayerConfig(
            kernel=kernel, dilation=dilation, se=se, se_reduction=se_reduction, dropout=dropout
        )  # validates the arguments
        self.dw = DepthwiseConv1d(d_model, kernel, causal=causal, dilation=dilation)
        self.pw = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.se = SqueezeExcite(d_model, se_reduction, causal=causal) if se else None
        self.state_kinds: tuple[str, ...] = ("conv", "se_sum") if se else ("conv",)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), pad (B, T) → (B, T, D)."""
        y = F.silu(self.norm(self.pw(self.dw(x, pad))))
        if self.se is not None:
            y = self.se(y, pad)
        return x + self.drop(y)

    def init_states(self, batch: int) -> list[torch.Tensor]:
        """The causal conv's cache and, with SE, the running sum of the gate's inputs."""
        states = [self.dw.init_cache(batch)]
        if self.se is not None:
            states.append(torch.zeros(batch, self.pw.out_features))
        return states

    def streaming_forward(
        self, x: torch.Tensor, pad: torch.Tensor, offset: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One chunk (B, C, D), frames streamed before it (B,), its states → (B, C, D), states."""
        y, conv = self.dw.step(x, pad, states[0])
        y = F.silu(self.norm(self.pw(y)))
        if self.se is None:
            return x + self.drop(y), [conv]
        y, total = self.se.step(y, pad, offset, states[1])
        return x + self.drop(y), [conv, total]


class SeparableConvStack(nn.Module):
    """Residual separable-conv blocks: (B, T, d_model), lengths → (B, T, d_model), lengths.

    `causal=True` (streaming) pads every conv on the left only and uses running-mean SE, so an
    output frame never depends on later input frames.
    """

    def __init__(
        self,
        d_model: int,
        layer_cfgs: Sequence[SeparableConvLayerConfig | Mapping[str, Any]],
        *,
        causal: bool = False,
    ) -> None:
        super().__init__()
        check_positive("SeparableConvStack", "d_model", d_model)
        cfgs = as_configs(SeparableConvLayerConfig, layer_cfgs, "SeparableConvStack")
        self.in_dim = d_model
        self.out_dim = d_model
        self.causal = causal
        self.layer_cfgs = tuple(cfgs)
        self.layers = nn.ModuleList(
            make_layer(
                SeparableConvLayer,
                d_model,
                kernel=c.kernel,
                dilation=c.dilation,
                se=c.se,
                se_reduction=c.se_reduction,
                dropout=c.dropout,
                causal=causal,
            )
            for c in cfgs
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_model), lengths (B,) → y (B, T, d_model), lengths (B,)."""
        pad = padding_mask(lengths, x.shape[1])
        for layer in self.layers:
            x = layer(x, pad)
        return zero_padding(self.norm(x), pad), lengths

    def _check_streamable(self) -> None:
        if not self.causal:
            raise ValueError("SeparableConvStack: only a causal stack (causal=True) can stream")

    def init_states(self, batch: int) -> list[torch.Tensor]:
        """[frames streamed so far (B,)] + each layer's caches, all zeros."""
        self._check_streamable()
        states = [torch.zeros(batch, dtype=torch.long)]
        for layer in self.layers:
            states.extend(layer.init_states(batch))
        return states

    def state_names(self) -> list[str]:
        return layer_state_names(self.layers)

    def streaming_forward(
        self, x: torch.Tensor, lengths: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One chunk x (B, C, d_model), lengths (B,) → y, lengths, new states; the chunks of a
        stream give what :meth:`forward` gives for the whole stream."""
        self._check_streamable()
        offset, rest = states[0], states[1:]
        pad = padding_mask(lengths, x.shape[1])
        y, new = stream_layers(
            self.layers, x, rest, lambda layer, z, s: layer.streaming_forward(z, pad, offset, s)
        )
        return zero_padding(self.norm(y), pad), lengths, [offset + x.shape[1], *new]
