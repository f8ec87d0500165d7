"""WER prediction from an architecture's encoding and, when known, its low-fidelity learning curve.

:func:`encode` turns an architecture of a space into a fixed-length vector whatever its depth:
each numeric choice as its value (a per-layer one as the mean, minimum and maximum over its
layers), each categorical one as one column per value, an inactive choice as missing (NaN);
then its parameter count and MACs (log), the strongest single predictors of how far a model
gets in a fixed number of steps. Optional ``curve`` columns carry WERs already observed at
lower fidelities (NaN where not trained).

:class:`WerPredictor` fits gradient-boosted trees on those vectors (scikit-learn's
``HistGradientBoostingRegressor``: missing values are native to it, so inactive choices and
untrained fidelities need no imputation, and it fits a few hundred rows in well under a
second), predicting the median (absolute-error loss: a few diverged trainings at 100% WER do
not pull it). Its interval is conformal: the ``confidence`` quantile of the absolute errors of
cross-fitted predictions (5 folds) on the training rows, added on both sides. Quantile
regression trees were tried first and their 80% intervals held 30% of unseen values on a test
set of 20: with few rows, trees fit their training quantiles too closely. Why boosted
trees rather than a Gaussian process: the encoding mixes categorical and numeric columns with
missing values, which trees take as they are; a GP needs a kernel designed for that.

:func:`rank_quality` scores predictions on held-out architectures (Kendall tau, Spearman, the
share of true values inside the interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechnas.nn.cost import analytic_macs, count_parameters
from speechnas.space import Arch, SearchSpace

__all__ = ["WerPredictor", "encode", "feature_names", "rank_quality"]


def feature_names(space: SearchSpace, curve: Sequence[str] = ()) -> list[str]:
    """The column names of :func:`encode` for ``space`` (and the ``curve`` fidelities)."""
    names: list[str] = []
    for c in space.choices:
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in c.values):
            names += [f"{c.name}:{s}" for s in ("mean", "min", "max")] if c.per_layer else [c.name]
        else:
            names += [f"{c.name}={v}" for v in c.values]
    return [*names, "log_params", "log_macs", *(f"curve:{f}" for f in curve)]


def encode(
    arch: Mapping[str, Any],
    space: SearchSpace,
    *,
    vocab_size: int,
    curve: Mapping[str, float | None] | None = None,
    fidelities: Sequence[str] = (),
) -> np.ndarray:
    """``arch`` (validated by ``space``) as the row :func:`feature_names` describes; ``curve``
    maps fidelity names of ``fidelities`` to the WER observed there (missing: NaN)."""
    a = space.validate(arch)
    active = set(space.active(a))
    row: list[float] = []
    for c in space.choices:
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in c.values)
        value = a.get(c.name) if c.name in active else None
        if numeric:
            if c.per_layer:
                vals = [float(v) for v in value] if value is not None else []
                row += [float(np.mean(vals)), min(vals), max(vals)] if vals else [math.nan] * 3
            else:
                row.append(math.nan if value is None else float(value))
        else:
            per = list(value) if c.per_layer and value is not None else [value]
            for v in c.values:  # per-layer categorical: the share of layers with that value
                row.append(math.nan if value is None else sum(p == v for p in per) / len(per))
    built = Arch(a)
    row.append(math.log(count_parameters(built, vocab_size=vocab_size)))
    row.append(math.log(max(analytic_macs(built, vocab_size=vocab_size).total, 1)))
    for f in fidelities:
        v = (curve or {}).get(f)
        row.append(math.nan if v is None else float(v))
    return np.asarray(row, dtype=np.float64)


@dataclass
class Prediction:
    """Point predictions (median) and the interval of the predictor's confidence, per row."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray


class WerPredictor:
    """A median regressor of WER from :func:`encode` rows, with a conformal interval."""

    def __init__(self, *, confidence: float = 0.8, seed: int = 0) -> None:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence: expected in (0, 1), got {confidence!r}")
        self.confidence = confidence
        self.seed = seed
        self._median: Any = None
        self._width = math.nan

    def _model(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        # Small data: shallow trees, small leaves, shrinkage, no early stopping (it would hold
        # out rows the fit needs).
        return HistGradientBoostingRegressor(
            loss="absolute_error", max_iter=300, learning_rate=0.05, max_leaf_nodes=8,
            min_samples_leaf=3, l2_regularization=1.0, early_stopping=False,
            random_state=self.seed,
        )  # fmt: skip

    def fit(self, x: np.ndarray, y: Sequence[float]) -> WerPredictor:
        """Fits on rows ``x`` and WERs ``y`` (at least 4 rows)."""
        x, t = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(t):
            raise ValueError(f"fit: x {x.shape} and y ({len(t)},) do not match")
        if len(t) < 4:
            raise ValueError(f"fit: needs at least 4 observations, got {len(t)}")
        folds = np.array_split(np.random.default_rng(self.seed).permutation(len(t)), min(5, len(t)))
        residuals = np.empty(len(t))
        for held in folds:
            rest = np.setdiff1d(np.arange(len(t)), held)
            residuals[held] = np.abs(self._model().fit(x[rest], t[rest]).predict(x[held]) - t[held])
        level = min(1.0, self.confidence * (1.0 + 1.0 / len(t)))  # split-conformal correction
        self._width = float(np.quantile(residuals, level))
        self._median = self._model().fit(x, t)
        return self

    def predict(self, x: np.ndarray) -> Prediction:
        if self._median is None:
            raise ValueError("predict: the predictor is not fitted")
        med = self._median.predict(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        return Prediction(median=med, low=med - self._width, high=med + self._width)


def rank_quality(truth: Sequence[float], pred: Prediction | Sequence[float]) -> dict[str, float]:
    """Kendall tau and Spearman rho of predictions against the truth, the mean absolute error,
    and (for a :class:`Prediction`) the share of true values inside its interval."""
    from scipy.stats import kendalltau, spearmanr

    t = np.asarray(truth, dtype=np.float64)
    p = pred.median if isinstance(pred, Prediction) else np.asarray(pred, dtype=np.float64)
    out = {
        "n": float(len(t)),
        "kendall_tau": float(kendalltau(t, p).statistic),
        "spearman": float(spearmanr(t, p).statistic),
        "mae": float(np.mean(np.abs(t - p))),
    }
    if isinstance(pred, Prediction):
        out["coverage"] = float(np.mean((t >= pred.low) & (t <= pred.high)))
    return out
