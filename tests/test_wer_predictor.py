"""The WER predictor: a fixed-length encoding of any architecture of a space, and boosted trees
that rank unseen architectures (with an interval) when WER follows their features."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from speechnas.search.wer_predictor import (
    Prediction,
    WerPredictor,
    encode,
    feature_names,
    rank_quality,
)
from speechnas.space import load_space


def test_encoding_has_one_length_and_marks_inactive_choices_missing() -> None:
    space = load_space("speech-all")
    rng = random.Random(0)
    conformer = space.repair({"encoder": "conformer", "layers": 12}, rng)
    lstm = space.repair({"encoder": "lstm", "layers": 2}, rng)
    names = feature_names(space, curve=["150"])
    a = encode(conformer, space, vocab_size=30, curve={"150": 0.4}, fidelities=["150"])
    b = encode(lstm, space, vocab_size=30, fidelities=["150"])
    assert a.shape == b.shape == (len(names),)
    col = {n: i for i, n in enumerate(names)}
    assert math.isnan(b[col["heads"]]) and not math.isnan(a[col["heads"]])
    assert math.isnan(b[col["ffn_dim:mean"]]) and a[col["ffn_dim:min"]] <= a[col["ffn_dim:max"]]
    assert b[col["encoder=lstm"]] == 1.0 and b[col["encoder=conformer"]] == 0.0
    assert a[col["curve:150"]] == 0.4 and math.isnan(b[col["curve:150"]])
    assert a[col["log_params"]] > 0 and a[col["log_macs"]] > 0


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real architectures of the default search's space; a WER that falls with width and
    depth plus noise, and an earlier (lower-fidelity) WER that tracks it."""
    space = load_space("src/speechnas/configs/search-space.yaml")
    rng = random.Random(seed)
    archs = {}
    while len(archs) < n:
        a = space.sample(rng)
        archs[a.key()] = a
    gen = np.random.default_rng(seed)
    quality = np.array([a["d_model"] / 144 + a["layers"] / 6 for a in archs.values()])
    y = 0.6 - 0.2 * quality + gen.normal(0, 0.01, n)
    early = y + 0.2 + gen.normal(0, 0.01, n)
    x = np.stack([encode(a, space, vocab_size=64) for a in archs.values()])
    xc = np.stack([
        encode(a, space, vocab_size=64, curve={"150": e}, fidelities=["150"])
        for a, e in zip(archs.values(), early, strict=True)
    ])  # fmt: skip
    return x, xc, y


def test_predictor_ranks_held_out_architectures() -> None:
    x, xc, y = _data(80, 0)
    train, held = slice(0, 60), slice(60, 80)
    p = WerPredictor(confidence=0.8).fit(x[train], y[train])
    q = rank_quality(y[held], p.predict(x[held]))
    assert q["kendall_tau"] > 0.6 and q["spearman"] > 0.75
    assert q["coverage"] >= 0.5  # an 80% interval, 20 points: loose on purpose
    pc = WerPredictor().fit(xc[train], y[train]).predict(xc[held])
    assert np.all(pc.low <= pc.median) and np.all(pc.median <= pc.high)
    assert rank_quality(y[held], pc)["mae"] < 0.05
    # Deterministic from its seed.
    again = WerPredictor(confidence=0.8).fit(x[train], y[train]).predict(x[held])
    assert np.array_equal(again.median, p.predict(x[held]).median)


def test_bad_use_is_named() -> None:
    with pytest.raises(ValueError, match="confidence"):
        WerPredictor(confidence=1.0)
    with pytest.raises(ValueError, match="at least 4"):
        WerPredictor().fit(np.zeros((3, 2)), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="not fitted"):
        WerPredictor().predict(np.zeros((1, 2)))
    assert rank_quality([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])["kendall_tau"] == pytest.approx(1.0)
    p = Prediction(np.array([0.2, 0.3]), np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    assert rank_quality([0.25, 0.45], p)["coverage"] == 0.5


def test_a_baseline_column_makes_few_rows_rank_like_the_curve() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(8, 3))  # columns that say nothing about the target
    curve = np.linspace(0.9, 0.2, 8)  # the learning curve's last value
    x = np.column_stack([noise, curve])
    y = curve - 0.1  # every model improves by the same amount after it
    test = np.column_stack([rng.normal(size=(5, 3)), [0.85, 0.15, 0.5, 0.3, 0.7]])
    pred = WerPredictor(seed=0, folds=0, baseline=-1).fit(x, y).predict(test).median
    assert list(np.argsort(pred)) == [1, 3, 2, 4, 0]  # the curve's order
    assert pred == pytest.approx(test[:, -1] - 0.1, abs=0.02)
    x[2, -1] = math.nan
    with pytest.raises(ValueError, match=r"baseline: column -1 is missing in 1 rows"):
        WerPredictor(folds=0, baseline=-1).fit(x, y)
