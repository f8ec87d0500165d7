"""The built-in synthetic corpus: speech from several engines and many voices, noise, reverb and
channels.

Engines (see :mod:`speechnas.data.synth.engines`): eSpeak NG always; Flite's statistical voices
join the training mix where Flite is installed (``engines: auto``); Festival's diphone and HTS
voices, an engine no training utterance comes from, speak the ``test-unseen-engine`` split where
Festival is installed, so every model reports how far its accuracy carries to unfamiliar
speech. The engines actually used are part of the config's digest (installing one later
rebuilds the corpus) and are recorded in ``corpus.json``. Every utterance is also warped in
vocal-tract length and tempo together (resampled by a factor drawn from
``prosody.vocal_tract``), whatever its engine. ``test-device`` is ``test``'s speech through
recording devices no training utterance passed through (microphone responses, input levels,
clipping, DC offsets, Opus/GSM/Vorbis codecs; :mod:`speechnas.data.synth.device`).

Every choice (text, voice, prosody, effects) is drawn in the parent process from generators
seeded by ``(seed, split, index)``; worker processes only render. The corpus is therefore the
same for a seed whatever the number of workers, and it is rebuilt only when its config changes.

Voice variants are split three ways, so ``dev`` and the ``test*`` splits are spoken by voices
never heard in training. ``dev`` mixes the test conditions in equal thirds (the channel of
``test``, ``test-noisy`` and ``test-tel`` in turn), so what is selected on dev (a checkpoint, an
architecture) is selected for every condition the model is tested on, without touching a test
set.

A (re)build never disturbs a corpus that another job reads: it renders into a hidden sibling
folder and swaps that in only when complete (one atomic exchange on Linux, two renames
elsewhere). A failed build leaves the previous corpus as it was; files a reader already has open
stay valid after a swap (POSIX). Audio file names carry the config digest, so a reader that loaded
an older manifest and opens its audio later fails loudly instead of reading another corpus's
audio under the old transcripts. Builders of the same corpus take turns through a lock file
(``fcntl.flock``), and one that waited reuses what the other built.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from tqdm import tqdm

from speechnas.data.audio import write_flac
from speechnas.data.manifest import write_manifest
from speechnas.data.synth.effects import EffectConfig, apply_effects, sample_effects
from speechnas.data.synth.engines import ENGINES, INSTALL_HINT, available, get_engine
from speechnas.data.synth.espeak import list_variants
from speechnas.data.synth.text import make_text
from speechnas.data.synth.voice import Voice
from speechnas.data.utterance import Utterance

try:
    import fcntl
except ImportError:  # Windows: no lock; concurrent builders still never share a folder
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 4  # bump when rendering changes, so cached corpora are rebuilt

# Accents of each language that eSpeak NG ships; every split uses all of them.
LANGUAGE_VOICES: dict[str, tuple[str, ...]] = {
    "en": (
        "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
        "en-gb-x-gbcwmd",
    ),
    "de": ("de",),
    "es": ("es", "es-419"),
    "fr": ("fr", "fr-be"),
}  # fmt: skip

SPLITS = ("train", "dev", "test", "test-noisy", "test-tel", "test-unseen-engine", "test-device")
#: optional engines that join the training mix under ``engines: auto`` (when installed), with
#: the share of utterances each takes; eSpeak takes the rest
AUTO_ENGINES = {"flite": 0.4}
#: the engine of ``test-unseen-engine`` under ``unseen_engine: auto`` (when installed)
AUTO_UNSEEN_ENGINE = "festival"

_CLEAN_ISH = EffectConfig(
    noise_prob=0.6,
    snr_db=(5.0, 30.0),
    noise_kinds=("white", "pink", "brown", "babble"),
    reverb_prob=0.3,
    rt60=(0.15, 0.7),
    telephone_prob=0.1,
)
DEFAULT_EFFECTS: dict[str, EffectConfig] = {
    "train": _CLEAN_ISH,
    "dev": _CLEAN_ISH,
    "test": _CLEAN_ISH,
    "test-noisy": dataclasses.replace(_CLEAN_ISH, noise_prob=1.0, snr_db=(0.0, 10.0)),
    "test-tel": dataclasses.replace(
        _CLEAN_ISH, noise_prob=0.3, snr_db=(15.0, 30.0), telephone_prob=1.0
    ),
    "test-unseen-engine": _CLEAN_ISH,
    # recording devices no training utterance passed through: microphone responses, input
    # levels, clipping, DC offsets and lossy codecs (Opus, GSM, Vorbis), over test's channel
    "test-device": dataclasses.replace(
        _CLEAN_ISH,
        telephone_prob=0.0,
        eq_prob=1.0,
        clip_prob=0.3,
        clip_db=(1.0, 12.0),
        dc_prob=0.3,
        level_db=(-30.0, 0.0),
        codec_prob=0.7,
    ),
}
#: dev utterance i is rendered in condition i % 3: held-out data for every test condition
_DEV_CONDITIONS = ("test", "test-noisy", "test-tel")


#: training utterances with recording devices take test-device's effect ranges (new draws)
_TRAIN_DEVICE = DEFAULT_EFFECTS["test-device"]
_GOLDEN = (5**0.5 - 1) / 2


def split_effects(split: str, index: int, train_devices: float = 0.0) -> EffectConfig:
    """The effect ranges utterance ``index`` of ``split`` is drawn from. ``train_devices``: the
    share of training utterances that also pass through a recording device (test-device's
    ranges), chosen by index along a low-discrepancy sequence so that they spread evenly and
    every other utterance keeps its draws."""
    if split == "dev":
        return DEFAULT_EFFECTS[_DEV_CONDITIONS[index % len(_DEV_CONDITIONS)]]
    if split == "train" and (index * _GOLDEN) % 1.0 < train_devices:
        return _TRAIN_DEVICE
    return DEFAULT_EFFECTS[split]


# which voice group speaks each split
_VOICE_GROUP = {
    "train": "train",
    "dev": "dev",
    "test": "test",
    "test-noisy": "test",
    "test-tel": "test",
    "test-unseen-engine": "unseen",
    "test-device": "test",
}


@dataclass(frozen=True, slots=True)
class ProsodyRange:
    rate: tuple[int, int] = (130, 230)  # words per minute
    pitch: tuple[int, int] = (20, 80)
    pitch_range: tuple[int, int] = (10, 90)
    word_gap: tuple[int, int] = (0, 8)  # x 10 ms
    vocal_tract: tuple[float, float] = (0.9, 1.1)  # resampling factor: >1 longer tract, slower


@dataclass(frozen=True, slots=True)
class CorpusConfig:
    """What to generate. ``sizes`` maps split name → number of utterances."""

    task: str = "digits"
    lang: str = "en"
    seed: int = 0
    sample_rate: int = 16000
    sizes: dict[str, int] = field(
        default_factory=lambda: {
            "train": 6000, "dev": 600, "test": 600, "test-noisy": 600, "test-tel": 600,
            "test-unseen-engine": 600, "test-device": 600,
        }
    )  # fmt: skip
    #: engine -> share of the utterances of every split but ``test-unseen-engine`` (shares are
    #: normalised); ``auto``: eSpeak plus the installed engines of ``AUTO_ENGINES``
    engines: dict[str, float] | str = "auto"
    #: the engine of ``test-unseen-engine``, never in ``engines``; ``auto``: Festival where it
    #: is installed, else no such split; ``None``: no such split
    unseen_engine: str | None = "auto"
    voice_split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    prosody: ProsodyRange = field(default_factory=ProsodyRange)
    babble_pool: int = 48
    #: share of training utterances also passed through a recording device (microphone
    #: response, level, clipping, DC offset, codec: test-device's ranges, other draws)
    train_devices: float = 0.0

    def __post_init__(self) -> None:
        if self.lang not in LANGUAGE_VOICES:
            raise ValueError(f"lang: {self.lang!r} is not one of {sorted(LANGUAGE_VOICES)}")
        unknown = sorted(set(self.sizes) - set(SPLITS))
        if unknown:
            raise ValueError(f"sizes: unknown split(s) {unknown}; allowed: {list(SPLITS)}")
        if any(n < 0 for n in self.sizes.values()):
            raise ValueError(f"sizes: counts must be >= 0, got {self.sizes}")
        if isinstance(self.engines, str):
            if self.engines != "auto":
                raise ValueError(f"engines: expected 'auto' or engine: share, got {self.engines!r}")
        else:
            if not self.engines or any(not v > 0 for v in self.engines.values()):
                raise ValueError(f"engines: expected engine: share > 0 entries, got {self.engines}")
            for name in self.engines:
                _check_engine_name("engines", name)
        if self.unseen_engine not in (None, "auto"):
            _check_engine_name("unseen_engine", self.unseen_engine)
            if isinstance(self.engines, dict) and self.unseen_engine in self.engines:
                raise ValueError(
                    f"unseen_engine: {self.unseen_engine!r} is also in engines; the held-out "
                    "engine must be one no training utterance comes from"
                )
        if self.babble_pool < 1:
            raise ValueError(
                f"babble_pool: expected at least 1 utterance per voice group to mix babble "
                f"noise from, got {self.babble_pool}"
            )
        if not 0.0 <= self.train_devices <= 1.0:
            raise ValueError(f"train_devices: expected a share in [0, 1], got {self.train_devices}")
        lo, hi = self.prosody.vocal_tract
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"prosody.vocal_tract: expected 0.5 <= lo <= hi <= 2, got {(lo, hi)}")

    def resolved(self) -> CorpusConfig:
        """This config with ``auto`` replaced by what is installed here, every named engine
        checked (:class:`EngineUnavailable` says how to install a missing one), and the
        ``test-unseen-engine`` size dropped when there is no unseen engine."""
        engines = self.engines
        if isinstance(engines, str):
            engines = {"espeak": 1.0}
            for name, share in AUTO_ENGINES.items():
                if self.lang == "en" and available(name):
                    engines[name] = share
                    engines["espeak"] -= share
        for name in engines:
            _check_voices("engines", name, self.lang)
        total = sum(engines.values())
        engines = {k: round(v / total, 6) for k, v in sorted(engines.items())}
        unseen = self.unseen_engine
        if unseen == "auto":
            unseen = None
            if self.lang == "en" and AUTO_UNSEEN_ENGINE not in engines:
                if available(AUTO_UNSEEN_ENGINE):
                    unseen = AUTO_UNSEEN_ENGINE
                elif self.sizes.get("test-unseen-engine"):
                    log.warning(
                        "%s is not installed: no test-unseen-engine split (install it with: %s)",
                        AUTO_UNSEEN_ENGINE, INSTALL_HINT[AUTO_UNSEEN_ENGINE],
                    )  # fmt: skip
        if unseen is not None:
            _check_voices("unseen_engine", unseen, self.lang)
        sizes = dict(self.sizes)
        if unseen is None:
            sizes.pop("test-unseen-engine", None)
        return dataclasses.replace(self, engines=engines, unseen_engine=unseen, sizes=sizes)

    @property
    def name(self) -> str:
        return f"{self.task}-{self.lang}"

    def to_dict(self) -> dict[str, Any]:
        d = {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}
        if not self.train_devices:  # the default corpus keeps the digest it had before
            d.pop("train_devices")
        return d

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CorpusInfo:
    folder: Path
    manifests: dict[str, Path]
    stats: dict[str, Any]
    cached: bool


def _check_engine_name(field_name: str, name: str) -> None:
    if name not in ENGINES:
        raise ValueError(f"{field_name}: unknown engine {name!r}; engines: {', '.join(ENGINES)}")


def _check_voices(field_name: str, name: str, lang: str) -> None:
    if not get_engine(name).voices(lang):
        raise ValueError(f"{field_name}: the {name} engine has no {lang!r} voices")


def voice_groups(seed: int, split: tuple[float, float, float]) -> dict[str, list[str]]:
    """Disjoint sets of eSpeak variants for train / dev / test."""
    variants = list(list_variants())
    order = np.random.default_rng([seed, 101]).permutation(len(variants))
    n_train = round(split[0] * len(variants))
    n_dev = round(split[1] * len(variants))
    names = [variants[i] for i in order]
    return {
        "train": names[:n_train],
        "dev": names[n_train : n_train + n_dev],
        "test": names[n_train + n_dev :],
    }


def engine_voices(cfg: CorpusConfig) -> dict[str, dict[str, list[str]]]:
    """Voice group (``train``, ``dev``, ``test``, ``unseen``) -> engine -> voices, for a
    resolved config. eSpeak's variants are split three ways (:func:`voice_groups`); another
    training engine has too few voices to split, so all of them speak in every group (its
    speakers in ``dev`` and ``test`` are heard in training, its texts, prosody and channels are
    not); the unseen engine speaks only in ``unseen``."""
    assert isinstance(cfg.engines, dict), "resolve the config first"
    espeak = voice_groups(cfg.seed, cfg.voice_split)
    groups: dict[str, dict[str, list[str]]] = {g: {} for g in ("train", "dev", "test", "unseen")}
    for engine in cfg.engines:
        for group in ("train", "dev", "test"):
            groups[group][engine] = (
                espeak[group] if engine == "espeak" else list(get_engine(engine).voices(cfg.lang))
            )
    if cfg.unseen_engine:
        groups["unseen"][cfg.unseen_engine] = list(get_engine(cfg.unseen_engine).voices(cfg.lang))
    return groups


def _split_id(split: str) -> int:
    return SPLITS.index(split)


def _draw_voice(
    rng: np.random.Generator, cfg: CorpusConfig, voices: dict[str, list[str]]
) -> tuple[Voice, float]:
    """A voice of one of ``voices``' engines (by the config's shares; the unseen engine alone
    in its group) and its vocal-tract factor."""
    p = cfg.prosody
    engines = list(voices)
    assert isinstance(cfg.engines, dict)
    shares = np.array([cfg.engines.get(e, 1.0) for e in engines])
    engine = engines[int(rng.choice(len(engines), p=shares / shares.sum()))]
    language = str(rng.choice(LANGUAGE_VOICES[cfg.lang])) if engine == "espeak" else cfg.lang
    voice = Voice(
        language=language,
        variant=str(rng.choice(voices[engine])),
        rate=int(rng.integers(p.rate[0], p.rate[1] + 1)),
        pitch=int(rng.integers(p.pitch[0], p.pitch[1] + 1)),
        pitch_range=int(rng.integers(p.pitch_range[0], p.pitch_range[1] + 1)),
        word_gap=int(rng.integers(p.word_gap[0], p.word_gap[1] + 1)),
        engine=engine,
    )
    return voice, float(rng.uniform(*p.vocal_tract))


@dataclass(frozen=True, slots=True)
class _Job:
    split: str
    index: int
    text: str
    voice: Voice
    vocal_tract: float
    effects: dict[str, Any]
    gain: float
    synth_seed: int
    path: str


def _plan(cfg: CorpusConfig, folder: Path) -> list[_Job]:
    groups = engine_voices(cfg)
    tag = cfg.digest()[:8]  # a reader of another config's manifest never opens these files
    jobs = []
    for split in SPLITS:
        for i in range(cfg.sizes.get(split, 0)):
            rng = np.random.default_rng([cfg.seed, _split_id(split), i])
            text = make_text(cfg.task, rng, cfg.lang)
            voice, tract = _draw_voice(rng, cfg, groups[_VOICE_GROUP[split]])
            effects = sample_effects(rng, split_effects(split, i, cfg.train_devices))
            gain = float(rng.uniform(0.25, 0.95))
            synth_seed = int(rng.integers(2**31))
            path = str(folder / split / f"{split}-{i:06d}-{tag}.flac")
            jobs.append(_Job(split, i, text, voice, tract, effects, gain, synth_seed, path))
    return jobs


# Each process's babble pools (voice group -> speech), spoken on first need for the config in
# ``_babble_cfg``: a corpus with no babble noise in a group never speaks that group's pool.
_babble: dict[str, list[np.ndarray]] = {}
_babble_cfg: list[CorpusConfig] = []


def _speak(requests: list[tuple[str, Voice, int, float]], sample_rate: int) -> list[np.ndarray]:
    """Each ``(text, voice, seed, vocal_tract)`` at ``sample_rate``; the engines batched."""
    out: list[np.ndarray | None] = [None] * len(requests)
    for engine in dict.fromkeys(r[1].engine for r in requests):
        idx = [i for i, r in enumerate(requests) if r[1].engine == engine]
        waves = get_engine(engine).synthesize([requests[i][:3] for i in idx])
        for i, (x, rate) in zip(idx, waves, strict=True):
            # resampled to sample_rate * tract and played at sample_rate: formants and pitch
            # scaled by 1 / tract, duration by tract (a vocal-tract-length and tempo change)
            target = sample_rate * requests[i][3]
            out[i] = soxr.resample(x, rate, target).astype(np.float32)
    return [x for x in out if x is not None]


def _init_worker(cfg: CorpusConfig) -> None:
    """Each worker speaks the same babble pools (one per voice group) from the seed, when a
    job first needs one (:func:`_babble_pool`)."""
    _babble.clear()
    _babble_cfg[:] = [cfg]


def _babble_pool(group: str) -> list[np.ndarray]:
    """The babble pool of voice ``group`` (the ``test`` group's where it has no voices)."""
    (cfg,) = _babble_cfg
    if group not in _babble:
        voices = engine_voices(cfg)[group]
        requests = []
        for j in range(cfg.babble_pool if voices else 0):
            rng = np.random.default_rng([cfg.seed, 202, len(group), j])
            text = make_text("phrases" if cfg.lang == "en" else cfg.task, rng, cfg.lang)
            voice, tract = _draw_voice(rng, cfg, voices)
            requests.append((text, voice, int(rng.integers(2**31)), tract))
        _babble[group] = _speak(requests, cfg.sample_rate)
    return _babble[group] or (_babble_pool("test") if group != "test" else [])


def _finish(cfg: CorpusConfig, job: _Job, x: np.ndarray) -> tuple[str, int, float]:
    """One spoken utterance through its effects, written."""
    if x.size == 0:
        raise RuntimeError(
            f"{job.voice.engine} produced no audio for {job.text!r} ({job.voice.name})"
        )
    rng = np.random.default_rng([cfg.seed, _split_id(job.split), job.index, 1])
    noisy = job.effects.get("noise") == "babble"
    babble = _babble_pool(_VOICE_GROUP[job.split]) if noisy else None
    x = apply_effects(x, cfg.sample_rate, job.effects, rng, babble)
    peak = float(np.max(np.abs(x))) or 1.0
    x = (x * (job.gain / peak)).astype(np.float32)
    write_flac(Path(job.path), x, cfg.sample_rate)
    return job.split, job.index, x.size / cfg.sample_rate


def _render(args: tuple[CorpusConfig, list[_Job]]) -> list[tuple[str, int, float]]:
    cfg, jobs = args
    requests = [(j.text, j.voice, j.synth_seed, j.vocal_tract) for j in jobs]
    return [
        _finish(cfg, j, x) for j, x in zip(jobs, _speak(requests, cfg.sample_rate), strict=True)
    ]


_CHUNK = 16  # utterances per task: one Festival process, and little pool overhead


def _run(cfg: CorpusConfig, jobs: list[_Job], workers: int) -> Iterator[tuple[str, int, float]]:
    chunks = [(cfg, jobs[i : i + _CHUNK]) for i in range(0, len(jobs), _CHUNK)]
    if workers <= 1:
        _init_worker(cfg)
        for chunk in chunks:
            yield from _render(chunk)
        return
    ctx = mp.get_context("spawn")  # eSpeak's global state must not be shared through fork
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        for done in pool.imap(_render, chunks):
            yield from done


# Linux renameat2(2): swap two existing paths in one step.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the platform or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return False
    fd, name = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [fd, name, fd, name, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _install(built: Path, folder: Path) -> None:
    """Put the complete corpus ``built`` at ``folder`` and remove the one it replaces."""
    if not folder.exists():
        built.rename(folder)
    elif _exchange(built, folder):
        shutil.rmtree(built, ignore_errors=True)  # ``built`` now holds the previous corpus
    else:  # ``folder`` is missing for the moment between the two renames
        previous = built.with_name(built.name + "-old")
        folder.rename(previous)
        built.rename(folder)
        shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Held by one builder of ``folder`` at a time (lock file ``.<name>.lock`` beside it); the
    others wait here."""
    if fcntl is None:
        yield
        return
    with folder.with_name(f".{folder.name}.lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another build of %s", folder)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _current(digest: str, folder: Path, required: Iterable[str]) -> dict[str, Any] | None:
    """The stamp of the folder at ``folder`` if it was built for ``digest`` and holds the files
    ``required`` (names relative to it)."""
    try:
        meta = json.loads((folder / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("digest") != digest:
        return None
    return meta if all((folder / name).is_file() for name in required) else None


def build_once(
    folder: Path,
    digest: str,
    required: Iterable[str],
    render: Callable[[Path], dict[str, Any]],
    *,
    force: bool = False,
) -> tuple[dict[str, Any], bool]:
    """The stamp of a corpus folder built by ``render`` once per ``digest``, and whether it was
    already there.

    ``render(scratch)`` fills the new folder ``scratch`` and returns what to record beside the
    digest in its stamp, ``corpus.json``, written last; the folder is then swapped in at
    ``folder`` (see the module docstring). A folder whose stamp has ``digest`` and that holds
    the files ``required`` (names relative to it) is reused unless ``force``.
    """
    required = list(required)
    root = folder.parent
    if not force and (meta := _current(digest, folder, required)):
        log.info("corpus %s is up to date (config %s)", folder, digest)
        return meta, True
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        if not force and (meta := _current(digest, folder, required)):  # built while we waited
            log.info("corpus %s was built meanwhile (config %s)", folder, digest)
            return meta, True
        if fcntl is not None:  # no other builder is running: whatever is left is stale
            for stale in root.glob(f".{folder.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        scratch = root / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            meta = {"digest": digest, **render(scratch)}
            (scratch / "corpus.json").write_text(json.dumps(meta, indent=1))
            _install(scratch, folder)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return meta, False


def build_corpus(
    cfg: CorpusConfig,
    root: str | Path = "corpora",
    *,
    workers: int = 2,
    force: bool = False,
    show_progress: bool = True,
) -> CorpusInfo:
    """Generates ``root/<task>-<lang>`` unless a corpus of the same config is already there.

    The corpus is rendered into ``root/.<task>-<lang>.tmp-<random>`` and swapped in when complete
    (see the module docstring); leftovers of a killed build are removed by the next one.
    """
    cfg = cfg.resolved()  # before any work: a missing engine fails here, saying how to install
    folder = Path(root) / cfg.name
    manifests = {s: folder / f"{s}.jsonl" for s in SPLITS if cfg.sizes.get(s, 0) > 0}
    meta, cached = build_once(
        folder,
        cfg.digest(),
        [p.name for p in manifests.values()],
        lambda scratch: _render_corpus(cfg, scratch, workers, show_progress),
        force=force,
    )
    if not cached:
        log.info("built %s: %d utterances in %.1f s", folder, meta["stats"]["utterances"],
                 meta["stats"]["seconds_to_build"])  # fmt: skip
    return CorpusInfo(folder, manifests, meta["stats"], cached=cached)


def _render_corpus(
    cfg: CorpusConfig, folder: Path, workers: int, show_progress: bool
) -> dict[str, Any]:
    """Renders the whole corpus into the new folder ``folder``: audio and manifests (audio paths
    relative to them, so the folder may be renamed); returns what its stamp records."""
    splits = [s for s in SPLITS if cfg.sizes.get(s, 0) > 0]
    for split in splits:
        (folder / split).mkdir(parents=True)
    jobs = _plan(cfg, folder)
    start = time.perf_counter()
    durations: dict[str, dict[int, float]] = {s: {} for s in splits}
    bar = tqdm(total=len(jobs), desc=f"synth {cfg.name}", disable=not show_progress)
    for split, index, seconds in _run(cfg, jobs, workers):
        durations[split][index] = seconds
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    for split in splits:
        utts = [
            Utterance(
                id=f"{split}-{j.index:06d}",
                audio_path=Path(j.path),
                text=j.text,
                duration=round(durations[split][j.index], 4),
                speaker=j.voice.variant if j.voice.engine == "espeak" else j.voice.name,
                lang=cfg.lang,
            )
            for j in jobs
            if j.split == split
        ]
        write_manifest(folder / f"{split}.jsonl", utts)
    stats = {
        "utterances": len(jobs),
        "seconds_to_build": elapsed,
        "utterances_per_second": len(jobs) / elapsed,
        "workers": workers,
        "hours": {s: sum(d.values()) / 3600 for s, d in durations.items()},
        "counts": {s: len(d) for s, d in durations.items()},
        "voices": {
            g: {e: len(v) for e, v in by_engine.items()}
            for g, by_engine in engine_voices(cfg).items()
        },
        "engines": cfg.engines,
        "unseen_engine": cfg.unseen_engine,
        "engine_counts": {
            s: dict(Counter(j.voice.engine for j in jobs if j.split == s)) for s in splits
        },
    }
    return {"config": cfg.to_dict(), "stats": stats}
