from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import TINY_SIZES

from speechnas.data.manifest import load_manifest
from speechnas.data.synth.corpus import CorpusConfig, CorpusInfo, build_corpus, voice_groups


def test_splits_manifests_and_disjoint_voices(tiny_corpus: CorpusInfo) -> None:
    speakers = {}
    for split, path in tiny_corpus.manifests.items():
        utts = load_manifest(path).utterances
        assert len(utts) == tiny_corpus.stats["counts"][split]
        for u in utts:
            info = sf.info(str(u.audio_path))
            assert info.samplerate == 16000 and info.format == "FLAC"
            assert abs(info.frames / 16000 - u.duration) < 1e-3
            assert u.text and set(u.text.split()) <= {
                "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine",
            }  # fmt: skip
        speakers[split] = {u.speaker for u in utts}
    groups = voice_groups(0, (0.7, 0.15, 0.15))
    assert speakers["train"] <= set(groups["train"])
    for split in ("dev", "test", "test-noisy", "test-tel"):
        assert not speakers[split] & set(groups["train"]), split
    assert not set(groups["dev"]) & set(groups["test"])


def test_cached_until_config_changes(tiny_corpus: CorpusInfo) -> None:
    root = tiny_corpus.folder.parent
    stamp = tiny_corpus.folder / "corpus.json"
    before = stamp.stat().st_mtime_ns
    cfg = CorpusConfig(sizes=TINY_SIZES, babble_pool=6)
    assert build_corpus(cfg, root, workers=1, show_progress=False).cached
    assert stamp.stat().st_mtime_ns == before
    other = tiny_corpus.folder.parent / "other"
    small = CorpusConfig(sizes={"train": 4, "dev": 2}, babble_pool=4)
    first = build_corpus(small, other, workers=1, show_progress=False)
    assert not first.cached
    changed = CorpusConfig(sizes={"train": 5, "dev": 2}, babble_pool=4)
    again = build_corpus(changed, other, workers=1, show_progress=False)
    assert not again.cached and again.stats["counts"]["train"] == 5


def _samples(info: CorpusInfo, split: str) -> list[np.ndarray]:
    return [sf.read(str(u.audio_path))[0] for u in load_manifest(info.manifests[split]).utterances]


def test_deterministic_from_seed_whatever_the_workers(tmp_path: Path) -> None:
    cfg = CorpusConfig(sizes={"train": 6, "test-noisy": 3}, babble_pool=4)
    a = build_corpus(cfg, tmp_path / "a", workers=1, show_progress=False)
    b = build_corpus(cfg, tmp_path / "b", workers=2, show_progress=False)
    for split in ("train", "test-noisy"):
        for x, y in zip(_samples(a, split), _samples(b, split), strict=True):
            np.testing.assert_array_equal(x, y)
    c = build_corpus(
        CorpusConfig(seed=1, sizes={"train": 6}, babble_pool=4), tmp_path / "c", workers=1,
        show_progress=False,
    )  # fmt: skip
    assert load_manifest(c.manifests["train"]).utterances[0].text != load_manifest(
        a.manifests["train"]
    ).utterances[0].text or not np.array_equal(_samples(a, "train")[0], _samples(c, "train")[0])


def test_second_language(tmp_path: Path) -> None:
    info = build_corpus(
        CorpusConfig(lang="de", sizes={"train": 4}, babble_pool=3), tmp_path, workers=1,
        show_progress=False,
    )  # fmt: skip
    utts = load_manifest(info.manifests["train"]).utterances
    assert all(u.lang == "de" for u in utts)
    words = {w for u in utts for w in u.text.split()}
    assert words <= {"null", "eins", "zwei", "zwo", "drei", "vier", "fünf", "sechs", "sieben",
                     "acht", "neun"}  # fmt: skip


def test_noisy_split_is_noisier(tiny_corpus: CorpusInfo) -> None:
    """The low-SNR split's quietest tenth of frames sits closer to its loudest than test's."""

    def floor_db(split: str) -> float:
        out = []
        for x in _samples(tiny_corpus, split):
            frames = x[: len(x) // 400 * 400].reshape(-1, 400)
            e = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
            out.append(np.percentile(e, 10) - e.max())
        return float(np.median(out))

    assert floor_db("test-noisy") > floor_db("test") + 3.0


def test_open_vocabulary_phrases(tmp_path: Path) -> None:
    from speechnas.data.synth.text import load_words

    info = build_corpus(
        CorpusConfig(task="phrases", sizes={"train": 5, "test": 3}, babble_pool=3), tmp_path,
        workers=1, show_progress=False,
    )  # fmt: skip
    vocab = set(load_words("en"))
    utts = load_manifest(info.manifests["train"]).utterances
    assert all(set(u.text.split()) <= vocab and len(u.text.split()) >= 3 for u in utts)
