"""The synthesis engines behind one interface, and the corpus config that mixes them."""

import ctypes.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from speechnas.data.manifest import load_manifest
from speechnas.data.synth import engines
from speechnas.data.synth.corpus import SPLITS, CorpusConfig
from speechnas.data.synth.engines import EngineUnavailable, FestivalEngine, FliteEngine, get_engine
from speechnas.data.synth.voice import Voice

TEXT = "three five nine oh two"


@pytest.mark.parametrize(
    ("engine", "variant"),
    [("espeak", "m3"), ("flite", "rms"), ("flite", "slt"), ("festival", "kal_diphone"),
     ("festival", "cmu_us_slt_arctic_hts")],
)  # fmt: skip
def test_every_engine_speaks_deterministically_at_the_asked_tempo(
    engine: str, variant: str
) -> None:
    synth = get_engine(engine)
    lang = "en-us" if engine == "espeak" else "en"
    voice = Voice(lang, variant, engine=engine)
    other = Voice(lang, variant, rate=110, engine=engine)
    (x, rate), (slow, _), (y, _) = synth.synthesize(
        [(TEXT, voice, 1), (TEXT, other, 1), (TEXT, voice, 1)]
    )
    assert x.dtype == np.float32 and rate >= 16000
    assert 0.8 < x.size / rate < 4.0 and 0.05 < np.abs(x).max() <= 1.0
    np.testing.assert_array_equal(x, y)  # what was spoken before does not leak in
    if variant != "cmu_us_slt_arctic_hts":  # Festival's HTS voice keeps its own tempo
        assert slow.size > 1.3 * x.size  # 110 wpm against the engine's own 175


def test_pitch_moves_the_flite_voice() -> None:
    low, high = (
        x
        for x, _ in get_engine("flite").synthesize(
            [
                (TEXT, Voice("en", "slt", pitch=20, engine="flite"), 0),
                (TEXT, Voice("en", "slt", pitch=80, engine="flite"), 0),
            ]
        )
    )

    def f0(x: np.ndarray, rate: int = 16000) -> float:
        """Median autocorrelation pitch of the loud, periodic frames."""
        found = []
        for i in range(0, x.size - 1024, 512):
            frame = x[i : i + 1024] - x[i : i + 1024].mean()
            if np.abs(frame).max() < 0.05:
                continue
            ac = np.correlate(frame, frame, "full")[1023:]
            lag = rate // 400 + int(np.argmax(ac[rate // 400 : rate // 60]))
            if ac[lag] > 0.4 * ac[0]:
                found.append(rate / lag)
        return float(np.median(found))

    assert f0(high) > 1.3 * f0(low)  # 2 ** (60 / 100) = 1.52 asked


def test_a_missing_engine_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(EngineUnavailable, match="apt-get install flite"):
        FliteEngine()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(EngineUnavailable, match="apt-get install festival festvox-kallpc16k"):
        FestivalEngine()


def test_unknown_engines_and_voices_are_named() -> None:
    with pytest.raises(ValueError, match="unknown synthesis engine 'mbrola'"):
        get_engine("mbrola")
    with pytest.raises(ValueError, match="flite has no voice 'kal'"):
        get_engine("flite").synthesize([(TEXT, Voice("en", "kal", engine="flite"), 0)])
    with pytest.raises(ValueError, match="festival has no voice 'don'"):
        get_engine("festival").synthesize([(TEXT, Voice("en", "don", engine="festival"), 0)])
    with pytest.raises(ValueError, match="engines: unknown engine 'mbrola'"):
        CorpusConfig(engines={"espeak": 1.0, "mbrola": 1.0})
    with pytest.raises(ValueError, match="unseen_engine: 'flite' is also in engines"):
        CorpusConfig(engines={"espeak": 1.0, "flite": 1.0}, unseen_engine="flite")
    with pytest.raises(ValueError, match="the flite engine has no 'de' voices"):
        CorpusConfig(lang="de", engines={"flite": 1.0}).resolved()


def test_auto_takes_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    full = CorpusConfig().resolved()
    assert full.engines == {"espeak": 0.6, "flite": 0.4} and full.unseen_engine == "festival"
    assert full.sizes["test-unseen-engine"] == 600
    assert CorpusConfig(lang="de").resolved().engines == {"espeak": 1.0}
    explicit = CorpusConfig(engines={"espeak": 3, "flite": 1}, unseen_engine=None).resolved()
    assert explicit.engines == {"espeak": 0.75, "flite": 0.25}
    assert "test-unseen-engine" not in explicit.sizes
    # eSpeak alone where nothing else is installed: the default still builds
    monkeypatch.setattr(engines, "available", lambda name: name == "espeak")
    from speechnas.data.synth import corpus

    monkeypatch.setattr(corpus, "available", engines.available)
    bare = CorpusConfig().resolved()
    assert bare.engines == {"espeak": 1.0} and bare.unseen_engine is None
    assert bare.digest() != full.digest()


def test_synth_command_takes_engines(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from speechnas.cli import app

    sizes = []  # 4 training and 2 test utterances, no other split
    for s in SPLITS:
        sizes += ["--size", f"{s}={dict(train=4, test=2).get(s, 0)}"]
    args = ["data", "synth", "--out", str(tmp_path), "--workers", "1", "--babble-pool", "4", *sizes]
    res = CliRunner().invoke(app, [*args, "--engines", "flite", "--unseen-engine", "none"])
    assert res.exit_code == 0, res.output
    assert "engines: {'flite': 1.0}; unseen engine: none" in res.output
    speakers = {u.speaker for u in load_manifest(tmp_path / "digits-en" / "train.jsonl").utterances}
    assert speakers and all(s.startswith("flite:") for s in speakers)
    bad = CliRunner().invoke(app, [*args, "--engines", "espeak=lots"])
    assert bad.exit_code == 2 and "expected auto or ENGINE[=SHARE]" in bad.output
    bad = CliRunner().invoke(app, [*args, "--unseen-engine", "espeak"])
    assert bad.exit_code == 2 and "unseen_engine: 'espeak' is also in engines" in bad.output
    bad = CliRunner().invoke(app, [*args, "--babble-pool", "0"])
    assert bad.exit_code == 2 and "babble_pool: expected at least 1 utterance" in bad.output
