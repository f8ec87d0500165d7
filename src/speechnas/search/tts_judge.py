"""Speech made by a TTS candidate, judged: the ASR judge (trained once on the built-in digits
corpus, or given), the candidate's sentences spoken with its own durations and vocoded by
Griffin-Lim, their intelligibility (the judge's CER and WER), and their pitch contours against
the recordings (log-F0 RMSE).

The vocoder is the same for every candidate, so only the acoustic model differs; the judge's
CER on the recordings and on their vocoded log-mels (:func:`reference_intelligibility`) is the
ceiling a candidate is compared with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from speechnas.data.tts import MelConfig, PhonemeVocab, griffin_lim
from speechnas.nn.tts import FastSpeech

if TYPE_CHECKING:
    from rich.console import Console

    from speechnas.data.tts import TtsUtterance
    from speechnas.search.config import SearchConfig

DIGIT_WORDS = frozenset(
    ["zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
)  # the built-in digits corpus's words: what the judge knows


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

    if (found := judge_path(cfg)) is not None:
        return found
    recipe, folder = _judge_recipe(cfg)
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


def _judge_recipe(cfg: SearchConfig) -> tuple[dict[str, Any], Path]:
    """How the judge is trained, and the folder under ``corpora_dir`` named by that recipe."""
    from speechnas.data.synth.corpus import CorpusConfig

    recipe = {"preset": "small", "frontend": "knf80", "minutes": cfg.judge_minutes, "seed": 0,
              "corpus": CorpusConfig().digest()}  # fmt: skip
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    return recipe, Path(cfg.corpora_dir) / f"tts-judge-{key}"


def judge_path(cfg: SearchConfig) -> Path | None:
    """The judge a search scores with: ``judge`` when given, else the one
    :func:`ensure_judge` trained for this recipe (None when there is none yet, or with
    ``judge_minutes: 0``)."""
    if cfg.judge:
        return Path(cfg.judge)
    if cfg.judge_minutes <= 0:
        return None
    folder = _judge_recipe(cfg)[1]
    return folder / "onnx" if (folder / "judge.json").is_file() else None


def pitch_error(
    model: FastSpeech, utts: list[TtsUtterance], vocab: PhonemeVocab, mel: MelConfig
) -> float:
    """Median over ``utts`` of the log-F0 RMSE (cents) of each spoken by ``model`` (own
    durations, Griffin-Lim) against its recording (DTW-paired pYIN tracks; utterances voiced
    nowhere in common are left out). The median, because one utterance whose pitch track fails
    (an octave jump of pYIN on vocoded speech, a DTW path gone astray) costs thousands of cents
    and would decide a mean of a hundred on its own."""
    import soundfile as sf

    from speechnas.evaluate.tts import log_f0_rmse

    spoken = synthesize_utterances(model, utts, vocab, mel)
    errs = []
    for u, audio in zip(utts, spoken, strict=True):
        if len(audio) < mel.n_fft:  # too short to track (an untrained model's few frames)
            continue
        errs.append(log_f0_rmse(sf.read(u.audio, dtype="float32")[0], audio, mel.sample_rate))
    finite = [e for e in errs if np.isfinite(e)]
    return float(np.median(finite)) if finite else float("nan")


__all__ = [
    "DIGIT_WORDS",
    "check_judge",
    "digit_utterances",
    "ensure_judge",
    "intelligibility",
    "judge_path",
    "pitch_error",
    "reference_intelligibility",
    "synthesize_utterances",
]
