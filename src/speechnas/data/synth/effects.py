"""Acoustic effects for the synthetic corpus: noise, reverberation, the recording device and a
telephone channel.

All functions work on mono ``float32`` numpy arrays (1-D) at a given sample rate and return new
``float32`` arrays; internally they compute in ``float64``. Every random choice is drawn from an
explicit :class:`numpy.random.Generator`.

A split's effect distribution is an :class:`EffectConfig`; :func:`sample_effects` draws one
concrete, JSON-serialisable choice from it (to store in the manifest) and :func:`apply_effects`
applies such a choice to a waveform: reverb, additive noise, the device (microphone response,
clipping, DC offset, input level, codec; :mod:`speechnas.data.synth.device`), then the
telephone channel.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import soxr

from speechnas.data.synth.device import (
    CODECS,
    DEFAULT_CODECS,
    codec,
    overdrive,
    parametric_eq,
    random_eq,
)

__all__ = [
    "NOISE_EXPONENTS",
    "NOISE_KINDS",
    "REVERB_KINDS",
    "TELEPHONE_RATE",
    "EffectConfig",
    "active_power",
    "apply_effects",
    "babble",
    "clip_guard",
    "coloured_noise",
    "mix_at_snr",
    "mu_law_decode",
    "mu_law_encode",
    "normalise_peak",
    "reverberate",
    "room_rir",
    "sample_effects",
    "synthetic_rir",
    "telephone",
]

#: Spectral exponent of each coloured noise: power spectrum ∝ 1 / f**exponent.
NOISE_EXPONENTS: dict[str, float] = {"white": 0.0, "pink": 1.0, "brown": 2.0}
#: All noise kinds an :class:`EffectConfig` may name.
NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "babble")
#: How a reverberation is made: :func:`synthetic_rir` or :func:`room_rir`.
REVERB_KINDS: tuple[str, ...] = ("synthetic", "room")
#: Sample rate of the telephone channel (G.711).
TELEPHONE_RATE = 8000


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _as_mono(x: np.ndarray, name: str = "x") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D mono signal, got shape {a.shape}")
    return a


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit_rms(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 0 else x


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Tile (repeat) or cut ``x`` to exactly ``n`` samples."""
    if x.size == 0:
        raise ValueError("cannot tile an empty signal")
    return np.resize(x, n)


def _pad_or_cut(x: np.ndarray, n: int) -> np.ndarray:
    if x.size >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - x.size, dtype=x.dtype)])


def normalise_peak(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale ``x`` so that its largest absolute sample is ``peak`` (a silent input stays silent)."""
    if not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"peak must be a finite number > 0, got {peak}")
    a = _as_mono(x)
    m = float(np.max(np.abs(a))) if a.size else 0.0
    return (a * (peak / m) if m > 0 else a).astype(np.float32)


def clip_guard(x: np.ndarray) -> np.ndarray:
    """Replace NaN/inf by finite values and clip to [-1, 1], so the result is safe to write."""
    a = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(a, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------


def coloured_noise(rng: np.random.Generator, n: int, *, exponent: float) -> np.ndarray:
    """``n`` samples of noise with power spectrum ∝ 1/f**exponent, with unit RMS.

    ``exponent`` 0 is white, 1 pink and 2 brown noise. White Gaussian noise is shaped in the
    rFFT domain (amplitude ∝ f**(-exponent/2)); the DC bin is removed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not math.isfinite(exponent):
        raise ValueError(f"exponent must be finite, got {exponent}")
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    gain = np.zeros_like(f)
    gain[1:] = f[1:] ** (-exponent / 2.0)
    x = np.fft.irfft(spec * gain, n=n)
    return _unit_rms(x).astype(np.float32)


def babble(
    rng: np.random.Generator,
    sources: Sequence[np.ndarray],
    n: int,
    *,
    min_talkers: int = 3,
    max_talkers: int = 6,
) -> np.ndarray:
    """Babble noise: the sum of ``min_talkers``..``max_talkers`` speech signals, unit RMS.

    The number of talkers is uniform in that range; talkers are picked from ``sources`` without
    replacement when there are enough of them (with replacement otherwise), each is circularly
    shifted by a random offset, tiled/cut to ``n`` samples and normalised to unit RMS before
    summing.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_talkers <= max_talkers:
        raise ValueError(f"need 1 <= min_talkers <= max_talkers, got {min_talkers}, {max_talkers}")
    usable = [s for s in (_as_mono(s, "source") for s in sources) if s.size and np.any(s)]
    if not usable:
        raise ValueError("babble needs at least one non-empty, non-silent source")
    k = int(rng.integers(min_talkers, max_talkers + 1))
    if len(usable) >= k:
        picks = rng.choice(len(usable), size=k, replace=False)
    else:
        picks = rng.integers(0, len(usable), size=k)
    out = np.zeros(n, dtype=np.float64)
    for i in picks:
        src = usable[int(i)]
        shifted = np.roll(src, -int(rng.integers(src.size)))
        if n:
            out += _unit_rms(_fit_length(shifted, n))
    return _unit_rms(out).astype(np.float32)


def active_power(x: np.ndarray, *, frame_len: int = 256, threshold_db: float = -40.0) -> float:
    """Mean power of ``x`` over its active frames.

    ``x`` is cut into non-overlapping frames of ``frame_len`` samples (the last may be shorter);
    a frame is active when its mean power is within ``threshold_db`` of the loudest frame's.
    Returns 0.0 for an empty or silent signal.
    """
    if frame_len < 1:
        raise ValueError(f"frame_len must be >= 1, got {frame_len}")
    a = _as_mono(x)
    if a.size == 0:
        return 0.0
    n_frames = -(-a.size // frame_len)
    padded = np.zeros(n_frames * frame_len)
    padded[: a.size] = a
    sums = np.sum(np.square(padded).reshape(n_frames, frame_len), axis=1)
    counts = np.full(n_frames, float(frame_len))
    counts[-1] = a.size - (n_frames - 1) * frame_len
    energies = sums / counts
    top = float(energies.max())
    if top <= 0:
        return 0.0
    active = energies >= top * 10.0 ** (threshold_db / 10.0)
    return float(sums[active].sum() / counts[active].sum())


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, *, frame_len: int = 256
) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so that the SNR is ``snr_db``.

    The SNR is 10*log10(P_speech / P_noise), with P_speech the :func:`active_power` of the
    speech (frames within 40 dB of the loudest one) and P_noise the mean power of the noise after
    it has been tiled/cut to the speech length.
    """
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    s = _as_mono(speech, "speech")
    if s.size == 0:
        return s.astype(np.float32)
    p_s = active_power(s, frame_len=frame_len)
    if p_s <= 0:
        raise ValueError("speech is silent; the SNR is undefined")
    v = _fit_length(_as_mono(noise, "noise"), s.size)
    p_n = float(np.mean(np.square(v)))
    if p_n <= 0:
        raise ValueError("noise is silent; cannot reach the requested SNR")
    scale = math.sqrt(p_s / (p_n * 10.0 ** (snr_db / 10.0)))
    return (s + scale * v).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Reverberation
# ---------------------------------------------------------------------------------------------


def synthetic_rir(
    rng: np.random.Generator,
    sample_rate: int,
    *,
    rt60: float,
    drr_db: tuple[float, float] = (-2.0, 8.0),
) -> np.ndarray:
    """A simple synthetic room impulse response with reverberation time ``rt60`` seconds.

    Made of a direct-path impulse of height 1 at sample 0, 3-6 sparse early reflections between
    2 and 50 ms, and a Gaussian-noise diffuse tail whose amplitude decays as
    exp(-3 ln(10) t / rt60), i.e. its energy falls by 60 dB in ``rt60`` seconds. The tail starts
    after 1 ms with a 5 ms build-up and is scaled so that the direct-to-reverberant energy ratio
    is uniform in ``drr_db``. The response lasts 1.1 * rt60 + 50 ms.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if not (math.isfinite(rt60) and rt60 > 0):
        raise ValueError(f"rt60 must be a finite number of seconds > 0, got {rt60}")
    lo_drr, hi_drr = drr_db
    if not lo_drr <= hi_drr:
        raise ValueError(f"drr_db must be a (low, high) pair with low <= high, got {drr_db}")
    n = max(2, math.ceil((1.1 * rt60 + 0.05) * sample_rate))
    t = np.arange(n) / sample_rate
    decay = 3.0 * math.log(10.0) / rt60  # amplitude decay rate in 1/s

    # Diffuse tail.
    onset = 0.001
    tail = rng.standard_normal(n) * np.exp(-decay * t)
    tail *= 1.0 - np.exp(-np.clip(t - onset, 0.0, None) / 0.005)
    tail[t <= onset] = 0.0
    drr = float(rng.uniform(lo_drr, hi_drr))
    tail_energy = float(np.sum(np.square(tail)))
    if tail_energy > 0:
        tail *= math.sqrt(10.0 ** (-drr / 10.0) / tail_energy)

    h = tail
    h[0] = 1.0
    # Sparse early reflections.
    k = int(rng.integers(3, 7))
    times = rng.uniform(0.002, 0.05, size=k)
    amps = rng.uniform(0.1, 0.5, size=k) * np.exp(-decay * times)
    signs = np.where(rng.random(k) < 0.5, -1.0, 1.0)
    idx = np.clip(np.round(times * sample_rate).astype(np.int64), 1, n - 1)
    np.add.at(h, idx, signs * amps)
    return h.astype(np.float32)


def room_rir(rng: np.random.Generator, sample_rate: int, *, rt60: float) -> np.ndarray:
    """A room impulse response whose early part comes from the image method in a random
    shoebox room (pyroomacoustics: walls absorbing so that Sabine's RT60 is ``rt60``, images up
    to order 6, so the first reflections follow the room's geometry) and whose late part is the
    exponentially decaying diffuse tail of :func:`synthetic_rir` from 50 ms on. The room
    (3-10 x 2.5-8 x 2.4-4 m), source and microphone (at least 0.5 m from the walls and 0.5 m
    apart) are drawn from ``rng``; the response starts at the direct path, height 1."""
    import pyroomacoustics as pra

    if not (math.isfinite(rt60) and rt60 > 0):
        raise ValueError(f"rt60 must be a finite number of seconds > 0, got {rt60}")
    for _ in range(8):  # a small room cannot reach a long RT60: draw another
        dims = np.array([rng.uniform(3, 10), rng.uniform(2.5, 8), rng.uniform(2.4, 4)])
        src, mic = (rng.uniform(0.5, dims - 0.5) for _ in range(2))
        if np.linalg.norm(src - mic) < 0.5:
            continue
        try:
            absorption, _ = pra.inverse_sabine(rt60, dims)
        except ValueError:
            continue
        break
    else:
        return synthetic_rir(rng, sample_rate, rt60=rt60)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=6)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    early = np.asarray(room.rir[0][0], dtype=np.float64)
    early = early[max(0, int(np.argmax(np.abs(early))) - 2) :]
    early /= float(np.max(np.abs(early)))
    h = synthetic_rir(rng, sample_rate, rt60=rt60).astype(np.float64)
    cut = round(0.05 * sample_rate)
    h[:cut] = 0.0  # the tail only, from 50 ms
    n = min(early.size, cut)
    fade = np.ones(early.size)
    fade[n - n // 5 : n] = np.linspace(1.0, 0.0, n // 5)
    fade[n:] = 0.0
    out = np.zeros(max(h.size, early.size))
    out[: h.size] += h
    out[: early.size] += early * fade
    return out.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``x`` with ``rir`` (FFT convolution), cut to ``len(x)``, rescaled to x's peak."""
    a = _as_mono(x)
    h = _as_mono(rir, "rir")
    if a.size == 0 or h.size == 0:
        return a.astype(np.float32)
    n = a.size + h.size - 1
    nfft = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(a, nfft) * np.fft.rfft(h, nfft), nfft)[: a.size]
    peak_in = float(np.max(np.abs(a)))
    peak_out = float(np.max(np.abs(y)))
    if peak_out > 0:
        y *= peak_in / peak_out
    return y.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Telephone channel
# ---------------------------------------------------------------------------------------------

_MU = 255.0


def mu_law_encode(x: np.ndarray) -> np.ndarray:
    """G.711-style mu-law (mu = 255) companding of ``x`` (clipped to [-1, 1]) to 8-bit codes.

    A code holds the sign in bit 7 (set for negative values) and a 7-bit magnitude, the
    uniformly quantised log-compressed amplitude.
    """
    a = np.clip(_as_mono(x), -1.0, 1.0)
    y = np.log1p(_MU * np.abs(a)) / math.log1p(_MU)
    mag = np.round(y * 127.0).astype(np.uint8)
    return np.where(a < 0, mag | 0x80, mag).astype(np.uint8)


def mu_law_decode(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`mu_law_encode`: 8-bit codes back to float samples in [-1, 1]."""
    c = np.asarray(codes, dtype=np.uint8)
    y = (c & 0x7F).astype(np.float64) / 127.0
    mag = np.expm1(y * math.log1p(_MU)) / _MU
    return np.where(c & 0x80, -mag, mag)


def _band_pass(
    x: np.ndarray, sample_rate: int, lo: float, hi: float, lo_width: float, hi_width: float
) -> np.ndarray:
    """FFT-domain band-pass with raised-cosine edges.

    The gain rises from 0 at ``lo - lo_width`` to 1 at ``lo`` and falls from 1 at ``hi`` to 0 at
    ``hi + hi_width``.
    """
    if x.size == 0:
        return x
    f = np.fft.rfftfreq(x.size, d=1.0 / sample_rate)
    g = np.zeros_like(f)
    a, b = lo - lo_width, hi + hi_width
    g[(f >= lo) & (f <= hi)] = 1.0
    rise = (f > a) & (f < lo)
    g[rise] = 0.5 - 0.5 * np.cos(np.pi * (f[rise] - a) / lo_width)
    fall = (f > hi) & (f < b)
    g[fall] = 0.5 + 0.5 * np.cos(np.pi * (f[fall] - hi) / hi_width)
    return np.fft.irfft(np.fft.rfft(x) * g, n=x.size)


def telephone(x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Simulate a narrow-band telephone channel; the output has the input's length.

    Steps: band-pass to the telephone band (lower edge uniform in 280-330 Hz with an 80 Hz
    roll-off below it, upper edge uniform in 3200-3450 Hz with a 150 Hz roll-off above it),
    resample to 8 kHz with soxr, G.711 mu-law companding to 8 bits at a random codec input level
    (peak uniform in 0.25-0.95 of full scale; the gain is undone after decoding), the same
    band-pass again as the receive filter, and resample back to ``sample_rate``.
    """
    if sample_rate < TELEPHONE_RATE:
        raise ValueError(f"sample_rate must be >= {TELEPHONE_RATE}, got {sample_rate}")
    a = _as_mono(x)
    lo = float(rng.uniform(280.0, 330.0))
    hi = float(rng.uniform(3200.0, 3450.0))
    level = float(rng.uniform(0.25, 0.95))
    if a.size == 0:
        return a.astype(np.float32)

    def band(sig: np.ndarray, sr: int) -> np.ndarray:
        return _band_pass(sig, sr, lo, hi, lo_width=80.0, hi_width=150.0)

    y = band(a, sample_rate)
    if sample_rate != TELEPHONE_RATE:
        y = np.asarray(soxr.resample(y, sample_rate, TELEPHONE_RATE), dtype=np.float64)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0:
        gain = level / peak
        y = mu_law_decode(mu_law_encode(y * gain)) / gain
    y = band(y, TELEPHONE_RATE)
    if sample_rate != TELEPHONE_RATE:
        y = np.asarray(soxr.resample(y, TELEPHONE_RATE, sample_rate), dtype=np.float64)
    return _pad_or_cut(y, a.size).astype(np.float32)


def _device(y: np.ndarray, sample_rate: int, choice: Mapping[str, Any]) -> np.ndarray:
    """The device keys of ``choice`` applied in order: EQ, clipping, DC, level, codec."""
    if choice.get("eq"):
        nyquist = sample_rate / 2
        y = parametric_eq(y, sample_rate, [b for b in choice["eq"] if float(b[0]) < nyquist])
    if choice.get("clip_db") is not None:
        y = overdrive(y, float(choice["clip_db"]))
    if choice.get("dc") is not None:
        y = y + float(choice["dc"])
    if choice.get("level_db") is not None:
        y = y * 10.0 ** (float(choice["level_db"]) / 20.0)
    if choice.get("codec") is not None:
        y = codec(y, sample_rate, str(choice["codec"]), float(choice.get("codec_quality", 0.5)))
    return _as_mono(y)


# ---------------------------------------------------------------------------------------------
# Effect distributions
# ---------------------------------------------------------------------------------------------

_SNR_RANGE = (-30.0, 100.0)
_RT60_RANGE = (0.05, 3.0)
_DEVICE_KEYS = ("eq", "clip_db", "dc", "level_db", "codec", "codec_quality")


def _check_prob(name: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(name: str, r: Any, bounds: tuple[float, float], unit: str) -> tuple[float, float]:
    lo_b, hi_b = bounds
    msg = (
        f"{name} must be a (low, high) pair of numbers with {lo_b:g} <= low <= high <= {hi_b:g}"
        f" {unit}, got {r!r}"
    )
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(msg) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo_b <= lo <= hi <= hi_b):
        raise ValueError(msg)
    return lo, hi


@dataclass(frozen=True)
class EffectConfig:
    """The distribution of acoustic effects for one split.

    Each utterance independently gets additive noise with probability ``noise_prob`` (kind
    uniform over ``noise_kinds``, SNR uniform in ``snr_db``), reverberation with probability
    ``reverb_prob`` (RT60 uniform in ``rt60`` seconds; ``reverb_kind`` ``synthetic``:
    :func:`synthetic_rir`, ``room``: :func:`room_rir`, image-method early reflections) and the
    telephone channel with probability ``telephone_prob``.

    The recording device: a random microphone response (:func:`~.device.random_eq`, gains in
    ``eq_db``) with probability ``eq_prob``; clipping of the signal driven ``clip_db`` (uniform)
    above full scale with probability ``clip_prob``; a DC offset of up to ``dc_offset`` (either
    sign) with probability ``dc_prob``; an input level changed by ``level_db`` (uniform; quiet
    input meets the 16-bit quantisation of the stored audio); and a lossy codec (uniform over
    ``codecs``, quality uniform in ``codec_quality``) with probability ``codec_prob``.

    The defaults apply no effect at all.
    """

    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (5.0, 20.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    reverb_prob: float = 0.0
    rt60: tuple[float, float] = (0.2, 0.8)
    telephone_prob: float = 0.0
    reverb_kind: str = "synthetic"
    eq_prob: float = 0.0
    eq_db: tuple[float, float] = (-9.0, 9.0)
    clip_prob: float = 0.0
    clip_db: tuple[float, float] = (1.0, 12.0)
    dc_prob: float = 0.0
    dc_offset: float = 0.05
    level_db: tuple[float, float] = (0.0, 0.0)
    codec_prob: float = 0.0
    codecs: tuple[str, ...] = DEFAULT_CODECS
    codec_quality: tuple[float, float] = (0.0, 1.0)

    @property
    def device(self) -> bool:
        """Whether any device effect can happen (else none of their variates is drawn, so a
        config without them draws exactly what it drew before they existed)."""
        return bool(self.eq_prob or self.clip_prob or self.dc_prob or self.codec_prob
                    or self.level_db != (0.0, 0.0))  # fmt: skip

    def __post_init__(self) -> None:
        # Coerce (e.g. lists from YAML/JSON) and validate.
        set_ = object.__setattr__
        set_(self, "noise_prob", _check_prob("noise_prob", self.noise_prob))
        set_(self, "reverb_prob", _check_prob("reverb_prob", self.reverb_prob))
        set_(self, "telephone_prob", _check_prob("telephone_prob", self.telephone_prob))
        set_(self, "snr_db", _check_range("snr_db", self.snr_db, _SNR_RANGE, "dB"))
        set_(self, "rt60", _check_range("rt60", self.rt60, _RT60_RANGE, "seconds"))
        kinds = self.noise_kinds
        allowed = ", ".join(NOISE_KINDS)
        if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
            raise ValueError(f"noise_kinds must be a list of names among {allowed}, got {kinds!r}")
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in NOISE_KINDS]
        if bad:
            raise ValueError(f"noise_kinds has unknown kinds {bad}; allowed: {allowed}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"noise_kinds has duplicates: {list(kinds)}; allowed: {allowed}")
        if self.noise_prob > 0 and not kinds:
            raise ValueError(
                f"noise_kinds must not be empty when noise_prob > 0; allowed: {allowed}"
            )
        set_(self, "noise_kinds", kinds)
        for name in ("eq_prob", "clip_prob", "dc_prob", "codec_prob"):
            set_(self, name, _check_prob(name, getattr(self, name)))
        set_(self, "eq_db", _check_range("eq_db", self.eq_db, (-30.0, 30.0), "dB"))
        set_(self, "clip_db", _check_range("clip_db", self.clip_db, (0.0, 40.0), "dB"))
        set_(self, "level_db", _check_range("level_db", self.level_db, (-60.0, 20.0), "dB"))
        quality = _check_range("codec_quality", self.codec_quality, (0.0, 1.0), "(1 = best)")
        set_(self, "codec_quality", quality)
        if not (isinstance(self.dc_offset, numbers.Real) and 0.0 <= self.dc_offset <= 0.5):
            raise ValueError(f"dc_offset must be a number in [0, 0.5], got {self.dc_offset!r}")
        codecs = self.codecs
        if isinstance(codecs, str) or not all(c in CODECS for c in codecs):
            raise ValueError(f"codecs must be a list of names among {sorted(CODECS)}, got {codecs}")
        set_(self, "codecs", tuple(codecs))
        if self.codec_prob > 0 and not self.codecs:
            raise ValueError(f"codecs must not be empty when codec_prob > 0: {sorted(CODECS)}")
        if self.reverb_kind not in REVERB_KINDS:
            raise ValueError(
                f"reverb_kind: {self.reverb_kind!r} is not one of {', '.join(REVERB_KINDS)}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EffectConfig:
        """Build from a mapping (e.g. a YAML section); unknown keys are a ValueError."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown EffectConfig fields {unknown}; valid: {', '.join(names)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def sample_effects(rng: np.random.Generator, cfg: EffectConfig) -> dict[str, Any]:
    """Draw one concrete effect choice from ``cfg``.

    Returns ``{"noise": kind or None, "snr_db": float or None, "rt60": float or None,
    "telephone": bool}``; ``snr_db`` is rounded to 0.01 dB and ``rt60`` to 1 ms so that the
    stored choice reproduces exactly. The same six uniform variates are drawn whatever the
    outcome, so the generator advances identically for every config.
    """
    u_noise, u_kind, u_snr, u_rev, u_rt60, u_tel = (float(u) for u in rng.random(6))
    noise: str | None = None
    snr: float | None = None
    if u_noise < cfg.noise_prob and cfg.noise_kinds:
        noise = cfg.noise_kinds[min(int(u_kind * len(cfg.noise_kinds)), len(cfg.noise_kinds) - 1)]
        lo, hi = cfg.snr_db
        snr = round(lo + (hi - lo) * u_snr, 2)
    rt60: float | None = None
    if u_rev < cfg.reverb_prob:
        lo, hi = cfg.rt60
        rt60 = round(lo + (hi - lo) * u_rt60, 3)
    choice: dict[str, Any] = {
        "noise": noise,
        "snr_db": snr,
        "rt60": rt60,
        "telephone": bool(u_tel < cfg.telephone_prob),
    }
    if rt60 is not None and cfg.reverb_kind == "room":
        choice["room"] = True
    if cfg.device:
        choice.update(_sample_device(rng, cfg))
    return choice


def _sample_device(rng: np.random.Generator, cfg: EffectConfig) -> dict[str, Any]:
    """The device part of a choice: a fixed block of variates, then the EQ's bands."""
    u = [float(v) for v in rng.random(8)]
    out: dict[str, Any] = {}
    if u[0] < cfg.clip_prob:
        out["clip_db"] = round(cfg.clip_db[0] + (cfg.clip_db[1] - cfg.clip_db[0]) * u[1], 2)
    if u[2] < cfg.dc_prob:
        out["dc"] = round(cfg.dc_offset * (2.0 * u[3] - 1.0), 4)
    lo, hi = cfg.level_db
    if (lo, hi) != (0.0, 0.0):
        out["level_db"] = round(lo + (hi - lo) * u[4], 2)
    if u[5] < cfg.codec_prob and cfg.codecs:
        out["codec"] = cfg.codecs[min(int(u[6] * len(cfg.codecs)), len(cfg.codecs) - 1)]
        q_lo, q_hi = cfg.codec_quality
        out["codec_quality"] = round(q_lo + (q_hi - q_lo) * u[7], 3)
    if float(rng.random()) < cfg.eq_prob:
        # the band frequencies are relative to a 16-kHz signal's band and stored in Hz
        out["eq"] = random_eq(rng, 16000, gain_db=cfg.eq_db)
    return out


def apply_effects(
    x: np.ndarray,
    sample_rate: int,
    choice: Mapping[str, Any],
    rng: np.random.Generator,
    babble_sources: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Apply an effect ``choice`` (from :func:`sample_effects`) to ``x``.

    Order: reverberation (a fresh :func:`synthetic_rir`, or :func:`room_rir` when ``room``),
    additive noise at the chosen SNR (coloured noise, or :func:`babble` from
    ``babble_sources``), the device (microphone response ``eq``, clipping ``clip_db``, DC
    offset ``dc``, input level ``level_db``, then ``codec``), then the :func:`telephone`
    channel. If the result would exceed full scale it is rescaled to a peak of 0.9; it is
    always passed through :func:`clip_guard`. Missing keys mean "no such effect".
    """
    valid = ("noise", "snr_db", "rt60", "room", "telephone", *_DEVICE_KEYS)
    unknown = sorted(set(choice) - set(valid))
    if unknown:
        raise ValueError(f"unknown effect keys {unknown}; valid: {', '.join(valid)}")
    y = _as_mono(x)

    rt60 = choice.get("rt60")
    if rt60 is not None:
        make_rir = room_rir if choice.get("room") else synthetic_rir
        y = _as_mono(reverberate(y, make_rir(rng, sample_rate, rt60=float(rt60))))

    kind = choice.get("noise")
    if kind is not None:
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; allowed: {', '.join(NOISE_KINDS)}")
        snr = choice.get("snr_db")
        if snr is None:
            raise ValueError("snr_db is required when noise is set")
        if kind == "babble":
            if not babble_sources:
                raise ValueError("noise 'babble' needs babble_sources (speech signals)")
            noise = babble(rng, babble_sources, y.size)
        else:
            noise = coloured_noise(rng, y.size, exponent=NOISE_EXPONENTS[kind])
        y = _as_mono(mix_at_snr(y, noise, float(snr)))

    y = _device(y, sample_rate, choice)
    if choice.get("telephone", False):
        y = _as_mono(telephone(y, sample_rate, rng))

    if y.size and float(np.max(np.abs(y))) > 1.0:
        y = normalise_peak(y, 0.9)
    return clip_guard(y)
