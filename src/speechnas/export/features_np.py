"""Log-mel filterbank and MFCC features in numpy, equal to ``speechnas.data.features``.

Kaldi filterbanks (kind "knf") come from kaldi-native-fbank through the same function training
calls (:func:`speechnas.data.filters.kaldi_fbank`).

The same window, mel filters, DCT and log floor (all from ``speechnas.data.filters``), the same
framing without centre padding (frame ``t`` covers samples ``[t*hop, t*hop + n_fft)``), and the
same padding of a waveform shorter than one FFT. Nothing here imports torch.
"""

from __future__ import annotations

import functools

import numpy as np

from speechnas.data.filters import (
    LOG_FLOOR,
    FeatureConfig,
    dct_matrix,
    kaldi_fbank,
    mel_matrix,
    window,
)

__all__ = ["compute_features", "input_length"]


@functools.lru_cache(maxsize=8)
def _matrices(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    dct = dct_matrix(cfg.n_mels, cfg.n_mfcc) if cfg.kind == "mfcc" else None
    return window(cfg), mel_matrix(cfg), dct


def input_length(cfg: FeatureConfig, num_samples: int) -> int:
    """Valid frames of a waveform of ``num_samples`` (samples themselves for "waveform")."""
    return num_samples if cfg.kind == "waveform" else cfg.num_frames(num_samples)


def compute_features(wave: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """wave (N,) float at ``cfg.sample_rate`` → features (T, D) float32, valid frames.

    For ``kind="waveform"`` the samples come back unchanged as (N,) float32: the learnable
    frontend inside the model makes the frames. A waveform shorter than one FFT is zero-padded
    to one frame whose valid count is 0, as in training.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"wave: expected a 1-D array of samples, got shape {wave.shape}")
    n = input_length(cfg, wave.shape[0])
    if cfg.kind == "waveform":
        return wave, n
    if cfg.kind == "knf":
        return kaldi_fbank(wave, cfg), n
    win, mel, dct = _matrices(cfg)
    if wave.shape[0] < cfg.n_fft:
        wave = np.pad(wave, (0, cfg.n_fft - wave.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(wave, cfg.n_fft)[:: cfg.hop]  # (T, n_fft)
    spec = np.fft.rfft(frames * win, axis=-1)
    power = (spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2).astype(
        np.float32
    )
    feats = np.log(np.maximum(power @ mel, LOG_FLOOR))
    if dct is not None:
        feats = feats @ dct
    return np.ascontiguousarray(feats, dtype=np.float32), n
