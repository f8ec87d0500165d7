"""WER prediction from an architecture's encoding and, when known, its low-fidelity learning curve.

:func:`encode` turns an architecture of a space into a fixed-length vector whatever its depth:
each numeric choice as its value (a per-layer one as the mean, minimum and maximum over its
layers), each categorical one as one column per value, an inactive choice as missing (NaN);
then its parameter count and MACs (log), the strongest single predictors of how far a model
gets in a fixed number of steps. Optional ``curve`` columns carry WERs already observed at
lower fidelities (NaN where not trained).

:class:`WerPredictor` fits gradient-boosted trees on those vectors (scikit-learn's
``HistGradientBoostingRegressor``, which fits a few hundred rows in well under a second;
missing values, from inactive choices and untrained fidelities, become a value below every real
one, which a tree splits off as it would a missing value: its own missing-value support fails
on a column that is missing in every row of a fit, as in a small fold), predicting the median
(absolute-error loss: a few diverged trainings at 100% WER do not pull it). Its interval is
conformal: the ``confidence`` quantile of the absolute errors of cross-fitted predictions
(``folds``, 5 by default; 0: no interval) on the training rows, added on both sides. Quantile
regression trees were tried first and their 80% intervals held 30% of unseen values on a test
set of 20: with few rows, trees fit their training quantiles too closely. Why boosted
trees rather than a Gaussian process: the encoding mixes categorical and numeric columns with
missing values, which trees take as they are; a GP needs a kernel designed for that. With
``ensemble``, bootstrap copies of the trees give each prediction its own spread. With
``baseline`` (a column index: the learning curve's last value), the trees learn the change from
that value to the target rather than the target itself, so that a few rows cannot rank worse
than the lower fidelity does on its own (the trees start from no change); with 16 rows of the
benchmark table, trees on the plain target ranked the 1,000-step WER with Kendall tau 0.07 from
the curve to 400 steps, against 0.68 for the 400-step WER itself.

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

_MISSING = -1.0e6  # below every encoded value (choices, log counts, WERs)


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
    try:
        built = Arch(a)
        row.append(math.log(count_parameters(built, vocab_size=vocab_size)))
        row.append(math.log(max(analytic_macs(built, vocab_size=vocab_size).total, 1)))
    except (KeyError, ValueError):  # a space of something other than models: no counts
        row += [math.nan, math.nan]
    for f in fidelities:
        v = (curve or {}).get(f)
        row.append(math.nan if v is None else float(v))
    return np.asarray(row, dtype=np.float64)


@dataclass
class Prediction:
    """Point predictions (median) and the interval of the predictor's confidence, per row;
    ``spread``: the standard deviation over a bootstrap ensemble (None without one), which,
    unlike the interval, differs from row to row (larger where the data say less)."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    spread: np.ndarray | None = None


class WerPredictor:
    """A median regressor of WER from :func:`encode` rows, with a conformal interval."""

    def __init__(
        self,
        *,
        confidence: float = 0.8,
        seed: int = 0,
        ensemble: int = 0,
        folds: int = 5,
        baseline: int | None = None,
    ) -> None:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence: expected in (0, 1), got {confidence!r}")
        if ensemble < 0:
            raise ValueError(f"ensemble: expected >= 0 bootstrap models, got {ensemble!r}")
        if folds < 0 or folds == 1:
            raise ValueError(f"folds: expected 0 (no interval) or >= 2, got {folds!r}")
        self.confidence = confidence
        self.folds = folds
        self.baseline = baseline
        self.seed = seed
        self.ensemble = ensemble
        self._median: Any = None
        self._bag: list[Any] = []
        self._width = math.nan

    def _model(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        # Small data: shallow trees, small leaves, shrinkage, no early stopping (it would hold
        # out rows the fit needs).
        return HistGradientBoostingRegressor(
            loss="absolute_error", max_iter=150, learning_rate=0.1, max_leaf_nodes=8,
            min_samples_leaf=3, l2_regularization=1.0, early_stopping=False,
            random_state=self.seed,
        )  # fmt: skip

    @staticmethod
    def _rows(x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return np.where(np.isnan(x), _MISSING, x)

    def _prior(self, x: np.ndarray) -> np.ndarray:
        """The baseline column of ``x`` (zeros without one); a missing value is an error."""
        if self.baseline is None:
            return np.zeros(len(x))
        col = np.asarray(x, dtype=np.float64)[:, self.baseline]
        if np.isnan(col).any():
            raise ValueError(
                f"baseline: column {self.baseline} is missing in {int(np.isnan(col).sum())} "
                "rows; the learning curve's last value must be known for every row"
            )
        return col

    def fit(self, x: np.ndarray, y: Sequence[float]) -> WerPredictor:
        """Fits on rows ``x`` and WERs ``y`` (at least 4 rows)."""
        prior = self._prior(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        x, t = self._rows(x), np.asarray(y, dtype=np.float64) - prior
        if x.ndim != 2 or len(x) != len(t):
            raise ValueError(f"fit: x {x.shape} and y ({len(t)},) do not match")
        if len(t) < 4:
            raise ValueError(f"fit: needs at least 4 observations, got {len(t)}")
        from threadpoolctl import threadpool_limits

        # One thread: the trees are small, and the search runs this beside training workers
        # that already use every core (OpenMP threads on a busy machine cost 4x here).
        with threadpool_limits(1):
            self._width = math.nan
            if self.folds:
                order = np.random.default_rng(self.seed).permutation(len(t))
                residuals = np.empty(len(t))
                for held in np.array_split(order, min(self.folds, len(t))):
                    rest = np.setdiff1d(order, held)
                    fit = self._model().fit(x[rest], t[rest])
                    residuals[held] = np.abs(fit.predict(x[held]) - t[held])
                level = min(1.0, self.confidence * (1.0 + 1.0 / len(t)))  # split-conformal
                self._width = float(np.quantile(residuals, level))
            self._median = self._model().fit(x, t)
            rng = np.random.default_rng(self.seed + 1)
            draws = [rng.integers(0, len(t), len(t)) for _ in range(self.ensemble)]
            self._bag = [self._model().fit(x[i], t[i]) for i in draws]
        return self

    def predict(self, x: np.ndarray) -> Prediction:
        if self._median is None:
            raise ValueError("predict: the predictor is not fitted")
        from threadpoolctl import threadpool_limits

        prior = self._prior(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        x = self._rows(x)
        with threadpool_limits(1):
            med = prior + self._median.predict(x)
            spread = np.std([m.predict(x) for m in self._bag], axis=0) if self._bag else None
        return Prediction(med, med - self._width, med + self._width, spread)


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
