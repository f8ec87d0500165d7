"""Acoustic features in PyTorch: log-mel filterbank and MFCC, plus training augmentation.

Kaldi filterbanks (kind "knf") are what kaldi-native-fbank (and so sherpa-onnx and the
transcriber, :func:`speechnas.data.filters.kaldi_fbank`) computes. Training computes them here,
as one batched tensor program with the same framing, window and filters (a test holds it to
kaldi-native-fbank's output): that library works frame by frame through Python and costs about
seven times the filterbank below per batch, a quarter of a small model's training step on one
thread. torchaudio's port of Kaldi's features has no build for the pinned torch.

Framing uses no centre padding: frame ``t`` covers samples ``[t*hop, t*hop + n_fft)``. A frame
therefore never sees padding, so an utterance gets the same features alone or inside a padded
batch, and the numpy port used by the standalone transcriber can match them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
import torch

# The configuration and the fixed matrices live in a torch-free module shared with the numpy
# transcriber; they are re-exported here, where training code has always imported them.
from speechnas.data.filters import (
    LOG_FLOOR,
    FeatureConfig,
    FeatureKind,
    dct_matrix,
    kaldi_mel_matrix,
    mel_matrix,
    povey_window,
    window,
)

#: Kaldi's energy floor before the log (float32 machine epsilon) and pre-emphasis.
KALDI_FLOOR = float(np.finfo(np.float32).eps)
KALDI_PREEMPH = 0.97

__all__ = [
    "FeatureConfig",
    "FeatureExtractor",
    "FeatureKind",
    "SpecAugmentConfig",
    "dct_matrix",
    "mel_matrix",
    "spec_augment",
    "speed_perturb",
    "window",
]


class FeatureExtractor(torch.nn.Module):
    """Waveforms (B, N) at ``cfg.sample_rate`` → features (B, T, D)."""

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kaldi = cfg.kind == "knf"
        win = povey_window(cfg) if kaldi else window(cfg)
        self.register_buffer("window", torch.from_numpy(win), persistent=False)
        self.register_buffer(
            "mel",
            torch.from_numpy(kaldi_mel_matrix(cfg) if kaldi else mel_matrix(cfg)),
            persistent=False,
        )
        dct = dct_matrix(cfg.n_mels, cfg.n_mfcc) if cfg.kind == "mfcc" else None
        self.register_buffer(
            "dct", None if dct is None else torch.from_numpy(dct), persistent=False
        )

    @torch.no_grad()
    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: wave (B, N) float, lengths (B,) samples. Returns feats (B, T, D), frames (B,)."""
        if wave.dim() == 1:
            wave = wave[None]
        cfg = self.cfg
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long)
        if cfg.kind == "waveform":  # a learnable frontend in the model takes the samples
            return wave[..., None], lengths
        if cfg.kind == "knf":
            return self._kaldi(wave, lengths)
        if wave.shape[1] < cfg.n_fft:
            wave = torch.nn.functional.pad(wave, (0, cfg.n_fft - wave.shape[1]))
        frames = wave.unfold(1, cfg.n_fft, cfg.hop)  # (B, T, n_fft)
        spec = torch.fft.rfft(frames * self.window, dim=-1)
        power = spec.real.square() + spec.imag.square()  # (B, T, F)
        feats = torch.log(torch.clamp(power @ self.mel, min=LOG_FLOOR))
        if self.dct is not None:
            feats = feats @ self.dct
        n = torch.clamp(1 + (lengths - cfg.n_fft).div(cfg.hop, rounding_mode="floor"), min=0)
        return feats, n

    def _kaldi(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kaldi's filterbank of each row's valid samples; frames past a row's end are 0.

        Frames are centred on multiples of the hop with the edges reflected, as Kaldi does
        without ``snip_edges``; each frame loses its mean, is pre-emphasised, windowed and
        zero-padded to ``n_fft`` before the power spectrum."""
        cfg = self.cfg
        n = lengths.to(torch.long).clamp(max=wave.shape[1])
        frames = torch.div(n + cfg.hop // 2, cfg.hop, rounding_mode="floor")
        t = int(frames.max()) if len(frames) else 0
        if t == 0:
            return wave.new_zeros(wave.shape[0], 0, cfg.n_mels), frames
        x = _reflected(wave.float(), n, cfg.win // 2 - cfg.hop // 2, cfg.win)
        # Mean removal, pre-emphasis and the window are per frame; pre-emphasis is computed on
        # the overlapping samples once: with frame mean m, sample i > 0 of a frame becomes
        # e_i - (1 - a) m (e = x - a x_prev), and sample 0 becomes (1 - a) (x_0 - m).
        a = KALDI_PREEMPH
        e = torch.cat([x[:, :1], x[:, 1:] - a * x[:, :-1]], dim=1)
        framed = x.unfold(1, cfg.win, cfg.hop)[:, :t]
        m = framed.mean(dim=-1, keepdim=True)
        y = e.unfold(1, cfg.win, cfg.hop)[:, :t] - (1 - a) * m
        y[..., 0] = (1 - a) * (framed[..., 0] - m[..., 0])
        padded = y.new_zeros(*y.shape[:2], cfg.n_fft)  # zero-padded to the FFT size
        torch.mul(y, self.window, out=padded[..., : cfg.win])
        spec = torch.fft.rfft(padded, dim=-1)
        power = spec.real.square() + spec.imag.square()
        feats = torch.log(torch.clamp(power @ self.mel, min=KALDI_FLOOR))
        feats = feats * (torch.arange(t)[None, :] < frames[:, None])[..., None]
        return feats, frames


def _reflect(pos: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Sample indices ``pos`` (any integer) reflected into ``[0, size)`` as Kaldi's framing
    does: ... 1 0 | 0 1 ... size-1 | size-1 size-2 ..."""
    pos = torch.remainder(pos, 2 * size)
    return torch.where(pos >= size, 2 * size - 1 - pos, pos)


def _reflected(wave: torch.Tensor, n: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """(B, left + N + right) samples ``-left, -left+1, ...`` of each row, reflected at 0 and
    at the row's own end ``n`` (up to ``right`` samples past it); only the edges are
    gathered, the rest is a copy. Samples past ``n + right`` are left as they are."""
    b, width = wave.shape
    out = wave.new_zeros(b, left + width + right)
    out[:, left : left + width] = wave
    size = n.clamp(min=1)[:, None]
    head = _reflect(torch.arange(-left, 0)[None, :], size)
    out[:, :left] = torch.gather(wave, 1, head)
    j = n[:, None] + torch.arange(right)[None, :]
    out.scatter_(1, left + j, torch.gather(wave, 1, _reflect(j, size)))
    return out


def speed_perturb(wave: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (pitch moves with it, as in Kaldi's recipe)."""
    if factor == 1.0:
        return wave
    return soxr.resample(wave, sample_rate * factor, sample_rate).astype(np.float32)


@dataclass(frozen=True, slots=True)
class SpecAugmentConfig:
    """Frequency and time masking (SpecAugment's LD-like policy scaled to short utterances)."""

    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width_ratio: float = 0.05
    max_time_width: int = 40


def spec_augment(feats: torch.Tensor, cfg: SpecAugmentConfig, rng: np.random.Generator) -> None:
    """Masks ``feats`` (T, D) in place with the mean value."""
    t, d = feats.shape
    fill = feats.mean()
    for _ in range(cfg.freq_masks):
        w = int(rng.integers(0, cfg.freq_width + 1))
        f0 = int(rng.integers(0, max(1, d - w)))
        feats[:, f0 : f0 + w] = fill
    max_w = min(cfg.max_time_width, int(cfg.time_width_ratio * t))
    for _ in range(cfg.time_masks):
        w = int(rng.integers(0, max_w + 1))
        t0 = int(rng.integers(0, max(1, t - w)))
        feats[t0 : t0 + w, :] = fill
