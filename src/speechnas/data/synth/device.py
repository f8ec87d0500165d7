"""The recording device and its channel: microphone colouring, input level, DC offset, clipping
and lossy codecs.

What a phone or a cheap USB microphone does to speech before a recogniser sees it, as seeded
functions of mono ``float`` numpy arrays (see :mod:`speechnas.data.synth.effects`, which draws
and applies them with the other effects):

- :func:`parametric_eq`: a chain of peaking biquads (the RBJ audio-EQ cookbook), the frequency
  response of a microphone, a loudspeaker or a room's coloration; :func:`random_eq` draws one.
- :func:`overdrive`: hard clipping of a signal driven ``db`` decibels above full scale.
- :func:`codec`: a real round trip through a lossy codec of libsndfile (Opus in Ogg at a drawn
  bit rate, GSM 06.10 at 8 kHz, Vorbis, MP3 at a drawn bit rate, G.726 ADPCM at 32 and 24
  kbit/s at 8 kHz), so the artefacts are the codec's own rather than a band-limit imitation.
  AMR is not among them: neither libsndfile nor any package installable here without ffmpeg
  encodes it; narrow-band Opus at its lowest rates (about 9 kbit/s) is the nearest.

Written here rather than taken from ``audiomentations``: its transforms draw their parameters
from NumPy's global random state, while every effect of a corpus must follow from the
utterance's own generator (a corpus is the same whatever the number of workers), and its codec
transforms need ffmpeg or lameenc, which a machine of this kind does not have. libsndfile's
codecs come with ``soundfile``, already a dependency.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import soxr

__all__ = ["CODECS", "DEFAULT_CODECS", "codec", "overdrive", "parametric_eq", "random_eq"]

#: codec name -> (container, subtype, the sample rate it runs at or None for the signal's own,
#: libsndfile's compression levels at quality 1 and 0 or None for a fixed rate). Opus's range is
#: the speech range of VoIP, about 43 down to 9 kbit/s on the built-in corpus's speech; Vorbis
#: spans about 68 to 25 kbit/s; GSM 06.10 is 13 kbit/s; MP3 (MPEG-2 layer III at 16 kHz) about
#: 30 down to 8 kbit/s; G.726 runs at 32 (``g726``) or 24 kbit/s (``g726-24``).
CODECS: dict[str, tuple[str, str, int | None, tuple[float, float] | None]] = {
    "opus": ("OGG", "OPUS", 16000, (0.85, 0.99)),
    "gsm": ("WAV", "GSM610", 8000, None),
    "vorbis": ("OGG", "VORBIS", None, (0.01, 0.99)),
    "mp3": ("MP3", "MPEG_LAYER_III", None, (0.5, 0.99)),
    "g726": ("WAV", "G721_32", 8000, None),
    "g726-24": ("AU", "G723_24", 8000, None),
}
#: The codecs a device draws from unless told otherwise: those of the built-in corpus's
#: ``test-device`` split (adding one to this tuple would change that split and its digest).
DEFAULT_CODECS: tuple[str, ...] = ("opus", "gsm", "vorbis")


def _peaking(freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One second-order section of a peaking filter (RBJ cookbook), normalised to a0 = 1."""
    a = 10.0 ** (gain_db / 40.0)
    w = 2.0 * math.pi * freq / sample_rate
    alpha = math.sin(w) / (2.0 * q)
    cos = math.cos(w)
    b = np.array([1 + alpha * a, -2 * cos, 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * cos, 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])


def parametric_eq(x: np.ndarray, sample_rate: int, bands: Sequence[Sequence[float]]) -> np.ndarray:
    """``x`` through peaking filters ``bands`` = ``[(centre Hz, gain dB, Q), ...]``.

    A band whose centre is at or above the Nyquist frequency is an error (it names the band).
    """
    a = np.asarray(x, dtype=np.float64)
    if not bands or a.size == 0:
        return a
    sos = []
    for i, band in enumerate(bands):
        freq, gain, q = (float(v) for v in band)
        if not (0 < freq < sample_rate / 2 and q > 0 and math.isfinite(gain)):
            raise ValueError(
                f"eq band {i} = {list(band)}: expected (centre in (0, {sample_rate / 2:g}) Hz, "
                "finite gain dB, Q > 0)"
            )
        sos.append(_peaking(freq, gain, q, sample_rate))
    from scipy.signal import sosfilt  # on first use: scipy.signal is slow to import

    return sosfilt(np.stack(sos), a)


def random_eq(
    rng: np.random.Generator,
    sample_rate: int,
    *,
    gain_db: tuple[float, float] = (-9.0, 9.0),
    bands: tuple[int, int] = (3, 6),
) -> list[list[float]]:
    """Draws a device response: ``bands`` peaking filters (count uniform in the range) with
    centres log-uniform in 80 Hz - 0.45 x the sample rate, gains uniform in ``gain_db`` and Q
    log-uniform in 0.5-4; values rounded so that the stored choice reproduces exactly."""
    n = int(rng.integers(bands[0], bands[1] + 1))
    lo, hi = math.log(80.0), math.log(0.45 * sample_rate)
    out = []
    for _ in range(n):
        freq = math.exp(rng.uniform(lo, hi))
        gain = rng.uniform(*gain_db)
        q = math.exp(rng.uniform(math.log(0.5), math.log(4.0)))
        out.append([round(freq, 1), round(gain, 2), round(q, 3)])
    return out


def overdrive(x: np.ndarray, db: float) -> np.ndarray:
    """``x`` scaled so that its peak is ``db`` decibels above full scale, clipped at ±1 and
    scaled back to its original peak (the clipped shape at the original level)."""
    a = np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    if peak == 0 or db <= 0:
        return a
    gain = 10.0 ** (db / 20.0) / peak
    return np.clip(a * gain, -1.0, 1.0) / gain


def codec(x: np.ndarray, sample_rate: int, name: str, quality: float) -> np.ndarray:
    """``x`` encoded and decoded by the codec ``name`` (see :data:`CODECS`) at ``quality`` in
    [0, 1] (0: the lowest bit rate of the codec's range in :data:`CODECS`, 1: the highest; GSM
    has one fixed rate). The output has the input's length and sample rate."""
    if name not in CODECS:
        raise ValueError(f"codec: {name!r} is not one of {sorted(CODECS)}")
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"codec quality must be in [0, 1], got {quality}")
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return a
    container, subtype, rate, levels = CODECS[name]
    rate = rate or sample_rate
    y = a if rate == sample_rate else np.asarray(soxr.resample(a, sample_rate, rate))
    peak = float(np.max(np.abs(y)))
    scale = 0.95 / peak if peak > 0.95 else 1.0  # the codec's input must not clip
    buf = io.BytesIO()
    level = None if levels is None else levels[1] - (levels[1] - levels[0]) * quality
    sf.write(buf, y * scale, rate, format=container, subtype=subtype, compression_level=level)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float64")
    z = z / scale
    if rate != sample_rate:
        z = np.asarray(soxr.resample(z, rate, sample_rate))
    if z.size >= a.size:
        return z[: a.size]
    return np.concatenate([z, np.zeros(a.size - z.size)])
