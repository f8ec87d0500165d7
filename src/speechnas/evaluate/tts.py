"""Objective measures of synthesized speech against a reference: mel cepstral distortion and
the error of the pitch contour.

Both compare a synthesized utterance with a recording of the same text. Mel cepstral
distortion (MCD) measures the spectral envelope: the log-mel frames become cepstra (the
cosine series of the log-mel energies), c0 (overall loudness) is dropped, and the Euclidean
distance of the rest is scaled to decibels. Log-F0 RMSE measures the prosody: pYIN pitch
tracks of both signals, compared in cents on the frames voiced in both. When the two differ in
length (predicted durations do not reproduce the recording's), frames are paired along a
dynamic time warping path.

Everything here is numpy, scipy and librosa; no torch.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import scipy.fft

__all__ = ["MCD_SCALE", "log_f0_rmse", "mcd", "mel_cepstrum"]

#: dB per unit of cepstral distance: 10 / ln 10 * sqrt(2), the usual MCD constant.
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


def _check_log_mel(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a log-mel array (frames, n_mels), got shape {x.shape}")
    return x


def mel_cepstrum(log_mel: np.ndarray, n: int = 24) -> np.ndarray:
    """Mel cepstra c1..cn of natural-log mel frames. (T, M) → (T, n).

    The coefficients of the cosine series ``log E(m) = c0 + sum_k c_k cos(pi k (m + 1/2) / M)``
    of each frame's log-mel energies: the orthonormal DCT-II scaled by sqrt(2 / M), the
    convention of SPTK's mel-cepstra (``log |H| = sum_k c_k cos(k w)``), so distances come out
    on the scale of published MCDs. c0 (the mean log level) is dropped so a change of loudness
    alone costs nothing. ``n`` must be below M.
    """
    x = _check_log_mel("log_mel", log_mel)
    if not 1 <= n < x.shape[1]:
        raise ValueError(f"n: expected 1 <= n < n_mels = {x.shape[1]}, got {n}")
    ortho = scipy.fft.dct(x, type=2, norm="ortho", axis=1)[:, 1 : n + 1]
    return ortho * math.sqrt(2.0 / x.shape[1])


def mcd(
    ref_log_mel: np.ndarray, syn_log_mel: np.ndarray, *, dtw: bool = False, n: int = 24
) -> float:
    """Mel cepstral distortion in dB between two log-mel sequences (T, M) and (T', M).

    Per frame pair ``MCD_SCALE * ||c_ref - c_syn||`` over c1..cn (:func:`mel_cepstrum`),
    averaged over frames. Without ``dtw`` the frames are paired in order and T must equal T';
    with ``dtw`` they are paired along the DTW path of least total cepstral distance (librosa),
    and the average runs over the path.

    The cepstra are those of the log-mel energies (80 bands of the magnitude spectrum), not of
    an SPTK all-pass-warped spectral envelope: the scale is that of published MCDs, the values
    are close to but not the same as theirs.
    """
    ref_mel = _check_log_mel("ref_log_mel", ref_log_mel)
    syn_mel = _check_log_mel("syn_log_mel", syn_log_mel)
    if ref_mel.shape[1] != syn_mel.shape[1]:
        raise ValueError(
            f"syn_log_mel: {syn_mel.shape[1]} mel bands, the reference has {ref_mel.shape[1]}"
        )
    ref, syn = mel_cepstrum(ref_mel, n), mel_cepstrum(syn_mel, n)
    if dtw:
        _, path = librosa.sequence.dtw(X=ref.T, Y=syn.T, metric="euclidean")
        ref, syn = ref[path[::-1, 0]], syn[path[::-1, 1]]
    elif len(ref) != len(syn):
        raise ValueError(
            f"syn_log_mel: {len(syn)} frames, the reference has {len(ref)}; equal lengths are "
            "needed without dtw=True"
        )
    return float(MCD_SCALE * np.linalg.norm(ref - syn, axis=1).mean())


def _pitch_track(
    audio: np.ndarray, sample_rate: int, *, fmin: float, fmax: float, frame_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """pYIN F0 in Hz (NaN where unvoiced) and MFCC frames for alignment, on the same frames."""
    hop = frame_length // 4
    f0, _, _ = librosa.pyin(
        audio, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame_length, hop_length=hop
    )
    mfcc = librosa.feature.mfcc(
        y=audio, sr=sample_rate, n_mfcc=13, n_fft=frame_length, hop_length=hop
    )
    return f0, mfcc


def log_f0_rmse(
    ref_audio: np.ndarray,
    syn_audio: np.ndarray,
    sample_rate: int,
    *,
    fmin: float = 50.0,
    fmax: float = 500.0,
) -> float:
    """Root mean square difference in CENTS (1200 log2 of the F0 ratio) of the pitch contours.

    Both signals (float mono at ``sample_rate``) are tracked with pYIN between ``fmin`` and
    ``fmax`` Hz on ~64 ms frames with a quarter-frame hop. Signals of the same number of frames
    are paired in order; otherwise along the DTW path of their MFCCs. Only pairs voiced in
    both count; NaN when there is none.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive rate in Hz, got {sample_rate}")
    if not 0 < fmin < fmax:
        raise ValueError(f"fmin, fmax: expected 0 < fmin < fmax, got {fmin}, {fmax}")
    frame_length = 1 << math.ceil(math.log2(0.064 * sample_rate))
    tracks = []
    for name, audio in (("ref_audio", ref_audio), ("syn_audio", syn_audio)):
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or len(audio) < frame_length:
            raise ValueError(
                f"{name}: expected mono audio of at least {frame_length} samples, "
                f"got shape {audio.shape}"
            )
        tracks.append(
            _pitch_track(audio, sample_rate, fmin=fmin, fmax=fmax, frame_length=frame_length)
        )
    (f0_ref, mfcc_ref), (f0_syn, mfcc_syn) = tracks
    if len(f0_ref) != len(f0_syn):
        _, path = librosa.sequence.dtw(X=mfcc_ref, Y=mfcc_syn, metric="euclidean")
        f0_ref, f0_syn = f0_ref[path[::-1, 0]], f0_syn[path[::-1, 1]]
    both = np.isfinite(f0_ref) & np.isfinite(f0_syn)
    if not both.any():
        return float("nan")
    cents = 1200.0 * np.log2(f0_syn[both] / f0_ref[both])
    return float(np.sqrt(np.mean(cents**2)))
