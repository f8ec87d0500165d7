"""Tests for speechnas.data.audio on real files written with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechnas.data.audio import AudioError, audio_info, read_audio, write_flac


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_reads_mono_at_native_rate(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"a.{ext}"
    x = sine(440, 1.0, 16000)
    sf.write(path, x, 16000)
    y = read_audio(path, sample_rate=16000)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 16000
    np.testing.assert_allclose(y, x, atol=1e-3)
    assert audio_info(path) == (16000, 16000, 1)


def test_stereo_is_mixed_down_by_mean(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left, right = np.full(800, 0.5, np.float32), np.full(800, -0.25, np.float32)
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    assert audio_info(path) == (8000, 800, 2)
    y = read_audio(path, sample_rate=8000)
    np.testing.assert_allclose(y, 0.125, atol=1e-6)


@pytest.mark.parametrize("sr_in", [8000, 44100])
def test_resampling_keeps_length_and_pitch(tmp_path: Path, sr_in: int) -> None:
    path = tmp_path / f"tone{sr_in}.flac"
    sf.write(path, sine(440, 1.0, sr_in), sr_in)
    y = read_audio(path, sample_rate=16000)
    assert abs(len(y) - 16000) <= 1
    assert abs(peak_hz(y, 16000) - 440) < 2
    assert np.abs(y).max() <= 1.0


def test_offset_and_duration_read_only_that_span(tmp_path: Path) -> None:
    path = tmp_path / "ramp.wav"
    sr = 1000
    x = (np.arange(2000) / 2000).astype(np.float32)
    sf.write(path, x, sr, subtype="FLOAT")
    y = read_audio(path, sample_rate=sr, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(y, x[500:750])
    np.testing.assert_array_equal(read_audio(path, sample_rate=sr, offset=1.5), x[1500:])


def test_small_overrun_is_tolerated_large_one_is_truncation(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, sine(440, 1.0, 16000), 16000)
    assert len(read_audio(path, sample_rate=16000, offset=0.5, duration=0.52)) == 8000
    with pytest.raises(AudioError, match=r"short\.wav.*truncated"):
        read_audio(path, sample_rate=16000, offset=0.5, duration=1.0)


def test_offset_beyond_end(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, sine(440, 1.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"short\.wav.*beyond the end"):
        read_audio(path, sample_rate=16000, offset=2.0)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav.*not found"):
        read_audio(path, sample_rate=16000)
    with pytest.raises(AudioError, match="not found"):
        audio_info(path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.flac"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match=r"junk\.flac.*cannot read audio"):
        read_audio(path, sample_rate=16000)
    with pytest.raises(AudioError, match="cannot read audio"):
        audio_info(path)


def test_zero_frame_and_zero_byte_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        read_audio(empty, sample_rate=16000)
    with pytest.raises(AudioError, match="empty"):
        audio_info(empty)
    zero_bytes = tmp_path / "zero.flac"
    zero_bytes.touch()
    with pytest.raises(AudioError, match=r"zero\.flac"):
        audio_info(zero_bytes)


def test_write_flac_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "out.flac"
    x = sine(300, 0.5, 16000)
    x[:10] = 2.0  # clipped on write
    write_flac(path, x, 16000)
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", 16000)
    y = read_audio(path, sample_rate=16000)
    assert len(y) == len(x)
    np.testing.assert_allclose(y[10:], x[10:], atol=1e-4)
    assert y[:10].max() <= 1.0 and y[:10].min() > 0.99
