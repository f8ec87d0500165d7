"""Reading and writing audio files.

Everything goes through libsndfile (via ``soundfile``), so WAV, FLAC, OGG and the other formats it
knows are all accepted. Audio is returned as float32 mono in [-1, 1] at the requested rate.
Every failure is an :class:`AudioError` whose message names the file and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "TRUNCATION_TOLERANCE_S",
    "AudioError",
    "audio_info",
    "check_span",
    "read_audio",
    "write_flac",
]

#: How far (seconds) a requested span may run past the end of a file before it counts as truncated.
TRUNCATION_TOLERANCE_S = 0.05


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or shorter than requested."""


def _open(path: Path) -> sf.SoundFile:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        detail = getattr(err, "error_string", None) or str(err)
        if "not a regular file" in detail:  # libsndfile's misleading text for unknown formats
            detail = "format not recognised"
        raise AudioError(f"{path}: cannot read audio (corrupt or unsupported): {detail}") from err


def audio_info(path: Path | str) -> tuple[int, int, int]:
    """Return ``(sample_rate, frames, channels)`` from the file header.

    Raises :class:`AudioError` for a missing, unreadable or empty file.
    """
    path = Path(path)
    with _open(path) as f:
        info = (int(f.samplerate), int(f.frames), int(f.channels))
    if info[1] <= 0:
        raise AudioError(f"{path}: audio file is empty (0 frames)")
    return info


def check_span(
    path: Path | str, *, sample_rate: int, frames: int, offset: float, duration: float | None
) -> None:
    """Check that ``[offset, offset + duration)`` lies inside a file of ``frames`` samples.

    A span may overrun the end by up to :data:`TRUNCATION_TOLERANCE_S`; more than that raises
    :class:`AudioError` ("truncated"), as does an offset at or past the end of the file.
    """
    length = frames / sample_rate
    if offset < 0:
        raise AudioError(f"{path}: negative offset {offset:g} s")
    if duration is not None and duration <= 0:
        raise AudioError(f"{path}: duration must be positive, got {duration:g} s")
    if round(offset * sample_rate) >= frames:
        raise AudioError(
            f"{path}: offset {offset:.3f} s is beyond the end of the audio ({length:.3f} s)"
        )
    if duration is not None and offset + duration > length + TRUNCATION_TOLERANCE_S:
        raise AudioError(
            f"{path}: audio is truncated: {offset:.3f}+{duration:.3f} s requested "
            f"but the file is only {length:.3f} s long"
        )


def read_audio(
    path: Path | str, *, sample_rate: int, offset: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """Read ``[offset, offset + duration)`` seconds of ``path`` as float32 mono at ``sample_rate``.

    Only the requested frames are read. Multichannel audio is averaged to mono; audio at another
    rate is resampled with soxr (HQ). ``duration=None`` reads to the end of the file.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise AudioError(f"{path}: target sample rate must be positive, got {sample_rate}")
    with _open(path) as f:
        sr_in, frames = int(f.samplerate), int(f.frames)
        if frames <= 0:
            raise AudioError(f"{path}: audio file is empty (0 frames)")
        check_span(path, sample_rate=sr_in, frames=frames, offset=offset, duration=duration)
        start = round(offset * sr_in)
        stop = frames if duration is None else min(frames, start + max(1, round(duration * sr_in)))
        try:
            f.seek(start)
            data = f.read(stop - start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioError(f"{path}: cannot decode audio (corrupt file?): {err}") from err
    missing = (stop - start) - data.shape[0]
    if data.shape[0] == 0 or missing > TRUNCATION_TOLERANCE_S * sr_in:
        raise AudioError(
            f"{path}: audio is truncated: header promises {stop - start} frames from "
            f"{offset:.3f} s but only {data.shape[0]} could be decoded"
        )
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sr_in != sample_rate:
        mono = soxr.resample(mono, sr_in, sample_rate, quality="HQ")
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def write_flac(path: Path | str, x: np.ndarray, sample_rate: int) -> None:
    """Write ``x`` (``(frames,)`` or ``(frames, channels)``, float in [-1, 1]) as 16-bit FLAC.

    Values outside [-1, 1] are clipped. Parent folders are created as needed.
    """
    path = Path(path)
    data = np.asarray(x, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError(f"{path}: audio must be 1-D or 2-D (frames, channels), got {data.shape}")
    if sample_rate <= 0:
        raise ValueError(f"{path}: sample rate must be positive, got {sample_rate}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(data, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
