"""The TTS search (``task: tts``): FastSpeech 2-style acoustic models on the same engine as the
ASR search (space, strategies, successive halving, study, selection, retraining).

Set-up (:func:`prepare_tts`): the TTS corpus (``corpus: tts-en``, synthesized once with
phoneme durations from the synthesizer) and the **judge**, an ASR model that transcribes
synthesized speech: ``judge`` names an exported one, or one is trained on the built-in digits
corpus (``judge_minutes``, once, kept under ``corpora_dir``; :mod:`speechnas.search.tts_judge`).

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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from speechnas.data.tts import (
    MelConfig,
    PhonemeVocab,
    TtsCorpusConfig,
    build_tts_corpus,
    load_tts_manifest,
)
from speechnas.nn.tts import FastSpeech, decode_tts, tts_macs, tts_parameters
from speechnas.search.trial import Fidelity
from speechnas.search.tts_judge import (
    check_judge,
    digit_utterances,
    ensure_judge,
    intelligibility,
    judge_path,
    pitch_error,
)
from speechnas.train.tts import TtsTrainConfig, TtsTrainer, load_tts_model

if TYPE_CHECKING:
    from rich.console import Console

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


@dataclass(frozen=True)
class TtsSetup:
    base: TtsTrainConfig
    vocab_size: int
    judge: Path | None


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
        return TtsSetup(base, len(PhonemeVocab.load(base.vocab)), judge)
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
    return TtsSetup(base, vocab, judge)


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
        mel = MelConfig(**TtsTrainConfig.from_dict(dict(cfg.train)).mel)
        return cls(vocab_size, mel, judge_path(cfg), tts_target(cfg))

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


__all__ = [
    "FRAMES_PER_PHONEME",
    "LATENCY_PHONEMES",
    "TtsSetup",
    "TtsTrials",
    "check_tts_config",
    "export_and_speak",
    "own_tts_data",
    "prepare_tts",
    "retrain_tts",
    "run_tts_trial",
    "tts_corpus_config",
    "tts_target",
]
