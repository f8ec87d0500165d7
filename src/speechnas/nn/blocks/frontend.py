"""Learnable filterbank front end on raw waveforms."""

from __future__ import annotations

import math

import torch
from torch import nn

from speechnas.nn.blocks._common import check_positive


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def gabor_filterbank(
    n_filters: int, *, sample_rate: int, win: int, min_freq: float = 60.0
) -> torch.Tensor:
    """(2F, win) band-pass filters: F Hann-windowed cosines, then the F matching sines.

    Centre frequencies are mel-spaced up to Nyquist; each window is shortened (never beyond
    `win`) so its bandwidth roughly matches the spacing of neighbouring centres, and each filter
    is scaled so a unit-amplitude tone at its centre gives a quadrature magnitude of about 1.
    """
    edges = _mel_to_hz(
        torch.linspace(
            _hz_to_mel(torch.tensor(min_freq)).item(),
            _hz_to_mel(torch.tensor(sample_rate / 2)).item(),
            n_filters + 2,
            dtype=torch.float64,
        )
    )
    centres = edges[1:-1]
    spacing = (edges[2:] - edges[:-2]) / 2
    # A Hann window of L samples has a -3 dB bandwidth of about 1.44 * sample_rate / L.
    widths = (1.44 * sample_rate / spacing).round().clamp(min=8, max=win).long()
    n = torch.arange(win, dtype=torch.float64)
    cos = torch.zeros(n_filters, win, dtype=torch.float64)
    sin = torch.zeros(n_filters, win, dtype=torch.float64)
    for i, (f, width) in enumerate(zip(centres.tolist(), widths.tolist(), strict=True)):
        start = (win - width) // 2
        window = torch.hann_window(width, periodic=False, dtype=torch.float64)
        phase = 2 * math.pi * f * n[start : start + width] / sample_rate
        gain = 2.0 / window.sum()
        cos[i, start : start + width] = gain * window * torch.cos(phase)
        sin[i, start : start + width] = gain * window * torch.sin(phase)
    return torch.cat([cos, sin]).float()


class LearnableFrontend(nn.Module):
    """Waveform (B, N, 1), lengths in samples (B,) → log filter energies (B, T, n_filters), (B,).

    Frame t covers samples [t * hop, t * hop + win), so T = 1 + (N - win) // hop. The filterbank
    is one strided Conv1d without padding, initialised as mel-spaced Gabor band-pass filters in
    quadrature pairs (cosine and sine, so the energy does not depend on the signal's phase);
    then |.|², log(1e-6 + .) and a learnable per-channel affine map.
    """

    def __init__(
        self, n_filters: int = 80, *, sample_rate: int = 16000, hop: int = 160, win: int = 400
    ) -> None:
        super().__init__()
        owner = "LearnableFrontend"
        for name, value in (
            ("n_filters", n_filters),
            ("sample_rate", sample_rate),
            ("hop", hop),
            ("win", win),
        ):
            check_positive(owner, name, value)
        self.in_dim = 1
        self.out_dim = n_filters
        self.hop = hop
        self.win = win
        self.filters = nn.Conv1d(1, 2 * n_filters, win, stride=hop, bias=False)
        with torch.no_grad():
            self.filters.weight.copy_(
                gabor_filterbank(n_filters, sample_rate=sample_rate, win=win)[:, None, :]
            )
        self.scale = nn.Parameter(torch.ones(n_filters))
        self.bias = nn.Parameter(torch.zeros(n_filters))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) samples → (B,) frames, 0 for inputs shorter than one window."""
        frames = 1 + (lengths - self.win).div(self.hop, rounding_mode="floor")
        return torch.where(lengths >= self.win, frames, torch.zeros_like(frames))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, 1), lengths (B,) → y (B, T, n_filters), lengths (B,)."""
        if x.dim() != 3 or x.shape[-1] != 1:
            raise ValueError(f"LearnableFrontend: expected input (B, N, 1), got {tuple(x.shape)}")
        if x.shape[1] < self.win:
            raise ValueError(f"LearnableFrontend: {x.shape[1]} samples < one window ({self.win})")
        y = self.filters(x.transpose(1, 2))  # (B, 2F, T)
        re, im = y.chunk(2, dim=1)
        energy = (re.square() + im.square()).transpose(1, 2)  # (B, T, F)
        return torch.log(1e-6 + energy) * self.scale + self.bias, self.output_lengths(lengths)
