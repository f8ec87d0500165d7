"""Intelligibility of synthesized speech, judged by an exported speech recognizer.

A TTS model's audio is transcribed by a speechnas ASR model exported as ONNX (the folder or
graph that :class:`speechnas.export.transcribe.Transcriber` reads) and the transcripts are
scored against the texts that were spoken: the recognizer's character and word error rates
stand in for listeners. Audio at another rate is resampled to the recognizer's (soxr), and
texts and hypotheses are normalised as in ASR training. No torch on this path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from speechnas.data.synth.text import normalize_text
from speechnas.evaluate.metrics import error_rates
from speechnas.export.transcribe import Transcriber

__all__ = ["JudgeResult", "judge_texts"]


@dataclass(frozen=True, slots=True)
class JudgeResult:
    """Pooled error rates of the recognizer on the synthesized audio (0 is perfect; insertions
    can take them above 1), with its transcript of each utterance and the normalised texts."""

    cer: float
    wer: float
    hypotheses: tuple[str, ...]
    references: tuple[str, ...]


def judge_texts(
    audios: Sequence[np.ndarray],
    sample_rate: int,
    texts: Sequence[str],
    judge_model: str | Path | Transcriber,
    *,
    threads: int = 1,
) -> JudgeResult:
    """Transcribes each of ``audios`` (float mono at ``sample_rate``) with ``judge_model`` (an
    exported ASR model: folder, graph, or an open :class:`Transcriber`) and scores the
    transcripts against ``texts``, one per audio."""
    if len(audios) != len(texts):
        raise ValueError(f"texts: {len(texts)} texts for {len(audios)} audios; need one each")
    if not texts:
        raise ValueError("audios: nothing to judge (no audio given)")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive rate in Hz, got {sample_rate}")
    judge = (
        judge_model
        if isinstance(judge_model, Transcriber)
        else Transcriber(judge_model, threads=threads)
    )
    rate = judge.features.sample_rate
    hyps = []
    for i, audio in enumerate(audios):
        wave = np.asarray(audio, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"audios[{i}]: expected mono samples (N,), got shape {wave.shape}")
        if sample_rate != rate:
            wave = soxr.resample(wave, sample_rate, rate, quality="HQ")
        wave = np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)
        hyps.append(normalize_text(judge.transcribe_wave(wave).text))
    refs = [normalize_text(t) for t in texts]
    rates = error_rates(refs, hyps)
    return JudgeResult(cer=rates.cer, wer=rates.wer, hypotheses=tuple(hyps), references=tuple(refs))
