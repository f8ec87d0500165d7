import numpy as np
import pytest

from speechnas.data.synth.espeak import Espeak, Voice, list_variants


def test_synthesizes_speech_for_every_supported_language() -> None:
    engine = Espeak.get()
    for lang, text in [("en-us", "three oh five"), ("de", "drei null fünf"), ("es", "tres")]:
        x = engine.synthesize(text, Voice(lang, "m3"))
        assert x.dtype == np.float32
        assert 0.2 < x.size / engine.sample_rate < 5.0
        assert 0.05 < np.abs(x).max() <= 1.0


def test_samples_depend_on_text_voice_and_seed_only() -> None:
    engine = Espeak.get()
    v = Voice("en-us", "f2", rate=150, pitch=40)
    a = engine.synthesize("one two three", v, seed=7)
    engine.synthesize("something else entirely", Voice("en-gb-x-rp", "klatt3"), seed=1)
    b = engine.synthesize("one two three", v, seed=7)
    np.testing.assert_array_equal(a, b)  # what was spoken before does not leak in
    assert not np.array_equal(a, engine.synthesize("one two three", v, seed=8))
    faster = engine.synthesize("one two three", Voice("en-us", "f2", rate=260, pitch=40))
    assert faster.size < 0.8 * a.size


def test_unknown_voice_is_named() -> None:
    with pytest.raises(ValueError, match="no voice 'xx-yy\\+f2'"):
        Espeak.get().synthesize("one", Voice("xx-yy", "f2"))


def test_ships_many_variants() -> None:
    assert len(list_variants()) >= 50
