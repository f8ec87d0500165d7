"""Where a model's word errors are: the most frequent substitutions, insertions and deletions,
WER by utterance length, and the worst utterances, from jiwer's word alignments."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jiwer

#: Upper bounds (inclusive) of the reference-length buckets, in words; the last is open.
LENGTH_EDGES = (2, 4, 8, 16)


@dataclass(frozen=True, slots=True)
class UtteranceErrors:
    """One utterance's alignment counts."""

    index: int
    reference: str
    hypothesis: str
    words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / max(self.words, 1)


@dataclass(frozen=True, slots=True)
class ErrorAnalysis:
    """Counts over a test set: ``substitutions`` maps (reference word, hypothesis word) to how
    often one replaced the other; ``by_length`` rows are (bucket label, utterances, words,
    WER); ``utterances`` are every utterance's counts, in input order."""

    substitutions: Counter[tuple[str, str]]
    insertions: Counter[str]
    deletions: Counter[str]
    by_length: list[tuple[str, int, int, float]]
    utterances: list[UtteranceErrors] = field(repr=False)

    def worst(self, n: int = 10) -> list[UtteranceErrors]:
        """The ``n`` utterances with the most errors (then the highest WER, then input order)."""
        ranked = sorted(self.utterances, key=lambda u: (-u.errors, -u.wer, u.index))
        return [u for u in ranked[:n] if u.errors > 0]

    def to_dict(self, top: int = 15) -> dict[str, Any]:
        return {
            "substitutions": [[r, h, c] for (r, h), c in self.substitutions.most_common(top)],
            "insertions": self.insertions.most_common(top),
            "deletions": self.deletions.most_common(top),
            "by_length": [list(row) for row in self.by_length],
        }


def _bucket(words: int, edges: Sequence[int]) -> int:
    return next((i for i, e in enumerate(edges) if words <= e), len(edges))


def _labels(edges: Sequence[int]) -> list[str]:
    lows = [1, *(e + 1 for e in edges)]
    out = [
        f"{lo}-{hi} words" if lo != hi else f"{lo} words"
        for lo, hi in zip(lows[:-1], edges, strict=True)
    ]
    return [*out, f"{lows[-1]}+ words"]


def analyse_errors(
    refs: Sequence[str], hyps: Sequence[str], *, length_edges: Sequence[int] = LENGTH_EDGES
) -> ErrorAnalysis:
    """Aligns every hypothesis with its reference (jiwer) and counts the error types per word,
    and WER per reference-length bucket (``length_edges``: inclusive upper bounds in words)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("cannot analyse an empty set of utterances")
    if list(length_edges) != sorted(set(length_edges)) or min(length_edges) < 1:
        raise ValueError(f"length_edges: {list(length_edges)} must be increasing and >= 1")
    out = jiwer.process_words(list(refs), list(hyps))
    subs: Counter[tuple[str, str]] = Counter()
    ins: Counter[str] = Counter()
    dels: Counter[str] = Counter()
    rows = []
    for i, chunks in enumerate(out.alignments):
        ref_words, hyp_words = out.references[i], out.hypotheses[i]
        counts = {"substitute": 0, "delete": 0, "insert": 0}
        for c in chunks:
            if c.type == "substitute":
                pairs = zip(
                    ref_words[c.ref_start_idx : c.ref_end_idx],
                    hyp_words[c.hyp_start_idx : c.hyp_end_idx],
                    strict=True,
                )
                subs.update(pairs)
            elif c.type == "delete":
                dels.update(ref_words[c.ref_start_idx : c.ref_end_idx])
            elif c.type == "insert":
                ins.update(hyp_words[c.hyp_start_idx : c.hyp_end_idx])
            if c.type in counts:
                span = c.hyp_end_idx - c.hyp_start_idx if c.type == "insert" else None
                counts[c.type] += span if span is not None else c.ref_end_idx - c.ref_start_idx
        rows.append(
            UtteranceErrors(i, refs[i], hyps[i], len(ref_words),
                            counts["substitute"], counts["delete"], counts["insert"])
        )  # fmt: skip
    labels = _labels(length_edges)
    totals = [[0, 0, 0] for _ in labels]  # utterances, words, errors
    for u in rows:
        b = totals[_bucket(u.words, length_edges)]
        b[0], b[1], b[2] = b[0] + 1, b[1] + u.words, b[2] + u.errors
    by_length = [
        (label, n, w, e / w if w else 0.0)
        for label, (n, w, e) in zip(labels, totals, strict=True)
        if n
    ]
    return ErrorAnalysis(subs, ins, dels, by_length, rows)


__all__ = ["LENGTH_EDGES", "ErrorAnalysis", "UtteranceErrors", "analyse_errors"]
