"""Speech synthesis data: eSpeak phonemes and their durations, log-mel features, Griffin-Lim,
the synthetic corpus, manifests, LJSpeech folders and batching."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from speechnas.data.synth.text import DIGIT_WORDS
from speechnas.data.tts import (
    MelConfig,
    PhonemeVocab,
    TtsCorpusConfig,
    TtsCorpusInfo,
    TtsDataset,
    build_tts_corpus,
    collate_tts,
    frames,
    griffin_lim,
    load_ljspeech,
    load_tts_manifest,
    log_mel,
    phonemize,
    speak_phonemes,
    tts_batches,
)
from speechnas.data.tts.mel import frame_durations, log_mel_np
from speechnas.data.tts.phonemes import PAUSE, espeak_voice

MEL = MelConfig()
SIZES = {"train": 6, "dev": 2, "test": 2}
SENTENCES = [
    "hello world, this is a test",
    "the old dog saw a red car near the river",
    "three oh five nine",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> TtsCorpusInfo:
    root = tmp_path_factory.mktemp("tts")
    return build_tts_corpus(TtsCorpusConfig(sizes=SIZES), root, workers=1, show_progress=False)


def _spoken_at_mel_rate(text: str) -> tuple[np.ndarray, list[str], list[int]]:
    """Audio at the mel rate, the phonemes and their durations in frames, as the corpus has
    them."""
    s = speak_phonemes(text, espeak_voice("en-us+m3"))
    audio = soxr.resample(s.audio, s.sample_rate, MEL.sample_rate).astype(np.float32)
    starts = [min(round(x * MEL.sample_rate / s.sample_rate), audio.size) for x in s.starts]
    return audio, s.phonemes, frame_durations(starts, audio.size, MEL)


def test_durations_from_the_synthesizer_sum_to_the_audio_length() -> None:
    for text in SENTENCES:
        s = speak_phonemes(text, espeak_voice("en-us+m3"))
        assert s.phonemes[0] == PAUSE and s.starts[0] == 0
        assert s.starts == sorted(s.starts) and s.starts[-1] <= s.audio.size
        audio, phonemes, durations = _spoken_at_mel_rate(text)
        assert len(durations) == len(phonemes)
        assert sum(durations) == frames(audio.size, MEL) == log_mel_np(audio, MEL).shape[0]


def test_durations_follow_the_audio() -> None:
    """The clause pause eSpeak times is silent in the audio: the durations are aligned."""
    audio, phonemes, durations = _spoken_at_mel_rate("hello world, this is a test")
    energy = log_mel_np(audio, MEL).mean(axis=1)
    owner = np.repeat(np.arange(len(durations)), durations)
    pause = phonemes.index("_:")  # after "world,"
    assert durations[pause] >= 4
    speech = [i for i, p in enumerate(phonemes) if not p.startswith(PAUSE) and durations[i]]
    assert energy[owner == pause].mean() < energy[np.isin(owner, speech)].mean() - 3.0


def test_phonemize_equals_the_recorded_phonemes(corpus: TtsCorpusInfo) -> None:
    utts = [u for m in corpus.manifests.values() for u in load_tts_manifest(m)]
    for u in utts:
        assert phonemize(u.text, "en-us+m3") == list(u.phonemes), u.text
    for text in SENTENCES:
        recorded = speak_phonemes(text, espeak_voice("en-us+m3")).phonemes
        assert phonemize(text, "en-us+m3") == recorded
        assert phonemize(text, "en-us") == recorded  # the variant does not change them


def test_phonemize_and_griffin_lim_load_no_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from speechnas.data.tts import MelConfig, griffin_lim, log_mel_np, phonemize\n"
        "phonemize('one two', 'en-us+m3')\n"
        "griffin_lim(log_mel_np(np.zeros(4000, np.float32), MelConfig()), MelConfig(), n_iter=2)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_log_mel_in_torch_and_numpy_agree() -> None:
    audio, _, _ = _spoken_at_mel_rate("the quick brown fox")
    ours = log_mel(torch.from_numpy(audio), MEL)
    assert ours.shape == (frames(audio.size, MEL), MEL.n_mels)
    np.testing.assert_allclose(ours.numpy(), log_mel_np(audio, MEL), atol=1e-3)
    batch = log_mel(torch.from_numpy(np.stack([audio, audio[::-1].copy()])), MEL)
    assert batch.shape == (2, *ours.shape)
    torch.testing.assert_close(batch[0], ours)


def test_griffin_lim_is_deterministic_and_keeps_the_spectrogram() -> None:
    audio, _, _ = _spoken_at_mel_rate("three four five")
    mel = log_mel_np(audio, MEL)
    a = griffin_lim(mel, MEL, n_iter=16, seed=3)
    assert a.dtype == np.float32 and a.shape == ((len(mel) - 1) * MEL.hop_length,)
    np.testing.assert_array_equal(a, griffin_lim(mel, MEL, n_iter=16, seed=3))
    assert not np.array_equal(a, griffin_lim(mel, MEL, n_iter=16, seed=4))
    again = log_mel_np(a, MEL)[: len(mel)]
    assert np.corrcoef(again.ravel(), mel[: len(again)].ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match=r"expected \[frames, 80\]"):
        griffin_lim(mel[:, :40], MEL)


def test_tiny_corpus_is_built_once_and_matches_its_audio(
    corpus: TtsCorpusInfo, tmp_path: Path
) -> None:
    vocab = PhonemeVocab.load(corpus.vocab_path)
    for split, path in corpus.manifests.items():
        utts = load_tts_manifest(path)
        assert len(utts) == SIZES[split]
        for u in utts:
            info = sf.info(str(u.audio))
            assert info.samplerate == MEL.sample_rate and info.format == "FLAC"
            assert sum(u.durations) == u.frames == frames(info.frames, MEL)
            assert abs(u.duration - info.frames / MEL.sample_rate) < 1e-3
            vocab.encode(u.phonemes)
            if split == "test":  # digit strings only, for a digit recognizer to judge
                digits = {w for forms in DIGIT_WORDS["en"] for w in forms}
                assert set(u.text.split()) <= digits
    stamp = corpus.folder / "corpus.json"
    before = stamp.stat().st_mtime_ns
    cfg = TtsCorpusConfig(sizes=SIZES)
    again = build_tts_corpus(cfg, corpus.folder.parent, workers=1, show_progress=False)
    assert again.cached and stamp.stat().st_mtime_ns == before
    # the same corpus whatever the number of workers
    other = build_tts_corpus(cfg, tmp_path, workers=2, show_progress=False)
    assert not other.cached
    for split, path in corpus.manifests.items():
        assert other.manifests[split].read_text() == path.read_text()


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"voice: 'de\+m3' does not speak English"):
        TtsCorpusConfig(voice="de+m3")
    with pytest.raises(ValueError, match=r"voice: 'en-us\+nobody'.*variants: .*m3"):
        TtsCorpusConfig(voice="en-us+nobody")
    with pytest.raises(ValueError, match=r"sizes: unknown split\(s\) \['valid'\]"):
        TtsCorpusConfig(sizes={"valid": 3})
    with pytest.raises(ValueError, match=r"mel\.fmin/fmax"):
        MelConfig(fmax=9000.0)
    cfg = TtsCorpusConfig(sizes={"train": 2}, mel=MelConfig(n_mels=64))
    assert TtsCorpusConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.digest() != TtsCorpusConfig().digest()


def test_manifest_errors_name_file_line_and_field(corpus: TtsCorpusInfo, tmp_path: Path) -> None:
    good = json.loads(corpus.manifests["train"].read_text().splitlines()[0])
    good["audio"] = str(corpus.folder / good["audio"])
    records = [
        good,
        {k: v for k, v in good.items() if k != "durations"},
        {**good, "durations": good["durations"][:-1]},
        {**good, "frames": good["frames"] + 1},
        {**good, "audio": "missing.flac"},
        {**good, "duration": -1},
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "{not json\n")
    with pytest.raises(ValueError) as err:
        load_tts_manifest(path)
    message = str(err.value)
    for line, expected in [
        (2, "missing field(s) ['durations']"),
        (3, f"field 'durations': {len(good['durations']) - 1} values for"),
        (4, f"field 'frames': {good['frames'] + 1} is not the sum of the durations"),
        (5, "field 'audio': file not found"),
        (6, "field 'duration': expected a positive number"),
        (7, "malformed JSON"),
    ]:
        assert f"{path}:{line}: {expected}" in message
    assert f"{path}:1:" not in message


def _ljspeech(folder: Path, *, durations: bool) -> tuple[list[str], list[int]]:
    """A one-utterance LJSpeech folder at 22.05 kHz; the phonemes and durations it was given."""
    s = speak_phonemes("one two three", espeak_voice("en-us+m3"))
    (folder / "wavs").mkdir(parents=True)
    sf.write(folder / "wavs" / "LJ001-0001.wav", s.audio, s.sample_rate)
    (folder / "metadata.csv").write_text("LJ001-0001|One, two, 3.|one, two, three.\n")
    n = frames(round(s.audio.size * MEL.sample_rate / s.sample_rate), MEL)
    dur = [1] * (len(s.phonemes) - 1) + [n - len(s.phonemes) + 1]
    if durations:
        record = {"id": "LJ001-0001", "phonemes": s.phonemes, "durations": dur}
        (folder / "durations.jsonl").write_text(json.dumps(record) + "\n")
    return s.phonemes, dur


def test_ljspeech_without_durations_says_how_to_provide_them(tmp_path: Path) -> None:
    _ljspeech(tmp_path, durations=False)
    with pytest.raises(ValueError, match=r"no phoneme durations.*Provide them as durations\.jsonl"):
        load_ljspeech(tmp_path)


def test_ljspeech_with_durations_loads(tmp_path: Path) -> None:
    phonemes, dur = _ljspeech(tmp_path, durations=True)
    (utt,) = load_ljspeech(tmp_path)
    assert utt.text == "one, two, three." and list(utt.durations) == dur
    vocab = PhonemeVocab.build([phonemes])
    item = TtsDataset([utt], vocab, MEL)[0]  # the 22.05 kHz audio read at the mel rate
    assert item["mel"].shape == (sum(dur), MEL.n_mels)
    with pytest.raises(ValueError, match=r"durations.jsonl:1: field 'phonemes': unknown phoneme"):
        load_ljspeech(tmp_path, PhonemeVocab(("<pad>", "x")))
    record = {"id": "LJ001-0001", "phonemes": phonemes, "durations": [*dur[:-1], dur[-1] + 5]}
    (tmp_path / "durations.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=f"field 'durations': they add up to {sum(dur) + 5}"):
        load_ljspeech(tmp_path)


def test_vocab_round_trip_and_unknown_symbols(tmp_path: Path) -> None:
    vocab = PhonemeVocab.build([["_", "h", "'oU"], ["w", "_"]])
    assert vocab.symbols == ("<pad>", "'oU", "_", "h", "w") and len(vocab) == 5
    assert vocab.decode(vocab.encode(["h", "'oU", "_"])) == ["h", "'oU", "_"]
    with pytest.raises(ValueError, match=r"unknown phoneme\(s\) \['Q'\]; known: 'oU _ h w"):
        vocab.encode(["h", "Q"])
    vocab.save(tmp_path / "v.json")
    assert PhonemeVocab.load(tmp_path / "v.json") == vocab
    (tmp_path / "bad.json").write_text('{"symbols": ["a", "<pad>"]}')
    with pytest.raises(ValueError, match=r"bad\.json: symbols: the first must be '<pad>'"):
        PhonemeVocab.load(tmp_path / "bad.json")


def test_items_collate_with_zero_padding(corpus: TtsCorpusInfo) -> None:
    utts = load_tts_manifest(corpus.manifests["train"])
    ds = TtsDataset(utts, PhonemeVocab.load(corpus.vocab_path), MEL)
    items = [ds[i] for i in range(3)]
    for it, u in zip(items, utts, strict=False):
        assert it["mel"].shape == (u.frames, MEL.n_mels) and it["id"] == u.id
        assert it["durations"].sum() == u.frames
        energy = it["energy"]
        assert torch.all(energy[it["durations"] == 0] == 0)
        first = int(torch.nonzero(it["durations"])[0])
        span = slice(0, int(it["durations"][first]))
        torch.testing.assert_close(energy[first], it["mel"][span].mean())
    batch = collate_tts(items)
    n, t = max(len(u.phonemes) for u in utts[:3]), max(u.frames for u in utts[:3])
    assert batch.phonemes.shape == batch.durations.shape == batch.energy.shape == (3, n)
    assert batch.mel.shape == (3, t, MEL.n_mels)
    assert batch.mel_lengths.tolist() == [u.frames for u in utts[:3]]
    assert batch.phoneme_lengths.tolist() == [len(u.phonemes) for u in utts[:3]]
    for b, it in enumerate(items):
        k, f = len(it["phonemes"]), it["mel"].shape[0]
        assert torch.equal(batch.phonemes[b, :k], it["phonemes"])
        assert not batch.phonemes[b, k:].any() and not batch.durations[b, k:].any()
        assert not batch.mel[b, f:].any() and not batch.energy[b, k:].any()
    assert batch.to("cpu").ids == tuple(u.id for u in utts[:3])


def test_batches_respect_max_frames(corpus: TtsCorpusInfo) -> None:
    utts = [u for m in corpus.manifests.values() for u in load_tts_manifest(m)]
    ds = TtsDataset(utts, PhonemeVocab.load(corpus.vocab_path), MEL)
    longest = max(ds.frames)
    for max_frames in (longest, 2 * longest, 10 * longest):
        batches = list(tts_batches(ds, max_frames=max_frames, rng=random.Random(1)))
        assert sorted(i for b in batches for i in b) == list(range(len(ds)))
        assert all(len(b) * max(ds.frames[i] for i in b) <= max_frames for b in batches)
        again = list(tts_batches(ds, max_frames=max_frames, rng=random.Random(1)))
        assert again == batches
    assert len(list(tts_batches(ds, max_frames=10 * longest, rng=random.Random(0)))) < len(ds)
    with pytest.raises(ValueError, match=f"max_frames: {longest - 1} is below the longest"):
        next(tts_batches(ds, max_frames=longest - 1, rng=random.Random(0)))
