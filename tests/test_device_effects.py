"""The recording-device effects: microphone EQ, clipping, DC offset, level and real codecs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechnas.data.synth.device import (
    CODECS,
    DEFAULT_CODECS,
    codec,
    overdrive,
    parametric_eq,
    random_eq,
)
from speechnas.data.synth.effects import EffectConfig, apply_effects, sample_effects

SR = 16000


def tone(freq: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * freq * t)


def gain_db(y: np.ndarray, x: np.ndarray) -> float:
    mid = slice(len(x) // 4, 3 * len(x) // 4)  # past the filter's transient
    return float(20 * np.log10(np.std(y[mid]) / np.std(x[mid])))


def test_peaking_eq_boosts_its_centre_and_leaves_far_bands_alone() -> None:
    bands = [(1000.0, 9.0, 2.0)]
    assert abs(gain_db(parametric_eq(tone(1000.0), SR, bands), tone(1000.0)) - 9.0) < 0.1
    assert abs(gain_db(parametric_eq(tone(6000.0), SR, bands), tone(6000.0))) < 0.3
    cut = parametric_eq(tone(1000.0), SR, [(1000.0, -6.0, 1.0)])
    assert abs(gain_db(cut, tone(1000.0)) + 6.0) < 0.1
    with pytest.raises(ValueError, match=r"eq band 0 .*centre in \(0, 8000\) Hz"):
        parametric_eq(tone(1000.0), SR, [(9000.0, 3.0, 1.0)])


def test_random_eq_is_seeded_and_within_its_ranges() -> None:
    a = random_eq(np.random.default_rng(3), SR, gain_db=(-6.0, 6.0))
    assert a == random_eq(np.random.default_rng(3), SR, gain_db=(-6.0, 6.0))
    assert 3 <= len(a) <= 6
    assert all(80 <= f <= 0.45 * SR and -6 <= g <= 6 and 0.5 <= q <= 4 for f, g, q in a)


def test_overdrive_flattens_the_peaks_at_the_original_level() -> None:
    x = tone(200.0)
    y = overdrive(x, 6.0)
    assert np.max(np.abs(y)) == pytest.approx(np.max(np.abs(x)) / 10 ** (6 / 20), rel=1e-6)
    clipped = np.isclose(np.abs(y), np.max(np.abs(y)))
    # a sine driven to twice full scale is flat while |sin| > 1/2: two thirds of the time
    assert clipped.mean() == pytest.approx(2 / 3, abs=0.01)
    np.testing.assert_array_equal(overdrive(x, 0.0), x)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_codecs_round_trip_in_time_with_their_own_loss(name: str) -> None:
    rng = np.random.default_rng(0)
    x = tone(300.0) * (1 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(SR) / SR))
    x = x + 0.01 * rng.standard_normal(SR)
    y = codec(x, SR, name, 0.5)
    assert y.shape == x.shape
    assert np.array_equal(y, codec(x, SR, name, 0.5))  # deterministic
    mid = slice(2000, 14000)
    lags = [float(np.dot(np.roll(y, -k)[mid], x[mid])) for k in range(-40, 41)]
    assert int(np.argmax(lags)) - 40 == 0  # no codec delay left in the output
    snr = 10 * np.log10(np.sum(x[mid] ** 2) / np.sum((y - x)[mid] ** 2))
    assert 8 < snr < 60  # lossy, yet the same signal
    if CODECS[name][2] == 8000:  # 8-kHz codecs: nothing above 4 kHz survives
        hi = np.abs(np.fft.rfft(codec(tone(6000.0), SR, name, 0.5)))[4500:].max()
        assert hi < 0.01 * np.abs(np.fft.rfft(tone(6000.0))).max()
    with pytest.raises(ValueError, match="codec: 'amr' is not one of"):
        codec(x, SR, "amr", 0.5)


def test_device_effects_are_drawn_from_the_seed_and_off_by_default() -> None:
    plain = EffectConfig(noise_prob=0.5)
    before = [sample_effects(np.random.default_rng(i), plain) for i in range(5)]
    assert all(set(c) == {"noise", "snr_db", "rt60", "telephone"} for c in before)
    device = EffectConfig(noise_prob=0.5, eq_prob=1.0, clip_prob=0.5, dc_prob=0.5,
                          level_db=(-20.0, 0.0), codec_prob=1.0)  # fmt: skip
    g = np.random.default_rng(7)
    draws = [sample_effects(g, device) for _ in range(300)]
    json.dumps(draws)
    assert all("eq" in d and "codec" in d and -20 <= d["level_db"] <= 0 for d in draws)
    assert {d["codec"] for d in draws} == set(DEFAULT_CODECS)  # the built-in corpus's
    assert 0.4 < np.mean(["clip_db" in d for d in draws]) < 0.6
    # the non-device part is drawn first, exactly as without the device effects
    for i in range(5):
        c = sample_effects(np.random.default_rng(i), device)
        assert {k: c[k] for k in before[i]} == before[i]
    x = (tone(150.0) + tone(900.0)).astype(np.float32)
    choice = sample_effects(np.random.default_rng(1), device)
    a = apply_effects(x, SR, choice, np.random.default_rng(2))
    assert np.array_equal(a, apply_effects(x, SR, choice, np.random.default_rng(2)))
    assert a.dtype == np.float32 and a.shape == x.shape and not np.allclose(a, x, atol=1e-3)
    dc = apply_effects(x, SR, {"dc": 0.05}, np.random.default_rng(0))
    assert float(np.mean(dc) - np.mean(x)) == pytest.approx(0.05, abs=1e-6)
    quiet = apply_effects(x, SR, {"level_db": -20.0}, np.random.default_rng(0))
    assert gain_db(quiet, x) == pytest.approx(-20.0, abs=0.01)


def test_device_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="codecs must be a list of names among"):
        EffectConfig(codec_prob=0.5, codecs=("opus", "amr"))
    assert EffectConfig(codec_prob=0.5, codecs=("mp3", "g726")).codecs == ("mp3", "g726")
    with pytest.raises(ValueError, match="level_db must be a"):
        EffectConfig(level_db=(-90.0, 0.0))
    with pytest.raises(ValueError, match="eq_prob must be a probability"):
        EffectConfig(eq_prob=2.0)
    cfg = EffectConfig.from_dict({"codec_prob": 0.5, "codecs": ["gsm"], "eq_db": [-3, 3]})
    assert cfg.codecs == ("gsm",) and cfg.eq_db == (-3.0, 3.0) and cfg.device
    assert not EffectConfig().device


def test_the_built_in_corpus_has_a_device_test_split(tmp_path) -> None:
    from speechnas.data.manifest import load_manifest
    from speechnas.data.synth.corpus import CorpusConfig, build_corpus, split_effects

    effects = split_effects("test-device", 0)
    assert effects.device and effects.eq_prob == 1.0 and effects.codec_prob > 0
    assert not split_effects("test", 0).device and not split_effects("train", 0).device
    cfg = CorpusConfig(sizes={"train": 2, "test": 4, "test-device": 4}, babble_pool=4)
    info = build_corpus(cfg, tmp_path, workers=1, show_progress=False)
    device = load_manifest(info.manifests["test-device"]).utterances
    train = load_manifest(info.manifests["train"]).utterances
    assert len(device) == 4 and all(u.duration > 0.3 for u in device)
    assert not {u.speaker for u in device} & {u.speaker for u in train}


def test_a_share_of_training_utterances_can_pass_through_devices() -> None:
    from speechnas.data.synth.corpus import CorpusConfig, split_effects

    picked = [split_effects("train", i, 0.3).device for i in range(1000)]
    assert abs(sum(picked) / 1000 - 0.3) < 0.01  # evenly spread, by index
    assert sum(picked[:100]) in range(27, 34)
    assert not any(split_effects("train", i).device for i in range(1000))  # the default: none
    assert not any(split_effects("test", i, 1.0).device for i in range(100))  # training only
    # the default corpus keeps its digest (and its files); another share is another corpus
    assert "train_devices" not in CorpusConfig().to_dict()
    assert CorpusConfig(train_devices=0.3).digest() != CorpusConfig().digest()
    with pytest.raises(ValueError, match=r"train_devices: expected a share in \[0, 1\]"):
        CorpusConfig(train_devices=1.5)
