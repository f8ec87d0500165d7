"""2-D convolutional subsampling by 4, 6 or 8, plain or depthwise-separable."""

from __future__ import annotations

import torch
from torch import nn

from speechnas.nn.blocks._common import check_choice, check_positive

# (kernel, stride) of each conv, time and frequency alike.
_PLANS: dict[int, tuple[tuple[int, int], ...]] = {
    4: ((3, 2), (3, 2)),
    6: ((3, 2), (5, 3)),
    8: ((3, 2), (3, 2), (3, 2)),
}
FACTORS: tuple[int, ...] = tuple(_PLANS)


def conv_plan(factor: int) -> tuple[tuple[int, int], ...]:
    """(kernel, stride) of each convolution of the subsampling by ``factor``."""
    check_choice("conv_plan", "factor", factor, FACTORS)
    return _PLANS[factor]


def receptive_field(factor: int) -> int:
    """Input frames one output frame of the subsampling by ``factor`` sees (the last output
    frame of ``n`` input frames needs all of them when ``n = R + k * factor``)."""
    field, jump = 1, 1
    for kernel, stride in conv_plan(factor):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def conv_length(n: torch.Tensor | int, kernel: int, stride: int) -> torch.Tensor | int:
    """Output length of one valid convolution (no padding) over ``n`` frames."""
    if isinstance(n, int):
        return max(0, (n - kernel) // stride + 1)
    return ((n - kernel) // stride + 1).clamp(min=0)


def subsampled_lengths(lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Exact output length of `Conv2dSubsampling(factor=...)` for each input length (B,)."""
    check_choice("subsampled_lengths", "factor", factor, FACTORS)
    for kernel, stride in _PLANS[factor]:
        lengths = conv_length(lengths, kernel, stride)  # type: ignore[assignment]
    return lengths


class Conv2dSubsampling(nn.Module):
    """(B, T, in_dim), lengths (B,) → (B, T', d_model), lengths (B,) with T' ≈ T / factor.

    factor 4: two 3x3 stride-2 convs; 6: 3x3 stride 2 then 5x5 stride 3; 8: three 3x3 stride 2.
    `depthwise=True`: the first conv stays a full conv from the single input channel, every later
    one is depthwise + pointwise 1x1. No time padding: a valid output frame sees only valid input
    frames, and `output_lengths` is exact.
    """

    def __init__(
        self, in_dim: int, d_model: int, *, factor: int = 4, channels: int, depthwise: bool
    ) -> None:
        super().__init__()
        owner = "Conv2dSubsampling"
        check_positive(owner, "in_dim", in_dim)
        check_positive(owner, "d_model", d_model)
        check_positive(owner, "channels", channels)
        check_choice(owner, "factor", factor, FACTORS)
        freq = in_dim
        for kernel, stride in _PLANS[factor]:
            freq = conv_length(freq, kernel, stride)
        if freq < 1:
            raise ValueError(f"{owner}.in_dim: {in_dim} is too small for factor {factor}")
        self.in_dim = in_dim
        self.out_dim = d_model
        self.factor = factor
        layers: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(_PLANS[factor]):
            if i == 0:
                layers.append(nn.Conv2d(1, channels, kernel, stride=stride))
            elif depthwise:
                layers.append(nn.Conv2d(channels, channels, kernel, stride=stride, groups=channels))
                layers.append(nn.Conv2d(channels, channels, 1))
            else:
                layers.append(nn.Conv2d(channels, channels, kernel, stride=stride))
            layers.append(nn.ReLU())
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * int(freq), d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return subsampled_lengths(lengths, self.factor)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, in_dim), lengths (B,) → y (B, T', d_model), lengths (B,)."""
        y = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = y.shape
        y = self.out(y.transpose(1, 2).reshape(b, t, c * f))
        return y, self.output_lengths(lengths)
