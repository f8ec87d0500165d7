"""The paired bootstrap: per-utterance errors agree with the corpus WER, and the test separates
a real difference from noise."""

import jiwer
import numpy as np
import pytest

from speechnas.evaluate.significance import paired_bootstrap, utterance_errors

REFS = ["one two three", "four five", "six seven eight nine", "zero", "two two"]
HYPS = ["one too three", "four", "six seven eight nine ten", "", "two two"]


def test_utterance_errors_add_up_to_the_corpus_wer() -> None:
    errors, words = utterance_errors(REFS, HYPS)
    assert errors.tolist() == [1, 1, 1, 1, 0] and words.tolist() == [3, 2, 4, 1, 2]
    assert errors.sum() / words.sum() == pytest.approx(jiwer.wer(REFS, HYPS))


def _systems(n: int, p_a: float, p_b: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    words = rng.integers(3, 8, size=n)
    return rng.binomial(words, p_a), rng.binomial(words, p_b), words


def test_a_real_difference_is_significant() -> None:
    a, b, words = _systems(400, 0.05, 0.10, seed=1)
    r = paired_bootstrap(a, b, words, samples=2000, seed=0)
    assert r.delta < 0 and r.ci_high < 0 and r.p_value < 0.01 and r.significant()
    assert r.wer_a == pytest.approx(a.sum() / words.sum())


def test_noise_is_not_significant_and_identical_systems_give_p_one() -> None:
    a, b, words = _systems(400, 0.08, 0.08, seed=2)
    r = paired_bootstrap(a, b, words, samples=2000, seed=0)
    assert r.ci_low < 0 < r.ci_high and r.p_value > 0.05
    same = paired_bootstrap(a, a, words, samples=500)
    assert same.delta == 0 and same.p_value == 1.0


def test_seeds_are_pooled_per_utterance_and_results_are_reproducible() -> None:
    a1, b, words = _systems(200, 0.05, 0.09, seed=3)
    a2, _, _ = _systems(200, 0.05, 0.09, seed=4)
    pooled = paired_bootstrap([a1, a2], b, words, samples=1000, seed=5)
    assert pooled.wer_a == pytest.approx((a1 + a2).sum() / 2 / words.sum())
    assert pooled == paired_bootstrap([a1, a2], b, words, samples=1000, seed=5)
    with pytest.raises(ValueError, match="must be the same utterances"):
        paired_bootstrap(a1, b[:-1], words)


# A hand-worked MAPSSWE example. Segments (errors of A, errors of B):
# 1. "a b c d e f": A substitutes b; "c d" are two good words, so the segment is (1, 0).
# 2. "one two three": B deletes "two" and inserts "four" at the end: (0, 2).
# 3. "x y": both err once, no good words between: (1, 1).
# 4. "p q r s t u v": A substitutes q and v, separated by four good words: (1, 0) and (1, 0).
# Z = [1, -2, 0, 1, 1]: mean 0.2, sample sd sqrt(1.7), W = 0.2 / (sqrt(1.7) / sqrt(5)).
MS_REFS = ["a b c d e f", "one two three", "x y", "p q r s t u v"]
MS_A = ["a x c d e f", "one two three", "x z", "p Q r s t u V"]
MS_B = ["a b c d e f", "one three four", "w y", "p q r s t u v"]


def test_mapsswe_matches_the_hand_computed_segments_and_p_value() -> None:
    from scipy.stats import norm

    from speechnas.evaluate.significance import mapsswe, segment_errors

    a, b = segment_errors(MS_REFS, MS_A, MS_B)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [
        (1, 0),
        (0, 2),
        (1, 1),
        (1, 0),
        (1, 0),
    ]
    r = mapsswe(MS_REFS, MS_A, MS_B)
    w = 0.2 / (np.sqrt(1.7) / np.sqrt(5))
    assert r.segments == 5 and r.errors_a == 4 and r.errors_b == 3
    assert r.statistic == pytest.approx(w) and r.p_value == pytest.approx(2 * norm.sf(w))
    assert not r.significant()
    # four good words do not separate segments when five are required
    a3, _ = segment_errors(MS_REFS, MS_A, MS_B, min_good=5)
    assert a3.tolist() == [1, 0, 1, 2]


def test_mapsswe_separates_a_real_difference_and_gives_p_one_for_identical_systems() -> None:
    from speechnas.evaluate.significance import mapsswe

    rng = np.random.default_rng(0)
    refs = [" ".join(rng.choice(list("abcdefgh"), size=6)) for _ in range(300)]

    def corrupt(p: float, seed: int) -> list[str]:
        g = np.random.default_rng(seed)
        return [" ".join(w if g.random() > p else "z" for w in r.split()) for r in refs]

    good, bad = corrupt(0.03, 1), corrupt(0.10, 2)
    r = mapsswe(refs, good, bad)
    assert r.mean_difference < 0 and r.p_value < 0.001 and r.significant()
    same = mapsswe(refs, good, good)
    assert same.p_value == 1.0 and same.segments > 0
    with pytest.raises(ValueError, match="min_good"):
        mapsswe(refs, good, bad, min_good=0)


def test_bootstrap_matches_the_enumerated_two_utterance_case() -> None:
    # Two one-word utterances, A wrong on the first only: of the four equally likely
    # resamples, one gives delta 1, two give 0.5 and one gives 0, so P(delta <= 0) = 1/4
    # and the two-sided p is 2 * 1/4 = 0.5.
    r = paired_bootstrap(np.array([1, 0]), np.array([0, 0]), np.array([1, 1]), samples=20000)
    assert r.delta == 0.5 and r.p_value == pytest.approx(0.5, abs=0.02)
