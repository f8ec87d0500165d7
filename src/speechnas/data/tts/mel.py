"""Log-mel spectrograms for speech synthesis, their frame counts, and Griffin-Lim inversion.

The acoustic model predicts log-mel frames; durations are counted in the same frames, so the
framing here (centred frames, one every ``hop_length`` samples) is the single definition that
the corpus, the dataset and the vocoder share. :func:`log_mel` is the PyTorch version used in
training, :func:`log_mel_np` the numpy one for torch-free code, and :func:`griffin_lim` turns
predicted frames back into audio. torch is imported only inside :func:`log_mel`, so
synthesizing with this module loads no torch.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import librosa
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "MIN_MAGNITUDE",
    "MelConfig",
    "frame_durations",
    "frames",
    "griffin_lim",
    "log_mel",
    "log_mel_np",
    "mel_filters",
]

#: magnitudes are clamped to this before the log (-11.5 in log units: silence)
MIN_MAGNITUDE = 1e-5


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel filter bank settings; ``fmax`` at most ``sample_rate / 2``."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 200
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"mel.{name}: expected a positive integer, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(
                f"mel.win_length: {self.win_length} is longer than n_fft ({self.n_fft})"
            )
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"mel.fmin/fmax: expected 0 <= fmin < fmax <= sample_rate / 2 "
                f"({self.sample_rate / 2:g}), got fmin={self.fmin}, fmax={self.fmax}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelConfig:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"mel: unknown field(s) {unknown}; allowed: {allowed}")
        return cls(**d)


@cache
def mel_filters(cfg: MelConfig) -> np.ndarray:
    """The Slaney-normalised mel filter bank, float32 ``[n_mels, n_fft // 2 + 1]``."""
    return librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        htk=False,
        norm="slaney",
        dtype=np.float32,
    )


def frames(n_samples: int, cfg: MelConfig) -> int:
    """Frames of ``n_samples`` of audio: frame ``t`` is centred on sample ``t * hop_length``."""
    return 1 + n_samples // cfg.hop_length


def frame_durations(starts: list[int], n_samples: int, cfg: MelConfig) -> list[int]:
    """Frames of each of the segments starting at the sample indices ``starts`` (ascending, the
    first 0) of audio ``n_samples`` long; they sum to ``frames(n_samples, cfg)``.

    Frame ``t`` belongs to the segment that holds its centre, sample ``t * hop_length`` (the
    last sample for a centre at the very end), so a segment shorter than a hop may get none.
    """
    if not starts or starts[0] != 0 or any(b < a for a, b in itertools.pairwise(starts)):
        raise ValueError(f"segment starts must ascend from 0, got {starts[:8]}...")
    n = frames(n_samples, cfg)
    centres = np.minimum(np.arange(n) * cfg.hop_length, max(n_samples - 1, 0))
    owner = np.searchsorted(np.asarray(starts), centres, side="right") - 1
    return np.bincount(owner, minlength=len(starts)).tolist()


def log_mel(audio: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Natural-log mel magnitudes: ``[T]`` -> ``[frames, n_mels]``, ``[B, T]`` ->
    ``[B, frames, n_mels]`` (reflect-padded centred frames, Hann window of ``win_length``)."""
    import torch

    window = torch.hann_window(cfg.win_length, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(
        audio,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()  # (..., n_fft // 2 + 1, frames)
    fb = torch.from_numpy(mel_filters(cfg)).to(device=audio.device, dtype=audio.dtype)
    mel = torch.matmul(fb, spec)  # (..., n_mels, frames)
    return mel.clamp(min=MIN_MAGNITUDE).log().transpose(-1, -2)


def log_mel_np(audio: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """:func:`log_mel` in numpy: float32 ``[T]`` -> ``[frames, n_mels]``."""
    stft = librosa.stft(
        np.asarray(audio, dtype=np.float32),
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
    )  # (n_fft // 2 + 1, frames)
    spec = np.abs(stft)
    mel = mel_filters(cfg) @ spec  # (n_mels, frames)
    return np.log(np.maximum(mel, MIN_MAGNITUDE)).T.astype(np.float32)


def griffin_lim(
    log_mel: np.ndarray, cfg: MelConfig, *, n_iter: int = 32, seed: int = 0
) -> np.ndarray:
    """Audio for log-mel frames ``[frames, n_mels]``: float32 ``[(frames - 1) * hop_length]``.

    The mel magnitudes are mapped back to linear ones (non-negative least squares) and given
    phases by ``n_iter`` Griffin-Lim iterations, as ``librosa.feature.inverse.mel_to_audio``
    does; its initial phases come from numpy's global generator, so the two steps are called
    here with a generator seeded by ``seed``: the audio is a function of its arguments.
    """
    mag = np.exp(np.asarray(log_mel, dtype=np.float32)).T  # (n_mels, frames)
    if mag.ndim != 2 or mag.shape[0] != cfg.n_mels:
        raise ValueError(f"log_mel: expected [frames, {cfg.n_mels}], got {log_mel.shape}")
    stft = librosa.feature.inverse.mel_to_stft(
        mag,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        power=1.0,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        htk=False,
        norm="slaney",
    )
    audio = librosa.griffinlim(
        stft,
        n_iter=n_iter,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_fft=cfg.n_fft,
        window="hann",
        center=True,
        pad_mode="reflect",
        random_state=np.random.default_rng(seed),
    )
    return audio.astype(np.float32)
