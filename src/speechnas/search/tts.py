"""The TTS search (``task: tts``): FastSpeech 2-style acoustic models on the same engine as the
ASR search (space, strategies, successive halving, study, selection, retraining).

Set-up (:func:`prepare_tts`): the TTS corpus (``corpus: tts-en``, synthesized once with
phoneme durations from the synthesizer) and the **judge**, an ASR model that transcribes
synthesized speech: ``judge`` names an exported one, or one is trained on the built-in digits
corpus (``judge_minutes``, once, kept under ``corpora_dir``).

A trial (:class:`TtsTrials`): the latency is measured before training (ONNX Runtime on the
target: the mel of a 32-phoneme, 256-frame sentence, 3.2 s of speech, with fixed durations, so
an untrained model costs what a trained one will); the model trains for the rung's budget and
is scored on dev: ``mcd`` (reference durations), ``duration_error``, and ``tts_cer``: the judge's
CER on the dev sentences made of digits, spoken by the model with its own durations and
vocoded by Griffin-Lim (the same vocoder for every candidate, so only the acoustic model
differs).

The retrained selection (:func:`retrain_tts`) is scored the same way on the test split, exported
to ONNX (fp32 and int8), timed on the target, and speaks three test sentences (WAV and mel PNG)
so a person can listen and look.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from speechnas.data.tts import (
    MelConfig,
    PhonemeVocab,
    TtsCorpusConfig,
    build_tts_corpus,
    griffin_lim,
    load_tts_manifest,
)
from speechnas.nn.tts import FastSpeech, decode_tts, tts_macs, tts_parameters
from speechnas.search.trial import Fidelity
from speechnas.train.tts import TtsTrainConfig, TtsTrainer, load_tts_model

if TYPE_CHECKING:
    from rich.console import Console

    from speechnas.data.tts import TtsUtterance
    from speechnas.hardware.target import Target
    from speechnas.search.config import SearchConfig
    from speechnas.space import Arch

#: The sentence latency refers to: 32 phonemes of 8 frames (256 frames, 3.2 s at 12.5 ms).
LATENCY_PHONEMES = 32
FRAMES_PER_PHONEME = 8
#: Dev sentences the judge transcribes per trial (those made of digit words).
JUDGE_UTTERANCES = 40
#: Test sentences whose pitch contour the retrained model is scored on (log-F0 RMSE).
PITCH_UTTERANCES = 20
DIGIT_WORDS = frozenset(
    ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
)  # the built-in digits corpus's words: what the judge knows


@dataclass(frozen=True)
class TtsSetup:
    base: TtsTrainConfig
    vocab_size: int
    judge: Path | None
    corpus: dict[str, Any]


def own_tts_data(cfg: SearchConfig) -> TtsTrainConfig:
    """The training config of a TTS search on your own manifests (``corpus: null``)."""
    base = TtsTrainConfig.from_dict(dict(cfg.train))
    for name in ("train", "dev", "test", "vocab"):
        path = getattr(base, name)
        if not path or not Path(path).is_file():
            raise ValueError(
                f"train.{name}: {path!r} is not a file; a TTS search on your own data "
                "(corpus: null) names its manifests train, dev, test and its phoneme inventory "
                "vocab under train:, or set corpus: tts-en for the built-in corpus"
            )
    load_tts_manifest(base.train)  # a bad record is named (file, line, field) before any work
    return base


def tts_corpus_config(cfg: SearchConfig) -> TtsCorpusConfig:
    name = cfg.corpus if isinstance(cfg.corpus, str) else None
    if name is None or not name.startswith("tts"):
        raise ValueError(
            f"corpus: {cfg.corpus!r}: a TTS search needs a TTS corpus (corpus: tts-en)"
        )
    sizes = {**TtsCorpusConfig().sizes, **cfg.corpus_sizes}
    return dataclasses.replace(TtsCorpusConfig(), sizes=sizes, seed=cfg.seed)


def prepare_tts(cfg: SearchConfig, console: Console) -> TtsSetup:
    """Builds (or finds) the TTS corpus and the judge; the base training config of trials.
    With ``corpus: null`` the ``train`` section names your own manifests (``train``, ``dev``,
    ``test``: JSONL as :func:`speechnas.data.tts.load_tts_manifest` reads them), the phoneme
    inventory (``vocab``), ``mel`` and ``voice``."""
    if cfg.corpus is None:
        base = own_tts_data(cfg)
        judge = ensure_judge(cfg, console)
        return TtsSetup(base, len(PhonemeVocab.load(base.vocab)), judge, {"own": True})
    corpus = tts_corpus_config(cfg)
    t0 = time.perf_counter()
    info = build_tts_corpus(corpus, Path(cfg.corpora_dir))
    console.print(f"TTS corpus: {info.folder} ({time.perf_counter() - t0:.0f} s)")
    over = dict(cfg.train)
    base = TtsTrainConfig.from_dict(
        {
            **over,
            "train": str(info.manifests["train"]),
            "dev": str(info.manifests["dev"]),
            "test": str(info.manifests["test"]),
            "vocab": str(info.vocab_path),
            "mel": dataclasses.asdict(corpus.mel),
            "voice": corpus.voice,
        }
    )
    judge = ensure_judge(cfg, console)
    vocab = len(PhonemeVocab.load(info.vocab_path))
    return TtsSetup(base, vocab, judge, {"folder": str(info.folder)})


# -- the judge ---------------------------------------------------------------------------------
def ensure_judge(cfg: SearchConfig, console: Console) -> Path | None:
    """The exported ASR model that transcribes synthesized speech (see the module docstring)."""
    if cfg.judge:
        return check_judge(Path(cfg.judge))
    if cfg.judge_minutes <= 0:
        return None
    from speechnas.data.synth.corpus import CorpusConfig, build_corpus
    from speechnas.export.onnx import export_checkpoint
    from speechnas.nn.presets import preset
    from speechnas.search.config import base_train_config
    from speechnas.search.select import retrain

    recipe = {"preset": "small", "frontend": "knf80", "minutes": cfg.judge_minutes, "seed": 0,
              "corpus": CorpusConfig().digest()}  # fmt: skip
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(cfg.corpora_dir) / f"tts-judge-{key}"
    if (folder / "judge.json").is_file():
        return folder / "onnx"
    console.print(
        f"training the judge (ASR model `small` on the digits corpus, {cfg.judge_minutes:g} min,"
        f" once; kept in {folder})"
    )
    info = build_corpus(CorpusConfig(), Path(cfg.corpora_dir))
    from speechnas.search.config import SearchConfig as Asr

    base = base_train_config(Asr(base="baseline", train={"threads": 2}))  # the packaged recipe
    data = base.data.with_corpus(info.manifests)
    data = dataclasses.replace(data, test={"test": data.test["test"]})
    base = base.replace(data=data)
    shutil.rmtree(folder, ignore_errors=True)
    metrics = retrain(preset("small", frontend="knf80"), base, cfg.judge_minutes,
                      folder / "train", seed=0, threads=2)  # fmt: skip
    export_checkpoint(metrics["checkpoint"], folder / "onnx")
    (folder / "judge.json").write_text(json.dumps({"recipe": recipe, "metrics": metrics}, indent=1))
    console.print(f"  judge WER on the digits test set: {100 * metrics['wer:test']:.2f}%")
    return folder / "onnx"


def check_judge(path: Path) -> Path:
    """``path`` if it holds an exported ASR model; a ValueError saying how to make one."""
    if not path.is_dir() or not any(path.glob("*.onnx")):
        raise ValueError(
            f"judge: {path} is not an exported speechnas ASR model (no ONNX files); make one "
            "with `speechnas export --checkpoint RUN/best --output DIR`, or set judge: null"
        )
    return path


def digit_utterances(utts: list[TtsUtterance], limit: int) -> list[TtsUtterance]:
    """The utterances whose text the judge knows (digit words only), the first ``limit``."""
    return [u for u in utts if set(u.text.split()) <= DIGIT_WORDS][:limit]


@torch.no_grad()
def synthesize_utterances(
    model: FastSpeech, utts: list[TtsUtterance], vocab: PhonemeVocab, mel: MelConfig
) -> list[np.ndarray]:
    """``utts``' phonemes spoken by ``model`` with its own durations, vocoded by Griffin-Lim."""
    model.eval()
    audios = []
    for u in utts:
        ids = torch.tensor([vocab.encode(list(u.phonemes))])
        spec = model.infer(ids)[0].numpy()
        with warnings.catch_warnings():  # an untrained model may speak a few frames only
            warnings.filterwarnings("ignore", message="n_fft=.* is too large")
            audios.append(griffin_lim(spec, mel))
    return audios


@torch.no_grad()
def intelligibility(
    model: FastSpeech,
    utts: list[TtsUtterance],
    vocab: PhonemeVocab,
    mel: MelConfig,
    judge: Path,
) -> dict[str, float]:
    """The judge's CER and WER on ``utts`` spoken by ``model`` (its own durations, Griffin-Lim)."""
    from speechnas.export.tts_judge import judge_texts

    audios = synthesize_utterances(model, utts, vocab, mel)
    res = judge_texts(audios, mel.sample_rate, [u.text for u in utts], judge)
    return {"tts_cer": float(res.cer), "tts_wer": float(res.wer)}


def reference_intelligibility(
    utts: list[TtsUtterance], mel: MelConfig, judge: Path
) -> dict[str, float]:
    """The judge's CER on the recordings themselves (``recorded``) and on their log-mels
    vocoded by Griffin-Lim (``vocoded``): the ceiling any acoustic model is judged against."""
    import soundfile as sf

    from speechnas.data.tts import log_mel_np
    from speechnas.export.tts_judge import judge_texts

    texts = [u.text for u in utts]
    audios = [sf.read(u.audio, dtype="float32")[0] for u in utts]
    vocoded = [griffin_lim(log_mel_np(a, mel), mel) for a in audios]
    return {
        "recorded": float(judge_texts(audios, mel.sample_rate, texts, judge).cer),
        "vocoded": float(judge_texts(vocoded, mel.sample_rate, texts, judge).cer),
    }


# -- trials ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TtsTrials:
    """The trial steps of the TTS search (:class:`speechnas.search.tasks.TrialTask`)."""

    vocab_size: int
    mel: MelConfig
    judge: Path | None
    target: Target | None  # None: the proxy (analytic MACs at a fixed rate)
    checkpoint: str = "last"

    @property
    def measured(self) -> bool:
        return self.target is not None

    @classmethod
    def create(cls, cfg: SearchConfig, vocab_size: int) -> TtsTrials:
        judge = Path(cfg.judge) if cfg.judge else None
        if judge is None and cfg.judge_minutes > 0:
            judge = judge_folder(cfg)
        mel = MelConfig(**TtsTrainConfig.from_dict(dict(cfg.train)).mel)
        return cls(vocab_size, mel, judge, tts_target(cfg))

    def build(self, arch: Arch) -> FastSpeech:
        return FastSpeech(decode_tts(arch), n_phonemes=self.vocab_size, n_mels=self.mel.n_mels)

    def check_builds(self, arch: Arch) -> None:
        model = self.build(arch).eval()
        with torch.no_grad():
            model.infer(torch.ones(1, 5, dtype=torch.long))

    def predicted(self, arch: Arch) -> dict[str, float]:
        from speechnas.hardware.tts import tts_latency
        from speechnas.search.objectives import PROXY_MACS_PER_SECOND

        spec = decode_tts(arch)
        params = tts_parameters(spec, self.vocab_size, self.mel.n_mels)
        frames = LATENCY_PHONEMES * FRAMES_PER_PHONEME
        macs = tts_macs(
            spec,
            phonemes=LATENCY_PHONEMES,
            frames=frames,
            n_phonemes=self.vocab_size,
            n_mels=self.mel.n_mels,
        )
        if self.target is None:  # the proxy: compute at a fixed rate, not a measurement
            ms = 1000.0 * macs / PROXY_MACS_PER_SECOND
        else:
            ms = tts_latency(
                self.build(arch),
                LATENCY_PHONEMES,
                FRAMES_PER_PHONEME,
                threads=self.target.threads,
                int8=self.target.precision == "int8",
            )
        return {
            "params": params,
            "macs": macs,
            "memory": params * 4 / 2**20,
            "latency": ms,
            "rtf": ms / (1000 * frames * self.mel.hop_length / self.mel.sample_rate),
        }

    def run_trial(
        self,
        arch: Arch,
        *,
        base: TtsTrainConfig,
        fidelity: Fidelity,
        output_dir: Path,
        seed: int,
        resume_from: str | Path | None = None,
    ) -> dict[str, Any]:
        return run_tts_trial(arch, base=base, fidelity=fidelity, output_dir=output_dir,
                             seed=seed, resume_from=resume_from, judge=self.judge)  # fmt: skip

    def trained_attrs(self, output_dir: Path) -> dict[str, Any]:
        return {}


def tts_target(cfg: SearchConfig) -> Target | None:
    """The hardware target latency is measured on (None for ``proxy``); a ValueError for one a
    TTS model cannot be measured on."""
    from speechnas.hardware import load_target
    from speechnas.hardware.tts import check_tts_target
    from speechnas.search.objectives import is_hardware_target

    if not is_hardware_target(cfg.target):
        return None
    target = load_target(cfg.target)
    check_tts_target(target)
    return target


def judge_folder(cfg: SearchConfig) -> Path | None:
    """Where :func:`ensure_judge` keeps the trained judge (None when none is there yet)."""
    found = sorted(Path(cfg.corpora_dir).glob("tts-judge-*/judge.json"))
    want = [p for p in found if json.loads(p.read_text())["recipe"]["minutes"] == cfg.judge_minutes]
    return want[0].parent / "onnx" if want else None


def run_tts_trial(
    arch: Arch,
    *,
    base: TtsTrainConfig,
    fidelity: Fidelity,
    output_dir: str | Path,
    seed: int,
    resume_from: str | Path | None = None,
    judge: Path | None = None,
    split: str = "dev",
    show_progress: bool = False,
) -> dict[str, Any]:
    """Trains ``arch`` for ``fidelity`` (continuing from ``resume_from``'s ``last`` checkpoint,
    a lower rung of the same data share) and scores it on ``split``."""
    out = Path(output_dir)
    if resume_from is not None and not (out / "last").exists():
        src = Path(resume_from) / "last"
        if src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, out / "last")
    cfg = base.replace(
        arch=arch.to_json(),
        seed=seed,
        output_dir=str(out),
        max_minutes=fidelity.minutes,
        max_steps=fidelity.steps,
        fraction=fidelity.fraction,
    )
    trainer = TtsTrainer(cfg, show_progress=show_progress)
    result = trainer.fit(resume=True)
    metrics: dict[str, Any] = {
        **{k: v for k, v in result.dev.items() if k != "utterances"},
        "params": tts_parameters(trainer.spec, len(trainer.vocab), trainer.mel.n_mels),
        "train_minutes": result.train_seconds / 60,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
    }
    if split != "dev":
        scores = trainer.evaluate(load_tts_manifest(getattr(base, split)))
        metrics.update({k: v for k, v in scores.items() if k != "utterances"})
    if judge is not None:
        utts = digit_utterances(load_tts_manifest(getattr(base, split)), JUDGE_UTTERANCES)
        if utts:
            metrics.update(intelligibility(trainer.model, utts, trainer.vocab, trainer.mel, judge))
    if split != "dev":  # the retrained model: its prosody too (pYIN is slow for every trial)
        utts = load_tts_manifest(getattr(base, split))[:PITCH_UTTERANCES]
        metrics["f0_rmse_cents"] = pitch_error(trainer.model, utts, trainer.vocab, trainer.mel)
    return metrics


def pitch_error(
    model: FastSpeech, utts: list[TtsUtterance], vocab: PhonemeVocab, mel: MelConfig
) -> float:
    """Mean log-F0 RMSE (cents) of ``utts`` spoken by ``model`` (own durations, Griffin-Lim)
    against their recordings (DTW-paired pYIN tracks; utterances voiced nowhere in common are
    left out)."""
    import soundfile as sf

    from speechnas.evaluate.tts import log_f0_rmse

    spoken = synthesize_utterances(model, utts, vocab, mel)
    errs = []
    for u, audio in zip(utts, spoken, strict=True):
        if len(audio) < mel.n_fft:  # too short to track (an untrained model's few frames)
            continue
        errs.append(log_f0_rmse(sf.read(u.audio, dtype="float32")[0], audio, mel.sample_rate))
    finite = [e for e in errs if np.isfinite(e)]
    return float(np.mean(finite)) if finite else float("nan")


# -- the retrained selection --------------------------------------------------------------------
def retrain_tts(
    arch: Arch,
    base: TtsTrainConfig,
    minutes: float,
    output_dir: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    threads: int | None = None,
    judge: Path | None = None,
    init_from: str | None = None,
    samples: int = 3,
) -> dict[str, Any]:
    """Trains ``arch`` on all the training data, scores the test split, exports ONNX (fp32 and
    int8), times the exported model and writes ``samples`` test sentences as WAV and PNG."""
    out = Path(output_dir)
    if threads is not None:
        base = base.replace(threads=threads)
    base = base.replace(init_from=init_from)
    metrics = run_tts_trial(arch, base=base, fidelity=Fidelity(minutes, 1.0, steps),
                            output_dir=out, seed=seed, judge=judge, split="test")  # fmt: skip
    metrics["checkpoint"] = str(out / "last")
    metrics.update(export_and_speak(out / "last", out, base, samples=samples))
    return metrics


def export_and_speak(
    checkpoint: Path, out: Path, base: TtsTrainConfig, *, samples: int = 3
) -> dict[str, Any]:
    """ONNX export (fp32 + int8) of a TTS checkpoint, its measured latency on one thread (fp32
    and int8, the fixed 3.2-second sentence), and ``samples`` test sentences spoken torch-free
    (WAV + mel PNG under ``out/samples``)."""
    from speechnas.export.tts import export_tts
    from speechnas.export.tts_runtime import synthesize_command
    from speechnas.hardware.tts import time_onnx_fixed

    model, meta = load_tts_model(checkpoint)
    vocab = PhonemeVocab(tuple(meta["phonemes"]))
    mel = MelConfig(**meta["mel"])
    arch = model.spec.to_arch()
    res = export_tts(model, out / "onnx", vocab=vocab, mel=mel,
                     voice=meta.get("voice") or TtsCorpusConfig().voice, arch=arch,
                     int8=True)  # fmt: skip
    seconds = LATENCY_PHONEMES * FRAMES_PER_PHONEME * mel.hop_length / mel.sample_rate
    fp32 = time_onnx_fixed(out / "onnx", LATENCY_PHONEMES, FRAMES_PER_PHONEME, int8=False)
    int8 = time_onnx_fixed(out / "onnx", LATENCY_PHONEMES, FRAMES_PER_PHONEME, int8=True)
    spoken = []
    for k, u in enumerate(load_tts_manifest(base.test)[:samples]):
        wav = out / "samples" / f"{k + 1}.wav"
        info = synthesize_command(out / "onnx", u.text, wav, plot=True)
        spoken.append({"text": u.text, "wav": str(wav), **{k2: v for k2, v in info.items()
                                                             if k2 != "text"}})  # fmt: skip
    return {
        "onnx": str(out / "onnx"),
        "onnx_parity": res.max_parity,
        "latency_measured": fp32,
        "latency_int8_measured": int8,
        "rtf_measured": fp32 / (1000 * seconds),
        "samples": spoken,
    }


def check_tts_config(cfg: SearchConfig) -> None:
    """What a TTS search cannot do, said before any work."""
    if cfg.strategy.name == "oneshot":
        raise ValueError("strategy oneshot: the one-shot supernet covers ASR spaces only; "
                         "a TTS search runs the multi-trial strategies")  # fmt: skip
    if cfg.corpus is None:
        own_tts_data(cfg)
    else:
        tts_corpus_config(cfg)
        TtsTrainConfig.from_dict(dict(cfg.train))
    tts_target(cfg)
    if cfg.judge:
        check_judge(Path(cfg.judge))


def write_samples_note(retrained: dict[str, Any]) -> list[str]:
    """Lines for the console: where the samples are."""
    return [f"  sample: {s['wav']}  ({s['text']})" for s in retrained.get("samples", [])]


__all__ = [
    "TtsSetup",
    "TtsTrials",
    "check_tts_config",
    "digit_utterances",
    "ensure_judge",
    "export_and_speak",
    "intelligibility",
    "own_tts_data",
    "pitch_error",
    "prepare_tts",
    "reference_intelligibility",
    "retrain_tts",
    "run_tts_trial",
    "synthesize_utterances",
    "tts_corpus_config",
]
