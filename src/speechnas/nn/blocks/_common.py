"""Shared pieces of the encoder blocks: argument checks, config coercion, masked convolution."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

C = TypeVar("C")


def check_positive(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name}: expected a positive integer, got {value!r}")


def check_non_negative(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}.{name}: expected an integer >= 0, got {value!r}")


def check_choice(owner: str, name: str, value: object, allowed: Iterable[object]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}.{name}: {value!r} is not one of {allowed}")


def check_dropout(owner: str, value: object) -> None:
    if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}.dropout: {value!r} is not in [0, 1)")


def check_heads(owner: str, d_model: int, heads: int) -> None:
    check_positive(owner, "heads", heads)
    if d_model % heads:
        raise ValueError(f"{owner}.heads: {heads} does not divide d_model={d_model}")


def check_window(owner: str, attention: str, window: int | None) -> None:
    """`window` is required with local attention and meaningless (so rejected) otherwise."""
    if attention == "local":
        check_positive(owner, "window", window)
    elif window is not None:
        raise ValueError(f"{owner}.window: {window!r} is only valid with attention='local'")


def check_streaming(owner: str, chunk: int | None, left_chunks: int | None) -> None:
    if chunk is not None:
        check_positive(owner, "chunk", chunk)
    if left_chunks is not None:
        check_non_negative(owner, "left_chunks", left_chunks)


def as_configs(cls: type[C], items: Sequence[C | Mapping[str, Any]], owner: str) -> list[C]:
    """Each item as a `cls` dataclass: instances pass through, mappings become `cls(**item)`."""
    assert is_dataclass(cls)
    if isinstance(items, Mapping | str) or len(items) == 0:
        raise ValueError(f"{owner}.layer_cfgs: expected a non-empty sequence of layer configs")
    names = [f.name for f in fields(cls)]
    out: list[C] = []
    for i, item in enumerate(items):
        if isinstance(item, cls):
            out.append(item)
        elif isinstance(item, Mapping):
            unknown = sorted(set(item) - set(names))
            if unknown:
                raise ValueError(
                    f"{owner}.layer_cfgs[{i}]: unknown keys {unknown}; valid keys are {names}"
                )
            out.append(cls(**item))
        else:
            raise TypeError(
                f"{owner}.layer_cfgs[{i}]: expected {cls.__name__} or a dict, "
                f"got {type(item).__name__}"
            )
    return out


def zero_padding(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), pad (B, T) True on padding → x with padded frames set to 0."""
    return x.masked_fill(pad[..., None], 0.0)


class DepthwiseConv1d(nn.Module):
    """Depthwise conv over time on channels-last input, padded frames read as zeros.

    `causal=True` pads only on the left (dilation * (kernel - 1) frames), so output t depends on
    inputs <= t; otherwise the padding is split evenly (the extra frame on the right).
    """

    def __init__(self, channels: int, kernel: int, *, causal: bool = False, dilation: int = 1):
        super().__init__()
        check_positive("DepthwiseConv1d", "kernel", kernel)
        check_positive("DepthwiseConv1d", "dilation", dilation)
        span = dilation * (kernel - 1)
        self.left = span if causal else span // 2
        self.right = span - self.left
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, groups=channels)

    def _conv(self, y: torch.Tensor, padding: int = 0) -> torch.Tensor:
        """(B, C, T) → (B, C, T'): ``self.conv`` with ``padding`` zeros on each side, computed
        as a 2-D convolution over (B, C, 1, T) with the same weights, so the same sums. Why:
        ONNX Runtime runs the 2-D depthwise form with its blocked (NCHWc) kernel and the 1-D
        one as a generic grouped convolution, about 3x slower (measured 22 vs 64 us per call,
        144 channels, kernel 15, 124 frames, one thread); the padding inside the Conv also
        saves a Pad node."""
        c = self.conv
        y = F.conv2d(
            y.unsqueeze(2), c.weight.unsqueeze(2), c.bias, padding=(0, padding),
            dilation=(1, c.dilation[0]), groups=c.groups,
        )  # fmt: skip
        return y.squeeze(2)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), pad (B, T) → (B, T, C)."""
        y = zero_padding(x, pad).transpose(1, 2)  # (B, C, T)
        if self.left == self.right:
            return self._conv(y, self.left).transpose(1, 2)
        return self._conv(F.pad(y, (self.left, self.right))).transpose(1, 2)

    def init_cache(self, batch: int) -> torch.Tensor:
        """The streaming cache before the first frame: (B, left, C) zeros, as the causal padding."""
        return torch.zeros(batch, self.left, self.conv.in_channels)

    def step(
        self, x: torch.Tensor, pad: torch.Tensor, cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of a causal conv: x (B, C, ch), pad (B, C), cache (B, left, ch) of the frames
        before the chunk → y (B, C, ch), the new cache. Equal to :meth:`forward` over the stream."""
        if self.right:
            raise ValueError("DepthwiseConv1d.step: only a causal conv can run chunk by chunk")
        full = torch.cat([cache, zero_padding(x, pad)], dim=1)  # (B, left + C, ch)
        y = self._conv(full.transpose(1, 2)).transpose(1, 2)
        return y, full[:, full.shape[1] - self.left :]


def layer_state_names(layers: Iterable[nn.Module]) -> list[str]:
    """State names of a streaming stack: its frame ``offset``, then each layer's
    ``state_kinds`` prefixed by the layer's index."""
    names = ["offset"]
    for i, layer in enumerate(layers):
        names.extend(f"layer{i}_{name}" for name in layer.state_kinds)
    return names


def stream_layers(
    layers: Iterable[nn.Module],
    x: torch.Tensor,
    states: Sequence[torch.Tensor],
    step: Callable[[nn.Module, torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, list]],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs one chunk through ``layers`` in turn, each with its own slice of ``states`` (as
    many as its ``state_kinds``): ``step(layer, x, layer_states) -> (x, new_layer_states)``.
    Returns the output and the new states in the same order."""
    rest = list(states)
    new: list[torch.Tensor] = []
    for layer in layers:
        n = len(layer.state_kinds)
        x, layer_states = step(layer, x, rest[:n])
        new.extend(layer_states)
        rest = rest[n:]
    return x, new
