"""Tests for speechnas.data.synth.effects: noise, SNR mixing, reverb, telephone, configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from speechnas.data.synth.effects import (
    NOISE_KINDS,
    EffectConfig,
    active_power,
    apply_effects,
    babble,
    clip_guard,
    coloured_noise,
    mix_at_snr,
    mu_law_decode,
    mu_law_encode,
    normalise_peak,
    reverberate,
    sample_effects,
    synthetic_rir,
    telephone,
)

SR = 16000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def fake_speech(g: np.random.Generator, seconds: float = 1.0, pad: float = 0.3) -> np.ndarray:
    """A voiced, amplitude-modulated harmonic signal with silence before and after."""
    n = round(seconds * SR)
    t = np.arange(n) / SR
    f0 = g.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = 0.5 * (1 - np.cos(2 * np.pi * 4 * t)) * np.hanning(n)
    z = np.zeros(round(pad * SR))
    return np.concatenate([z, 0.3 * x * env, z]).astype(np.float32)


def band_power(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    return float(spec[(f >= lo) & (f < hi)].sum())


def realised_snr(speech: np.ndarray, mixed: np.ndarray) -> float:
    s = np.asarray(speech, dtype=np.float64)
    noise = np.asarray(mixed, dtype=np.float64) - s
    return 10 * math.log10(active_power(s) / float(np.mean(noise**2)))


# --- noise ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "exponent"), [("white", 0.0), ("pink", 1.0), ("brown", 2.0)])
def test_coloured_noise_slope_and_rms(kind: str, exponent: float) -> None:
    n = 2**15
    x = coloured_noise(rng(1), n, exponent=exponent)
    assert x.dtype == np.float32 and x.shape == (n,)
    assert math.isclose(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1.0, rel_tol=1e-4)
    # Averaged periodogram over 16 segments, then a log-log fit.
    seg = x.astype(np.float64).reshape(16, -1)
    psd = np.mean(np.abs(np.fft.rfft(seg * np.hanning(seg.shape[1]), axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(seg.shape[1])
    m = (f > 4 / seg.shape[1]) & (f < 0.45)
    slope = np.polyfit(np.log10(f[m]), np.log10(psd[m]), 1)[0]
    assert abs(slope + exponent) < 0.2, (kind, slope)


def test_coloured_noise_deterministic_and_edge_cases() -> None:
    a = coloured_noise(rng(3), 1000, exponent=1.0)
    b = coloured_noise(rng(3), 1000, exponent=1.0)
    np.testing.assert_array_equal(a, b)
    assert coloured_noise(rng(3), 0, exponent=1.0).shape == (0,)
    assert coloured_noise(rng(3), 1, exponent=2.0).shape == (1,)
    with pytest.raises(ValueError):
        coloured_noise(rng(3), 10, exponent=float("nan"))


def test_babble() -> None:
    g = rng(4)
    sources = [fake_speech(g, seconds=s) for s in (0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 0.4)]
    n = 3 * SR  # longer than every source: they are tiled
    b = babble(rng(5), sources, n)
    assert b.dtype == np.float32 and b.shape == (n,)
    assert math.isclose(float(np.sqrt(np.mean(b.astype(np.float64) ** 2))), 1.0, rel_tol=1e-4)
    np.testing.assert_array_equal(b, babble(rng(5), sources, n))
    assert not np.array_equal(b, babble(rng(6), sources, n))
    # Fewer sources than talkers: picks with replacement but different offsets.
    assert babble(rng(7), sources[:1], 5000).shape == (5000,)
    with pytest.raises(ValueError):
        babble(rng(7), [], 100)
    with pytest.raises(ValueError):
        babble(rng(7), [np.zeros(100, dtype=np.float32)], 100)


# --- SNR --------------------------------------------------------------------------------------


def test_active_power_ignores_silence() -> None:
    s = fake_speech(rng(8), pad=0.0)
    padded = np.concatenate([np.zeros(SR), s, np.zeros(2 * SR)])
    assert math.isclose(active_power(padded), active_power(s), rel_tol=0.02)
    assert active_power(padded) > 2.5 * float(np.mean(padded.astype(np.float64) ** 2))
    assert active_power(np.zeros(100)) == 0.0
    assert active_power(np.zeros(0)) == 0.0


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0, 40.0])
@pytest.mark.parametrize("kind", ["white", "brown"])
def test_mix_at_snr_realised(snr_db: float, kind: str) -> None:
    g = rng(9)
    speech = fake_speech(g)
    noise = coloured_noise(g, SR // 3, exponent=0.0 if kind == "white" else 2.0)  # tiled
    mixed = mix_at_snr(speech, noise, snr_db)
    assert mixed.dtype == np.float32 and mixed.shape == speech.shape
    assert abs(realised_snr(speech, mixed) - snr_db) < 0.1


def test_mix_at_snr_uses_active_speech_power() -> None:
    g = rng(10)
    s = fake_speech(g, pad=0.0)
    padded = np.concatenate([np.zeros(SR), s, np.zeros(SR)]).astype(np.float32)
    noise = coloured_noise(g, 4 * SR, exponent=1.0)
    # The noise level only depends on the active part, not on how much silence surrounds it.
    n1 = mix_at_snr(s, noise, 10.0) - s
    n2 = mix_at_snr(padded, noise, 10.0) - padded
    r1, r2 = (float(np.sqrt(np.mean(v.astype(np.float64) ** 2))) for v in (n1, n2))
    assert math.isclose(r1, r2, rel_tol=0.02)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(np.zeros(1000, dtype=np.float32), noise, 10.0)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(s, np.zeros(10, dtype=np.float32), 10.0)


# --- reverberation ----------------------------------------------------------------------------


def edc_rt60(h: np.ndarray, sr: int) -> float:
    """RT60 from the Schroeder energy decay curve (T30: fit between -5 and -35 dB)."""
    e = np.cumsum((np.asarray(h, dtype=np.float64) ** 2)[::-1])[::-1]
    edc = 10 * np.log10(e / e[0])
    t = np.arange(len(h)) / sr
    m = (edc <= -5) & (edc >= -35)
    slope = np.polyfit(t[m], edc[m], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.15, 0.4, 0.9])
def test_synthetic_rir_decay(rt60: float) -> None:
    for seed in range(3):
        h = synthetic_rir(rng(seed), SR, rt60=rt60)
        assert h.dtype == np.float32
        assert h[0] == 1.0 and float(np.max(np.abs(h[1:]))) < 1.0  # direct path dominates
        assert abs(edc_rt60(h, SR) - rt60) / rt60 < 0.25
        assert len(h) >= rt60 * SR


def test_synthetic_rir_early_reflections_and_errors() -> None:
    h = synthetic_rir(rng(1), SR, rt60=0.5).astype(np.float64)
    early = np.abs(h[1 : int(0.05 * SR)])
    # Sparse reflections stand out above the diffuse field in the first 50 ms.
    assert np.sum(early > 6 * np.median(early)) >= 3
    with pytest.raises(ValueError, match="rt60"):
        synthetic_rir(rng(1), SR, rt60=0.0)


def test_reverberate() -> None:
    g = rng(11)
    x = fake_speech(g)
    h = synthetic_rir(g, SR, rt60=0.5)
    y = reverberate(x, h)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert math.isclose(float(np.max(np.abs(y))), float(np.max(np.abs(x))), rel_tol=1e-5)
    # Matches direct convolution.
    ref = np.convolve(x.astype(np.float64), h.astype(np.float64))[: len(x)]
    ref *= np.max(np.abs(x)) / np.max(np.abs(ref))
    np.testing.assert_allclose(y, ref, atol=1e-5)
    # Reverb smears energy into the trailing silence.
    tail = slice(len(x) - round(0.25 * SR), None)
    assert np.mean(y[tail].astype(np.float64) ** 2) > 100 * np.mean(x[tail].astype(np.float64) ** 2)
    # An impulse through a unit impulse response is unchanged.
    imp = np.zeros(50, dtype=np.float32)
    imp[10] = 0.5
    np.testing.assert_allclose(reverberate(imp, np.array([1.0], dtype=np.float32)), imp, atol=1e-7)


# --- telephone --------------------------------------------------------------------------------


def test_mu_law_roundtrip() -> None:
    x = np.linspace(-1, 1, 2001)
    codes = mu_law_encode(x)
    assert codes.dtype == np.uint8
    y = mu_law_decode(codes)
    big = np.abs(x) > 0.1
    assert np.max(np.abs(y - x)[big] / np.abs(x[big])) < 0.025  # ~2% relative steps
    small = np.abs(x) < 0.01
    assert np.max(np.abs(y - x)[small]) < 3e-4  # fine steps near zero
    assert len(np.unique(codes)) <= 256


@pytest.mark.parametrize("sr", [16000, 22050, 8000])
def test_telephone_band_limits(sr: int) -> None:
    g = rng(12)
    x = (0.1 * g.standard_normal(2 * sr)).astype(np.float32)
    y = telephone(x, sr, rng(13))
    assert y.dtype == np.float32 and y.shape == x.shape
    nyq = sr / 2

    def ratio(lo: float, hi: float) -> float:
        return band_power(y, sr, lo, hi) / band_power(x, sr, lo, hi)

    assert ratio(0, 200) < 1e-3
    if nyq > 4000:
        assert ratio(4000, nyq) < 1e-4
    assert 0.7 < ratio(500, 3000) < 1.3  # the passband is kept at its level


def test_telephone_length_and_determinism() -> None:
    x = fake_speech(rng(14))[:12345]
    a = telephone(x, SR, rng(15))
    b = telephone(x, SR, rng(15))
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert telephone(np.zeros(0, dtype=np.float32), SR, rng(0)).shape == (0,)
    with pytest.raises(ValueError):
        telephone(x, 4000, rng(0))


# --- levels -----------------------------------------------------------------------------------


def test_normalise_peak_and_clip_guard() -> None:
    x = np.array([0.0, 0.25, -0.5], dtype=np.float32)
    y = normalise_peak(x)
    assert y.dtype == np.float32 and math.isclose(float(np.max(np.abs(y))), 0.9, rel_tol=1e-6)
    assert normalise_peak(np.zeros(4), 0.5).tolist() == [0.0] * 4
    z = clip_guard(np.array([2.0, -3.0, 0.5, np.nan, np.inf]))
    assert z.dtype == np.float32 and z.tolist() == [1.0, -1.0, 0.5, 0.0, 1.0]
    with pytest.raises(ValueError):
        normalise_peak(x, 0.0)


# --- configs and pipeline ---------------------------------------------------------------------


def test_effect_config_validation() -> None:
    cfg = EffectConfig(noise_prob=0.5, snr_db=[0, 10], noise_kinds=["pink"], rt60=(0.3, 0.6))
    assert cfg.snr_db == (0.0, 10.0) and cfg.noise_kinds == ("pink",)
    assert EffectConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())
    for kwargs, field in [
        ({"noise_prob": 1.5}, "noise_prob"),
        ({"reverb_prob": -0.1}, "reverb_prob"),
        ({"telephone_prob": "x"}, "telephone_prob"),
        ({"snr_db": (10, 0)}, "snr_db"),
        ({"snr_db": (0,)}, "snr_db"),
        ({"rt60": (0.0, 0.5)}, "rt60"),
        ({"noise_kinds": ("pink", "violet")}, "noise_kinds"),
        ({"noise_kinds": "pink"}, "noise_kinds"),
        ({"noise_prob": 0.5, "noise_kinds": ()}, "noise_kinds"),
    ]:
        with pytest.raises(ValueError, match=field):
            EffectConfig(**kwargs)
    with pytest.raises(ValueError, match="white, pink, brown, babble"):
        EffectConfig(noise_kinds=("violet",))
    with pytest.raises(ValueError, match="unknown"):
        EffectConfig.from_dict({"noise_probability": 0.1})


def test_sample_effects() -> None:
    none = EffectConfig()
    assert sample_effects(rng(0), none) == {
        "noise": None, "snr_db": None, "rt60": None, "telephone": False,
    }  # fmt: skip
    full = EffectConfig(
        noise_prob=1.0, snr_db=(5, 15), reverb_prob=1.0, rt60=(0.2, 0.7), telephone_prob=1.0
    )
    g = rng(1)
    kinds = set()
    for _ in range(200):
        c = sample_effects(g, full)
        json.dumps(c)
        assert c["telephone"] is True
        assert 5 <= c["snr_db"] <= 15 and 0.2 <= c["rt60"] <= 0.7
        kinds.add(c["noise"])
    assert kinds == set(NOISE_KINDS)
    half = EffectConfig(noise_prob=0.3, reverb_prob=0.5, telephone_prob=0.2)
    g = rng(2)
    draws = [sample_effects(g, half) for _ in range(2000)]
    assert 0.25 < np.mean([d["noise"] is not None for d in draws]) < 0.35
    assert 0.45 < np.mean([d["rt60"] is not None for d in draws]) < 0.55
    assert 0.15 < np.mean([d["telephone"] for d in draws]) < 0.25
    assert all((d["noise"] is None) == (d["snr_db"] is None) for d in draws)
    assert sample_effects(rng(5), half) == sample_effects(rng(5), half)


def test_apply_effects_pipeline() -> None:
    g = rng(20)
    x = fake_speech(g)
    sources = [fake_speech(g, seconds=0.6) for _ in range(4)]
    choices = [
        {"noise": None, "snr_db": None, "rt60": None, "telephone": False},
        {"noise": "pink", "snr_db": 10.0, "rt60": None, "telephone": False},
        {"noise": "babble", "snr_db": 5.0, "rt60": 0.4, "telephone": True},
        {"noise": "brown", "snr_db": -5.0, "rt60": 0.8, "telephone": False},
    ]
    for c in choices:
        a = apply_effects(x, SR, c, rng(21), babble_sources=sources)
        b = apply_effects(x, SR, c, rng(21), babble_sources=sources)
        assert a.dtype == np.float32 and a.shape == x.shape
        np.testing.assert_array_equal(a, b)
        assert float(np.max(np.abs(a))) <= 1.0
    np.testing.assert_array_equal(apply_effects(x, SR, choices[0], rng(0)), x)
    # Noise only: the realised SNR is the requested one.
    y = apply_effects(x, SR, choices[1], rng(22))
    assert abs(realised_snr(x, y) - 10.0) < 0.1
    # Loud input and noise is rescaled rather than clipped.
    loud = apply_effects(x * 3.0, SR, choices[3], rng(23))
    assert math.isclose(float(np.max(np.abs(loud))), 0.9, rel_tol=1e-5)
    with pytest.raises(ValueError, match="babble_sources"):
        apply_effects(x, SR, choices[2], rng(0))
    with pytest.raises(ValueError, match="allowed"):
        apply_effects(x, SR, {"noise": "violet", "snr_db": 3.0}, rng(0))
    with pytest.raises(ValueError, match="unknown effect keys"):
        apply_effects(x, SR, {"reverb": 0.3}, rng(0))


def test_room_rir_has_geometric_early_reflections_and_the_asked_decay() -> None:
    from speechnas.data.synth.effects import room_rir

    sr = 16000
    h = room_rir(np.random.default_rng(5), sr, rt60=0.6)
    np.testing.assert_array_equal(h, room_rir(np.random.default_rng(5), sr, rt60=0.6))
    assert not np.array_equal(h, room_rir(np.random.default_rng(6), sr, rt60=0.6))
    assert abs(float(h[np.argmax(np.abs(h))]) - 1.0) < 1e-6 and np.argmax(np.abs(h)) < 5
    early = np.abs(h[int(0.002 * sr) : int(0.05 * sr)])
    assert (early > 0.05).sum() >= 3  # distinct wall reflections
    # Schroeder backward integration: the decay from -5 to -25 dB, extrapolated to 60 dB
    edc = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    db = 10 * np.log10(edc / edc[0])
    t5, t25 = np.argmax(db < -5) / sr, np.argmax(db < -25) / sr
    assert 0.6 * 0.6 < 3 * (t25 - t5) < 0.6 * 1.5


def test_room_reverb_is_opt_in() -> None:
    from speechnas.data.synth.effects import EffectConfig, apply_effects, sample_effects

    cfg = EffectConfig(reverb_prob=1.0, rt60=(0.4, 0.4))
    assert "room" not in sample_effects(np.random.default_rng(0), cfg)  # the corpus's default
    room = sample_effects(
        np.random.default_rng(0), EffectConfig(reverb_prob=1.0, reverb_kind="room")
    )
    assert room["room"] is True and room["rt60"] is not None
    x = np.sin(np.arange(16000) / 5).astype(np.float32)
    y = apply_effects(x, 16000, room, np.random.default_rng(1))
    assert y.shape == x.shape and not np.allclose(y, x)
    with pytest.raises(ValueError, match="reverb_kind: 'hall' is not one of synthetic, room"):
        EffectConfig(reverb_kind="hall")
