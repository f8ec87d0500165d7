"""Word and character error rates (jiwer), pooled over a corpus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer


@dataclass(frozen=True, slots=True)
class ErrorRates:
    wer: float
    cer: float
    words: int
    utterances: int
    sentence_errors: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRates:
    """Corpus-level WER and CER (errors summed over utterances / reference length)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("cannot score an empty set of utterances")
    words = jiwer.process_words(list(refs), list(hyps))
    chars = jiwer.process_characters(list(refs), list(hyps))
    n_words = sum(len(r.split()) for r in refs)
    return ErrorRates(
        wer=words.wer,
        cer=chars.cer,
        words=n_words,
        utterances=len(refs),
        sentence_errors=sum(r.split() != h.split() for r, h in zip(refs, hyps, strict=True)),
    )
