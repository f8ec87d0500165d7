"""Is one system's WER really lower than another's on the same test set? A paired bootstrap.

Two systems decoded the same utterances; the test resamples utterances with replacement (Koehn,
2004; Bisani & Ney, 2004) and asks how often the WER difference keeps its sign. Errors are
counted per utterance (substitutions + deletions + insertions from jiwer's alignment), so the
pooled WER of a resample is its summed errors over its summed reference words, exactly like the
corpus WER. Several training seeds of a system are pooled by averaging each utterance's errors
over the seeds, so the test compares the systems, not one lucky run of each.

Hand-written because neither jiwer nor scipy offers a paired, utterance-level bootstrap of a
ratio of sums; ``scipy.stats.bootstrap`` resamples statistics of samples, not this pooled ratio
(and would be slower here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer
import numpy as np

__all__ = ["BootstrapResult", "paired_bootstrap", "utterance_errors"]


def utterance_errors(refs: Sequence[str], hyps: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance: word errors (S + D + I) and reference words, as two int arrays."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("cannot score an empty set of utterances")
    out = jiwer.process_words(list(refs), list(hyps))
    errors = np.zeros(len(refs), dtype=np.int64)
    for i, chunks in enumerate(out.alignments):
        for c in chunks:
            if c.type in ("substitute", "delete"):
                errors[i] += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                errors[i] += c.hyp_end_idx - c.hyp_start_idx
    words = np.array([len(r.split()) for r in refs], dtype=np.int64)
    return errors, words


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """WER of A and B, their difference A - B with a 95% interval, and the two-sided p-value
    of "no difference"."""

    wer_a: float
    wer_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    samples: int

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_bootstrap(
    errors_a: np.ndarray | Sequence[np.ndarray],
    errors_b: np.ndarray | Sequence[np.ndarray],
    words: np.ndarray,
    *,
    samples: int = 10_000,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap of WER(A) - WER(B) over utterances.

    ``errors_a``/``errors_b``: per-utterance errors, or a sequence of such arrays (one per
    training seed, averaged per utterance); ``words``: reference words per utterance.
    """
    a = _pool(errors_a, "errors_a")
    b = _pool(errors_b, "errors_b")
    words = np.asarray(words, dtype=np.float64)
    if not (a.shape == b.shape == words.shape) or a.ndim != 1:
        raise ValueError(
            f"errors_a {a.shape}, errors_b {b.shape} and words {words.shape} must be the same "
            "utterances"
        )
    if words.sum() <= 0:
        raise ValueError("words: the references hold no words")
    if samples < 100:
        raise ValueError(f"samples: {samples} is too few for a p-value; use at least 100")
    rng = np.random.default_rng(seed)
    n = len(words)
    diff = a - b
    deltas = np.empty(samples)
    for start in range(0, samples, 1000):  # chunks bound the memory for large test sets
        k = min(1000, samples - start)
        idx = rng.integers(0, n, size=(k, n))
        deltas[start : start + k] = diff[idx].sum(1) / words[idx].sum(1)
    total = words.sum()
    delta = float(diff.sum() / total)
    # Two-sided: how often the resampled difference lands on the other side of zero.
    p = 2.0 * min(float(np.mean(deltas <= 0.0)), float(np.mean(deltas >= 0.0)))
    return BootstrapResult(
        wer_a=float(a.sum() / total),
        wer_b=float(b.sum() / total),
        delta=delta,
        ci_low=float(np.quantile(deltas, 0.025)),
        ci_high=float(np.quantile(deltas, 0.975)),
        p_value=min(1.0, p),
        samples=samples,
    )


def _pool(errors: np.ndarray | Sequence[np.ndarray], name: str) -> np.ndarray:
    arr = np.asarray(errors, dtype=np.float64)
    if arr.ndim == 2:  # seeds × utterances
        if arr.shape[0] == 0:
            raise ValueError(f"{name}: no seeds")
        return arr.mean(0)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected (utterances,) or (seeds, utterances), got {arr.shape}")
    return arr
