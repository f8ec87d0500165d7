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
