"""Objective TTS measures: mel cepstral distortion (plain and DTW-aligned) and log-F0 RMSE."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import soxr

from speechnas.data.synth.espeak import Espeak
from speechnas.data.synth.voice import Voice
from speechnas.data.tts.mel import MelConfig, log_mel_np
from speechnas.evaluate.tts import MCD_SCALE, log_f0_rmse, mcd, mel_cepstrum

SR = 16000


def _smooth_log_mel(rng: np.random.Generator, frames: int, n_mels: int = 80) -> np.ndarray:
    """A log-mel-like sequence: a random spectral shape drifting slowly over time."""
    knots = rng.normal(scale=2.0, size=(8, n_mels)).cumsum(axis=1) * 0.3 - 4.0
    t = np.linspace(0, 7, frames)
    return np.stack([np.interp(t, np.arange(8), knots[:, m]) for m in range(n_mels)], axis=1)


def _harmonic(f0: np.ndarray, harmonics: int = 6) -> np.ndarray:
    """A voiced-like signal: harmonics of the instantaneous pitch f0 (Hz per sample) with 1/k
    amplitudes."""
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def _cosine(k: int, amplitude: float, frames: int, n_mels: int = 80) -> np.ndarray:
    """(frames, n_mels): ``amplitude * cos(pi k (m + 1/2) / M)`` in every frame."""
    m = np.arange(n_mels)
    return np.tile(amplitude * np.cos(np.pi * k * (m + 0.5) / n_mels), (frames, 1))


def test_mel_cepstrum_is_the_cosine_series_without_c0() -> None:
    x = _smooth_log_mel(np.random.default_rng(0), 30)
    c = mel_cepstrum(x, n=24)
    assert c.shape == (30, 24)
    full = scipy.fft.dct(x, type=2, norm="ortho", axis=1) * np.sqrt(2 / 80)
    np.testing.assert_allclose(c, full[:, 1:25])
    # A cosine of amplitude a at quefrency k is the coefficient c_k = a (SPTK's convention).
    np.testing.assert_allclose(mel_cepstrum(_cosine(5, 0.7, 2))[:, 4], 0.7, rtol=1e-12)
    # A loudness change (the same offset in every band) moves only c0: no change.
    np.testing.assert_allclose(mel_cepstrum(x + 3.0), c, atol=1e-9)
    with pytest.raises(ValueError, match="n: expected"):
        mel_cepstrum(x, n=80)


def test_mcd_is_zero_for_identical_and_known_for_one_cepstral_offset() -> None:
    x = _smooth_log_mel(np.random.default_rng(1), 50)
    assert mcd(x, x) == 0.0
    assert mcd(x, x, dtw=True) == 0.0
    # Offset cepstral coefficient c3 by 0.5 in every frame: exactly 0.5 * MCD_SCALE dB.
    y = x + _cosine(3, 0.5, 50)
    assert mcd(x, y) == pytest.approx(0.5 * MCD_SCALE, rel=1e-9)
    assert mcd(x, y) == pytest.approx(3.0709, abs=1e-4)  # 0.5 * 10 / ln 10 * sqrt 2
    # Beyond the n coefficients compared, the offset is not seen.
    z = x + _cosine(30, 0.5, 50)
    assert mcd(x, z) == pytest.approx(0.0, abs=1e-9)
    assert mcd(x, z, n=30) == pytest.approx(0.5 * MCD_SCALE, rel=1e-9)


def test_mcd_with_dtw_aligns_a_time_stretched_copy() -> None:
    rng = np.random.default_rng(2)
    x = _smooth_log_mel(rng, 60)
    # The same trajectory 1.5 times slower (linear interpolation of every band).
    t = np.linspace(0, 59, 90)
    slow = np.stack([np.interp(t, np.arange(60), x[:, m]) for m in range(80)], axis=1)
    other = _smooth_log_mel(rng, 90)
    with pytest.raises(ValueError, match="equal lengths"):
        mcd(x, slow)
    aligned = mcd(x, slow, dtw=True)
    unrelated = mcd(x, other, dtw=True)
    assert aligned < 0.1 * unrelated
    # Pairing in order after cropping (no alignment) is much worse than the DTW pairing.
    assert aligned < 0.2 * mcd(x, slow[:60])
    with pytest.raises(ValueError, match="mel bands"):
        mcd(x, x[:, :40])


def test_log_f0_rmse_near_zero_for_the_same_pitch_and_in_cents_for_a_shift() -> None:
    n = SR  # one second
    glide = np.linspace(120.0, 180.0, n)  # a rising contour
    ref = _harmonic(glide)
    assert log_f0_rmse(ref, ref, SR) == pytest.approx(0.0, abs=1e-9)
    # The same contour with another waveform shape (fewer harmonics): still the same pitch.
    assert log_f0_rmse(ref, _harmonic(glide, harmonics=3), SR) < 10.0
    # Two semitones up is 200 cents.
    up = _harmonic(glide * 2 ** (2 / 12))
    assert log_f0_rmse(ref, up, SR) == pytest.approx(200.0, abs=15.0)


def test_log_f0_rmse_aligns_signals_of_different_length() -> None:
    ref = _harmonic(np.linspace(120.0, 180.0, SR))
    slow = _harmonic(np.linspace(120.0, 180.0, SR * 3 // 2))  # the same glide, 1.5 times slower
    assert log_f0_rmse(ref, slow, SR) < 30.0
    # A steady pitch against a steady pitch three semitones up, longer: 300 cents on any path.
    # (A glide would not do: the MFCCs of a bare harmonic tone follow its pitch, so the path
    # would pair up frames of similar pitch and hide part of the shift.)
    steady = _harmonic(np.full(SR, 150.0))
    higher = _harmonic(np.full(SR * 3 // 2, 150.0 * 2 ** (3 / 12)))
    assert log_f0_rmse(steady, higher, SR) == pytest.approx(300.0, abs=15.0)
    silence = np.zeros(SR, dtype=np.float32)
    assert np.isnan(log_f0_rmse(ref, silence, SR))  # no frame voiced in both
    with pytest.raises(ValueError, match="syn_audio"):
        log_f0_rmse(ref, ref[:100], SR)


def test_on_espeak_speech_tempo_costs_little_and_other_words_or_pitch_cost_much() -> None:
    espeak = Espeak.get()

    def say(text: str, **prosody: int) -> np.ndarray:
        audio = espeak.synthesize(text, Voice("en-us", "m1", **prosody))
        return soxr.resample(audio, espeak.sample_rate, SR)

    text = "three one four one five"
    ref, slower = say(text), say(text, rate=130)
    other, higher = say("nine two six eight seven"), say(text, pitch=80)
    cfg = MelConfig(sample_rate=SR)
    ref_mel = log_mel_np(ref, cfg)
    tempo = mcd(ref_mel, log_mel_np(slower, cfg), dtw=True)
    assert tempo < 0.3 * mcd(ref_mel, log_mel_np(other, cfg), dtw=True)
    assert log_f0_rmse(ref, slower, SR) < 0.25 * log_f0_rmse(ref, higher, SR)
