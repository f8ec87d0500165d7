import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_SIZES

from speechnas.data.manifest import load_manifest
from speechnas.data.synth import corpus
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
    espeak = {k: {s for s in v if ":" not in s} for k, v in speakers.items()}  # flite:rms ...
    groups = voice_groups(0, (0.7, 0.15, 0.15))
    assert espeak["train"] <= set(groups["train"])
    for split in ("dev", "test", "test-noisy", "test-tel"):
        assert not espeak[split] & set(groups["train"]), split
    assert not set(groups["dev"]) & set(groups["test"])
    # engines: the training mix has Flite's voices, the unseen engine speaks only its own split
    assert tiny_corpus.stats["engines"] == {"espeak": 0.6, "flite": 0.4}
    assert {s.split(":")[0] for s in speakers["train"] - espeak["train"]} == {"flite"}
    assert speakers["test-unseen-engine"] and all(
        s.startswith("festival:") for s in speakers["test-unseen-engine"]
    )
    assert not any(
        s.startswith("festival:")
        for k, v in speakers.items()
        if k != "test-unseen-engine"
        for s in v
    )


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


SMALL = CorpusConfig(sizes={"train": 4, "dev": 2}, babble_pool=3)
OTHER = CorpusConfig(seed=1, sizes={"train": 5, "dev": 2}, babble_pool=3)


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _check_complete(info: CorpusInfo) -> None:
    """Every manifest loads (each audio file exists and has a valid header) and points into the
    corpus folder itself, not at the folder it was rendered in."""
    folder = info.folder.absolute()
    for split, path in info.manifests.items():
        assert ".tmp-" not in path.read_text()
        utts = load_manifest(path).utterances
        assert len(utts) == info.stats["counts"][split]
        assert all(u.audio_path.is_relative_to(folder) for u in utts)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_rebuild_swaps_in_a_complete_corpus_while_a_reader_holds_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # as where the atomic exchange is unavailable
        monkeypatch.setattr(corpus, "_exchange", lambda a, b: False)
    old = build_corpus(SMALL, tmp_path, workers=1, show_progress=False)
    utt = load_manifest(old.manifests["train"]).utterances[0]
    expected, _ = sf.read(str(utt.audio_path))
    old_manifest = old.manifests["train"].read_bytes()
    with utt.audio_path.open("rb") as audio, old.manifests["train"].open("rb") as manifest:
        new = build_corpus(OTHER, tmp_path, workers=1, show_progress=False)
        # What the reader opened is the old corpus still, complete.
        np.testing.assert_array_equal(sf.read(audio)[0], expected)
        assert manifest.read() == old_manifest
    assert not new.cached and new.folder == old.folder and new.stats["counts"]["train"] == 5
    _check_complete(new)
    # An old manifest's audio path is gone rather than naming some of the new corpus's audio.
    assert not utt.audio_path.exists()
    assert _entries(tmp_path) == [".digits-en.lock", "digits-en"]
    assert build_corpus(OTHER, tmp_path, workers=1, show_progress=False).cached


def test_a_failed_build_leaves_the_previous_corpus_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_corpus(SMALL, tmp_path, workers=1, show_progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / ".digits-en.tmp-0123456789ab" / "train").mkdir(parents=True)  # a killed build's
    finish, rendered = corpus._finish, []

    def finish_then_crash(
        cfg: CorpusConfig, job: corpus._Job, x: np.ndarray
    ) -> tuple[str, int, float]:
        if len(rendered) == 3:
            raise RuntimeError("synthesizer crashed")
        rendered.append(finish(cfg, job, x))
        return rendered[-1]

    monkeypatch.setattr(corpus, "_finish", finish_then_crash)
    with pytest.raises(RuntimeError, match="synthesizer crashed"):
        build_corpus(OTHER, tmp_path, workers=1, show_progress=False)
    assert len(rendered) == 3
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert _entries(tmp_path) == [".digits-en.lock", "digits-en"]
    monkeypatch.undo()
    assert build_corpus(SMALL, tmp_path, workers=1, show_progress=False).cached


_BUILD = """
import json, logging, sys
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
logging.basicConfig(level=logging.INFO, format="%(message)s")
cfg = CorpusConfig(sizes={"train": 4, "dev": 2}, babble_pool=3)
info = build_corpus(cfg, sys.argv[1], workers=1, show_progress=False)
print(json.dumps({"cached": info.cached}))
"""


def test_concurrent_builders_take_turns(tmp_path: Path) -> None:
    """Two builders that start while a third holds the lock: one builds, the other reuses it."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    with (tmp_path / ".digits-en.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _BUILD, str(tmp_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        for proc in procs:  # both are waiting for the lock, and have written nothing
            assert proc.stderr is not None
            assert "waiting for another build" in proc.stderr.readline()
        assert _entries(tmp_path) == [".digits-en.lock"]
        fcntl.flock(lock, fcntl.LOCK_UN)
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out.splitlines()[-1])["cached"])
    assert sorted(outcomes) == [False, True]
    info = build_corpus(SMALL, tmp_path, workers=1, show_progress=False)
    assert info.cached
    _check_complete(info)
    assert _entries(tmp_path) == [".digits-en.lock", "digits-en"]
