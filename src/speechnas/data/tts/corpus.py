"""The speech synthesis corpus: one eSpeak NG voice, its phonemes and their durations in frames.

A FastSpeech-like acoustic model learns to map phonemes, each repeated for its duration, to
log-mel frames, so every utterance needs its phonemes and how many frames each lasts. eSpeak NG
times its own phonemes (:func:`speechnas.data.tts.phonemes.speak_phonemes`), so the durations
are exact, not the guesses of a forced aligner: ``sum(durations) == frames`` of the audio, with
frame ``t`` counted for the phoneme holding sample ``t * hop_length``
(:func:`speechnas.data.tts.mel.frame_durations`).

The texts are the synthetic corpus's: open-vocabulary phrases with digit strings mixed in
(``digit_share``); the ``test`` split is digit strings only, so a digit recognizer can judge how
intelligible synthesized speech is. The default voice, ``en-us+m3``, is eSpeak's US English
with the plain male variant ``m3`` (no breathiness or echo), at eSpeak's own prosody; audio is
resampled with soxr to the mel rate and written as FLAC.

Every text and seed is drawn from generators seeded by ``(seed, split, index)`` and every
utterance is spoken in a fresh eSpeak process, so the corpus is the same for a config whatever
the number of workers. It is built, reused and swapped in like the synthetic ASR corpus
(:func:`speechnas.data.synth.corpus.build_once`): once per config digest, atomically, one
builder at a time.

Other corpora: :func:`load_tts_manifest` reads any manifest of the same JSONL records, and
:func:`load_ljspeech` an LJSpeech folder given a ``durations.jsonl`` beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing as mp
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from tqdm import tqdm

from speechnas.data.audio import AudioError, audio_info, write_flac
from speechnas.data.manifest import ManifestError, Problem
from speechnas.data.synth.corpus import LANGUAGE_VOICES, build_once
from speechnas.data.synth.text import load_words, make_digits, make_phrase
from speechnas.data.tts.mel import MelConfig, frame_durations, frames
from speechnas.data.tts.phonemes import PhonemeVocab, espeak_voice, speak_phonemes

__all__ = [
    "SPLITS",
    "TtsCorpusConfig",
    "TtsCorpusInfo",
    "TtsUtterance",
    "build_tts_corpus",
    "load_ljspeech",
    "load_tts_manifest",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when rendering changes, so cached corpora are rebuilt
SPLITS = ("train", "dev", "test")
VOCAB_FILE = "phonemes.json"
_CHUNK = 16  # utterances per worker task


@dataclass(frozen=True)
class TtsCorpusConfig:
    """What to synthesize. ``voice``: an English eSpeak voice name, ``language+variant``;
    ``sizes``: split -> utterances; ``digit_share``: the share of ``train`` and ``dev`` texts
    that are digit strings (all of ``test``'s are)."""

    voice: str = "en-us+m3"
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 3000, "dev": 100, "test": 100})
    seed: int = 0
    mel: MelConfig = field(default_factory=MelConfig)
    digit_share: float = 0.3

    def __post_init__(self) -> None:
        language = espeak_voice(self.voice).language
        if language not in LANGUAGE_VOICES["en"]:
            raise ValueError(
                f"voice: {self.voice!r} does not speak English, the language of the texts; "
                f"languages: {', '.join(LANGUAGE_VOICES['en'])}"
            )
        unknown = sorted(set(self.sizes) - set(SPLITS))
        if unknown:
            raise ValueError(f"sizes: unknown split(s) {unknown}; allowed: {list(SPLITS)}")
        if any(not isinstance(n, int) or n < 0 for n in self.sizes.values()):
            raise ValueError(f"sizes: counts must be integers >= 0, got {self.sizes}")
        if not 0.0 <= self.digit_share <= 1.0:
            raise ValueError(f"digit_share: expected a share in [0, 1], got {self.digit_share}")

    @property
    def name(self) -> str:
        """The corpus folder's name, e.g. ``tts-en-us-m3``."""
        return "tts-" + self.voice.replace("+", "-")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TtsCorpusConfig:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed) - {"generator_version"})
        if unknown:
            raise ValueError(f"tts corpus: unknown field(s) {unknown}; allowed: {allowed}")
        d = {k: v for k, v in d.items() if k in allowed}
        if isinstance(d.get("mel"), dict):
            d["mel"] = MelConfig.from_dict(d["mel"])
        return cls(**d)

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class TtsCorpusInfo:
    """A built corpus: its folder, the manifest of each split and the phoneme vocabulary."""

    folder: Path
    manifests: dict[str, Path]
    vocab_path: Path
    stats: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


@dataclass(frozen=True)
class TtsUtterance:
    """One utterance: ``audio`` (absolute path), its phonemes and each one's duration in mel
    frames, which add up to ``frames``; ``duration`` in seconds."""

    id: str
    audio: Path
    text: str
    phonemes: tuple[str, ...]
    durations: tuple[int, ...]
    frames: int
    duration: float

    def to_json(self, base: Path) -> dict[str, Any]:
        """The manifest record, with ``audio`` relative to ``base`` when it lies below it."""
        audio = self.audio.relative_to(base) if self.audio.is_relative_to(base) else self.audio
        record = dataclasses.asdict(self)
        record.update(audio=str(audio), phonemes=list(self.phonemes))
        record["durations"] = list(self.durations)
        return record


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Job:
    split: str
    index: int
    text: str
    seed: int
    path: Path


def _plan(cfg: TtsCorpusConfig, folder: Path) -> list[_Job]:
    words = load_words("en")
    tag = cfg.digest()[:8]  # a reader of another config's manifest never opens these files
    jobs = []
    for split_id, split in enumerate(SPLITS):
        for i in range(cfg.sizes.get(split, 0)):
            rng = np.random.default_rng([cfg.seed, split_id, i])
            digits = split == "test" or float(rng.random()) < cfg.digit_share
            text = make_digits(rng, "en") if digits else make_phrase(rng, words)
            path = folder / split / f"{split}-{i:06d}-{tag}.flac"
            jobs.append(_Job(split, i, text, int(rng.integers(2**31)), path))
    return jobs


def _render_one(cfg: TtsCorpusConfig, job: _Job) -> TtsUtterance:
    spoken = speak_phonemes(job.text, espeak_voice(cfg.voice), seed=job.seed)
    if spoken.audio.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {job.text!r} ({cfg.voice})")
    rate = cfg.mel.sample_rate
    audio = soxr.resample(spoken.audio, spoken.sample_rate, rate).astype(np.float32)
    starts = [min(round(s * rate / spoken.sample_rate), audio.size) for s in spoken.starts]
    durations = frame_durations(starts, audio.size, cfg.mel)
    write_flac(job.path, audio, rate)
    return TtsUtterance(
        id=f"{job.split}-{job.index:06d}",
        audio=job.path,
        text=job.text,
        phonemes=tuple(spoken.phonemes),
        durations=tuple(durations),
        frames=frames(audio.size, cfg.mel),
        duration=round(audio.size / rate, 4),
    )


def _render(args: tuple[TtsCorpusConfig, list[_Job]]) -> list[tuple[str, TtsUtterance]]:
    cfg, jobs = args
    return [(job.split, _render_one(cfg, job)) for job in jobs]


def _run(
    cfg: TtsCorpusConfig, jobs: list[_Job], workers: int
) -> Iterator[tuple[str, TtsUtterance]]:
    chunks = [(cfg, jobs[i : i + _CHUNK]) for i in range(0, len(jobs), _CHUNK)]
    if workers <= 1:
        for chunk in chunks:
            yield from _render(chunk)
        return
    ctx = mp.get_context("spawn")  # eSpeak's global state must not be shared through fork
    with ctx.Pool(workers) as pool:
        for done in pool.imap(_render, chunks):
            yield from done


def _render_corpus(
    cfg: TtsCorpusConfig, folder: Path, workers: int, show_progress: bool
) -> dict[str, Any]:
    """Audio, manifests and the vocabulary of every phoneme spoken, in the new folder
    ``folder``; returns what the corpus stamp records."""
    splits = [s for s in SPLITS if cfg.sizes.get(s, 0) > 0]
    for split in splits:
        (folder / split).mkdir(parents=True)
    jobs = _plan(cfg, folder)
    start = time.perf_counter()
    utts: dict[str, list[TtsUtterance]] = {s: [] for s in splits}
    bar = tqdm(total=len(jobs), desc=f"synth {cfg.name}", disable=not show_progress)
    for split, utt in _run(cfg, jobs, workers):
        utts[split].append(utt)
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    for split in splits:
        lines = [json.dumps(u.to_json(folder), ensure_ascii=False) + "\n" for u in utts[split]]
        (folder / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
    vocab = PhonemeVocab.build(u.phonemes for us in utts.values() for u in us)
    vocab.save(folder / VOCAB_FILE)
    stats = {
        "utterances": len(jobs),
        "seconds_to_build": elapsed,
        "workers": workers,
        "counts": {s: len(us) for s, us in utts.items()},
        "hours": {s: sum(u.duration for u in us) / 3600 for s, us in utts.items()},
        "phonemes": len(vocab) - 1,
    }
    return {"config": cfg.to_dict(), "stats": stats}


def build_tts_corpus(
    cfg: TtsCorpusConfig,
    root: str | Path = "corpora",
    *,
    workers: int = 2,
    force: bool = False,
    show_progress: bool = True,
) -> TtsCorpusInfo:
    """Synthesizes ``root/<cfg.name>`` unless a corpus of the same config is already there."""
    folder = Path(root) / cfg.name
    manifests = {s: folder / f"{s}.jsonl" for s in SPLITS if cfg.sizes.get(s, 0) > 0}
    meta, cached = build_once(
        folder,
        cfg.digest(),
        [*(p.name for p in manifests.values()), VOCAB_FILE],
        lambda scratch: _render_corpus(cfg, scratch, workers, show_progress),
        force=force,
    )
    if not cached:
        log.info("built %s: %d utterances in %.1f s", folder, meta["stats"]["utterances"],
                 meta["stats"]["seconds_to_build"])  # fmt: skip
    return TtsCorpusInfo(folder, manifests, folder / VOCAB_FILE, meta["stats"], cached)


# --------------------------------------------------------------------------- loading

_FIELDS = ("id", "audio", "text", "phonemes", "durations", "frames", "duration")


def _count(value: Any, *, positive: bool) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= int(positive)


def _alignment_problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with the ``phonemes`` and ``durations`` fields of a record."""
    phonemes, durations = obj.get("phonemes"), obj.get("durations")
    problems = []
    if not isinstance(phonemes, list) or not phonemes:
        problems.append(f"field 'phonemes': expected a non-empty list, got {phonemes!r}")
    elif not all(isinstance(p, str) and p for p in phonemes):
        problems.append(f"field 'phonemes': expected non-empty strings, got {phonemes}")
    if not isinstance(durations, list) or not all(_count(d, positive=False) for d in durations):
        problems.append(f"field 'durations': expected a list of frame counts >= 0, got {durations}")
    elif isinstance(phonemes, list) and len(durations) != len(phonemes):
        problems.append(f"field 'durations': {len(durations)} values for {len(phonemes)} phonemes")
    return problems


def _record(obj: Any, base: Path) -> TtsUtterance | list[str]:
    """One manifest record as an utterance, or what is wrong with it."""
    if not isinstance(obj, dict):
        return [f"expected a JSON object, got {type(obj).__name__}"]
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        return [f"missing field(s) {missing}; a record has {list(_FIELDS)}"]
    problems = []
    for key in ("id", "audio", "text"):
        if not isinstance(obj[key], str) or (key != "text" and not obj[key]):
            problems.append(f"field {key!r}: expected a non-empty string, got {obj[key]!r}")
    problems += _alignment_problems(obj)
    if not _count(obj["frames"], positive=True):
        problems.append(f"field 'frames': expected a positive integer, got {obj['frames']!r}")
    elif not problems and obj["frames"] != sum(obj["durations"]):
        problems.append(
            f"field 'frames': {obj['frames']} is not the sum of the durations "
            f"({sum(obj['durations'])})"
        )
    seconds = obj["duration"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        problems.append(f"field 'duration': expected a positive number of seconds, got {seconds!r}")
    elif not math.isfinite(seconds):
        problems.append(f"field 'duration': expected a finite number, got {seconds!r}")
    if problems:
        return problems
    audio = (base / obj["audio"]).absolute()
    if not audio.is_file():
        return [f"field 'audio': file not found: {audio}"]
    return TtsUtterance(
        id=obj["id"],
        audio=audio,
        text=obj["text"],
        phonemes=tuple(obj["phonemes"]),
        durations=tuple(obj["durations"]),
        frames=obj["frames"],
        duration=float(seconds),
    )


def _checked(
    source: str, found: list[tuple[int, TtsUtterance]], problems: list[Problem]
) -> list[TtsUtterance]:
    """The utterances, unless there are problems (then all of them raised at once)."""
    seen: dict[str, int] = {}
    for line, utt in found:
        if utt.id in seen:
            problems.append(Problem(source, line, f"duplicate id {utt.id!r} (line {seen[utt.id]})"))
        seen.setdefault(utt.id, line)
    if not found and not problems:
        problems.append(Problem(source, None, "no utterances"))
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: p.line or 0), source=source)
    return [utt for _, utt in found]


def load_tts_manifest(path: str | Path) -> list[TtsUtterance]:
    """The utterances of a JSONL manifest of records ``{"id", "audio" (relative to the
    manifest), "text", "phonemes", "durations", "frames", "duration"}``.

    Raises :class:`~speechnas.data.manifest.ManifestError` (a ``ValueError``) listing every
    bad record as ``file:line: field 'name': what is wrong``.
    """
    path = Path(path)
    return _read_records(path, lambda obj: _record(obj, path.parent))


def _read_records(
    path: Path, parse: Callable[[Any], TtsUtterance | list[str]]
) -> list[TtsUtterance]:
    """The records of a JSONL file, each parsed by ``parse`` (an utterance, or what is wrong
    with the record); every problem of every line is raised together."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError([Problem(source, None, f"cannot read: {err}")], source=source) from err
    found, problems = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(source, lineno, f"malformed JSON: {err.msg}"))
            continue
        result = parse(obj)
        if isinstance(result, TtsUtterance):
            found.append((lineno, result))
        else:
            problems += [Problem(source, lineno, msg) for msg in result]
    return _checked(source, found, problems)


# --------------------------------------------------------------------------- LJSpeech

_DURATIONS_HELP = (
    "durations.jsonl beside metadata.csv, one JSON object per line: "
    '{{"id": "LJ001-0001", "phonemes": ["_", "p", ...], "durations": [3, 5, ...]}}, each '
    "phoneme's duration in mel frames of {hop} samples at {rate} Hz (frame t is centred on "
    "sample t * {hop}) adding up to 1 + samples // {hop}; a forced aligner (e.g. the Montreal "
    "Forced Aligner) gives the phone intervals to convert"
)


def load_ljspeech(
    folder: str | Path, vocab: PhonemeVocab | None = None, *, mel: MelConfig | None = None
) -> list[TtsUtterance]:
    """The utterances of an LJSpeech-layout folder: ``metadata.csv`` (``id|text|normalized
    text``), ``wavs/<id>.wav`` and ``durations.jsonl`` (phonemes and durations in frames of
    ``mel``, which LJSpeech lacks; the error says how to provide them). With ``vocab`` every
    phoneme must be one of its symbols. The audio may be at any rate: durations count frames
    of it resampled to ``mel.sample_rate``.
    """
    folder, mel = Path(folder), mel or MelConfig()
    metadata, aligned = folder / "metadata.csv", folder / "durations.jsonl"
    if not metadata.is_file():
        raise ValueError(f"{folder}: no metadata.csv; expected the LJSpeech layout")
    if not aligned.is_file():
        raise ValueError(
            f"{folder}: no phoneme durations: LJSpeech gives text and audio only, and training "
            "needs each utterance's phonemes and their durations. Provide them as "
            + _DURATIONS_HELP.format(hop=mel.hop_length, rate=mel.sample_rate)
        )
    texts: dict[str, str] = {}
    for line in metadata.read_text(encoding="utf-8").splitlines():
        fields = line.split("|")
        if len(fields) >= 2:
            texts[fields[0]] = fields[2] if len(fields) > 2 and fields[2] else fields[1]
    return _read_records(aligned, lambda obj: _ljspeech_record(obj, folder, texts, vocab, mel))


def write_tts_corpus(
    utts: Sequence[TtsUtterance],
    folder: str | Path,
    *,
    dev: int = 100,
    test: int = 100,
    seed: int = 0,
) -> TtsCorpusInfo:
    """Writes your utterances (e.g. :func:`load_ljspeech`'s) as a corpus a TTS search reads
    (``corpus: null`` with ``train: {train, dev, test, vocab}``): a seeded shuffle split into
    ``dev`` and ``test`` utterances and the rest for training, one JSONL manifest per split
    (audio paths absolute) and the phoneme inventory of all of them."""
    if dev + test >= len(utts):
        raise ValueError(
            f"dev + test: {dev} + {test} utterances leave none of the {len(utts)} for training"
        )
    order = list(range(len(utts)))
    random.Random(seed).shuffle(order)
    parts = {"dev": order[:dev], "test": order[dev : dev + test], "train": order[dev + test :]}
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    manifests = {}
    for split, idx in parts.items():
        lines = [json.dumps(utts[i].to_json(out), ensure_ascii=False) + "\n" for i in sorted(idx)]
        manifests[split] = out / f"{split}.jsonl"
        manifests[split].write_text("".join(lines), encoding="utf-8")
    vocab = PhonemeVocab.build(u.phonemes for u in utts)
    vocab.save(out / VOCAB_FILE)
    stats = {"counts": {k: len(v) for k, v in parts.items()}, "phonemes": len(vocab) - 1}
    return TtsCorpusInfo(out, manifests, out / VOCAB_FILE, stats)


def _ljspeech_record(
    obj: Any, folder: Path, texts: dict[str, str], vocab: PhonemeVocab | None, mel: MelConfig
) -> TtsUtterance | list[str]:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return [f"field 'id': expected an object with a string id, got {str(obj)[:80]}"]
    if obj["id"] not in texts:
        return [f"field 'id': {obj['id']!r} is not in metadata.csv"]
    problems = _alignment_problems(obj)
    if not problems and vocab is not None:
        try:
            vocab.encode(obj["phonemes"])
        except ValueError as err:
            problems.append(f"field 'phonemes': {err}")
    if problems:
        return problems
    wav = folder / "wavs" / f"{obj['id']}.wav"
    try:
        rate, n, _ = audio_info(wav)
    except AudioError as err:
        return [str(err)]
    n_frames = frames(round(n * mel.sample_rate / rate), mel)
    if sum(obj["durations"]) != n_frames:
        return [
            f"field 'durations': they add up to {sum(obj['durations'])} frames, the audio has "
            f"{n_frames} (1 + samples // {mel.hop_length} at {mel.sample_rate} Hz)"
        ]
    return TtsUtterance(
        id=obj["id"],
        audio=wav.absolute(),
        text=texts[obj["id"]],
        phonemes=tuple(obj["phonemes"]),
        durations=tuple(obj["durations"]),
        frames=n_frames,
        duration=n / rate,
    )
