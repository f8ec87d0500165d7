"""Acoustic features in PyTorch: log-mel filterbank and MFCC, plus training augmentation.

Kaldi filterbanks (kind "knf") are computed by kaldi-native-fbank in numpy, utterance by
utterance (:func:`speechnas.data.filters.kaldi_fbank`), the same call the transcriber makes.

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
    kaldi_fbank,
    mel_matrix,
    window,
)

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
        own = cfg.kind != "knf"  # kaldi-native-fbank brings its own window and filters
        win = torch.from_numpy(window(cfg)) if own else None
        self.register_buffer("window", win, persistent=False)
        self.register_buffer(
            "mel", torch.from_numpy(mel_matrix(cfg)) if own else None, persistent=False
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
        """Each row's valid samples through kaldi-native-fbank; frames past a row's end are 0."""
        rows = [
            torch.from_numpy(kaldi_fbank(w[: int(n)].numpy(), self.cfg))
            for w, n in zip(wave.float(), lengths, strict=True)
        ]
        frames = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
        feats = wave.new_zeros(len(rows), max(r.shape[0] for r in rows), self.cfg.n_mels)
        for b, r in enumerate(rows):
            feats[b, : r.shape[0]] = r
        return feats, frames


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
