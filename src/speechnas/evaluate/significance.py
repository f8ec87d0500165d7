"""Is one system's WER really lower than another's on the same test set? Two paired tests.

- :func:`mapsswe`: the matched-pairs sentence-segment word error test (Gillick & Cox, 1989; NIST
  ``sc_stats``), the test the ASR literature states "lossless" with;
- :func:`paired_bootstrap`: a paired bootstrap over utterances, which also pools training seeds.

"Not significantly worse" everywhere in speechnas means: p >= 0.05 by these tests.

Two systems decoded the same utterances; the test resamples utterances with replacement (Koehn,
2004; Bisani & Ney, 2004) and asks how often the WER difference keeps its sign. Errors are
counted per utterance (substitutions + deletions + insertions from jiwer's alignment), so the
pooled WER of a resample is its summed errors over its summed reference words, exactly like the
corpus WER. Several training seeds of a system are pooled by averaging each utterance's errors
over the seeds, so the test compares the systems, not one lucky run of each.

Hand-written because neither jiwer nor scipy offers a paired, utterance-level bootstrap of a
ratio of sums; ``scipy.stats.bootstrap`` resamples statistics of samples, not this pooled ratio
(and would be slower here). MAPSSWE is hand-written for the same reason: no maintained Python
package offers it (NIST's SCTK is a C tool that reads its own alignment files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer
import numpy as np
from scipy.stats import norm

__all__ = [
    "BootstrapResult",
    "MapsswResult",
    "compare_systems",
    "mapsswe",
    "paired_bootstrap",
    "segment_errors",
    "utterance_errors",
]


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


# ----------------------------------------------------------------------------- MAPSSWE
def _word_errors(alignment: Sequence[jiwer.AlignmentChunk], n_ref: int) -> tuple[np.ndarray, ...]:
    """Per reference word: 1 if substituted or deleted; per gap before word g (g = 0..n_ref,
    the last gap after the final word): the words inserted there."""
    wrong = np.zeros(n_ref, dtype=np.int64)
    inserted = np.zeros(n_ref + 1, dtype=np.int64)
    for c in alignment:
        if c.type in ("substitute", "delete"):
            wrong[c.ref_start_idx : c.ref_end_idx] = 1
        elif c.type == "insert":
            inserted[c.ref_start_idx] += c.hyp_end_idx - c.hyp_start_idx
    return wrong, inserted


def segment_errors(
    refs: Sequence[str],
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    *,
    min_good: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Errors of A and B per segment, as MAPSSWE segments the test set.

    A reference word is *good* when both systems recognised it and neither inserted a word next
    to it. A run of at least ``min_good`` good words (NIST's default is 2), like an utterance
    boundary, separates segments, so errors in different segments are taken as independent.
    Only segments where some system erred are returned.
    """
    if not (len(refs) == len(hyps_a) == len(hyps_b)):
        raise ValueError(f"{len(refs)} references, {len(hyps_a)} and {len(hyps_b)} hypotheses")
    if not refs:
        raise ValueError("cannot compare on an empty set of utterances")
    if min_good < 1:
        raise ValueError(f"min_good: expected an integer >= 1, got {min_good}")
    al_a = jiwer.process_words(list(refs), list(hyps_a)).alignments
    al_b = jiwer.process_words(list(refs), list(hyps_b)).alignments
    seg_a: list[int] = []
    seg_b: list[int] = []
    for ref, a, b in zip(refs, al_a, al_b, strict=True):
        n = len(ref.split())
        wa, ia = _word_errors(a, n)
        wb, ib = _word_errors(b, n)
        ins = ia + ib
        good = (wa + wb == 0) & (ins[:-1] == 0) & (ins[1:] == 0)
        # Cut at runs of >= min_good good words; what lies between is one segment.
        ea = eb = 0
        run = 0
        for g in range(n + 1):
            ea += int(ia[g])
            eb += int(ib[g])
            if g == n:
                break
            if good[g]:
                run += 1
                if run == min_good and (ea or eb):
                    seg_a.append(ea)
                    seg_b.append(eb)
                    ea = eb = 0
                continue
            run = 0
            ea += int(wa[g])
            eb += int(wb[g])
        if ea or eb:
            seg_a.append(ea)
            seg_b.append(eb)
    return np.array(seg_a, dtype=np.int64), np.array(seg_b, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class MapsswResult:
    """MAPSSWE of A against B: the segments, the mean per-segment error difference A - B, the
    normal statistic W and its two-sided p-value."""

    segments: int
    errors_a: int
    errors_b: int
    mean_difference: float
    statistic: float
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def mapsswe(
    refs: Sequence[str], hyps_a: Sequence[str], hyps_b: Sequence[str], *, min_good: int = 2
) -> MapsswResult:
    """The matched-pairs sentence-segment word error test of A against B on the same utterances.

    With Z_i = errors of A minus errors of B in segment i (:func:`segment_errors`), n segments,
    mean μ and sample variance σ², W = μ / (σ / √n) is taken as standard normal under "no
    difference" (Gillick & Cox, 1989); p = 2 (1 - Φ(|W|)). Identical systems give p = 1.
    """
    a, b = segment_errors(refs, hyps_a, hyps_b, min_good=min_good)
    z = (a - b).astype(np.float64)
    n = len(z)
    mean = float(z.mean()) if n else 0.0
    sd = float(z.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        # No spread: either no difference at all, or the same difference in every segment.
        stat = 0.0 if mean == 0.0 else float(np.sign(mean)) * np.inf
        p = 1.0 if mean == 0.0 else 0.0
    else:
        stat = mean / (sd / np.sqrt(n))
        p = float(2.0 * norm.sf(abs(stat)))
    return MapsswResult(
        segments=n,
        errors_a=int(a.sum()),
        errors_b=int(b.sum()),
        mean_difference=mean,
        statistic=float(stat),
        p_value=min(1.0, p),
    )


def compare_systems(
    refs: Sequence[str],
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    *,
    samples: int = 10_000,
    seed: int = 0,
) -> dict[str, float | int]:
    """Both tests of A against B on the same utterances, as one flat record: ``wer_a``,
    ``wer_b``, ``delta`` (A - B, fractions), the bootstrap interval and p, the MAPSSWE p."""
    ea, words = utterance_errors(refs, hyps_a)
    eb, _ = utterance_errors(refs, hyps_b)
    boot = paired_bootstrap(ea, eb, words, samples=samples, seed=seed)
    ms = mapsswe(refs, hyps_a, hyps_b)
    return {
        "wer_a": boot.wer_a,
        "wer_b": boot.wer_b,
        "delta": boot.delta,
        "ci_low": boot.ci_low,
        "ci_high": boot.ci_high,
        "p_bootstrap": boot.p_value,
        "p_mapsswe": ms.p_value,
        "mapsswe_segments": ms.segments,
        "utterances": len(refs),
    }
