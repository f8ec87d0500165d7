"""Screening proposals before training: skip what the history already shows to be dominated.

Before a proposal trains at rung 0, each error-rate objective of the search is predicted for it
by :class:`speechnas.search.wer_predictor.WerPredictor`, fitted on the completed rung-0 trials
(their architectures' encodings; the target is that objective's value), and every other
objective is what the search predicts for every architecture anyway (latency, parameters,
MACs, memory). The proposal is **screened** when even its optimistic vector, the low end of
each error rate's conformal interval at ``confidence`` with the other objectives as predicted,
is dominated by a trial already trained: that trial is at least as good on every objective and
better on one. Only the error rates are uncertain, so only they get the benefit of the doubt;
a proposal is skipped only when the predictor is confident it would lose.

A screened proposal costs no training. The pool driver records it as a PRUNED trial with its
architecture, its prediction and the trial that dominates it, and asks the strategy for the
next proposal of the same slot, with the screened architectures counted as tried (so a resumed
or distributed search screens and proposes exactly what an uninterrupted one would). Nothing
is screened before ``min_history`` completed rung-0 trials, nor the search's seeds.

Why not a library pruner (Optuna's pruners stop a trial from its intermediate values): this
decision comes before any training, from other trials' results, which is what a surrogate does
and no Optuna pruner offers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechnas.search.config import ScreenConfig
from speechnas.search.objectives import objective_kind, objective_values
from speechnas.search.wer_predictor import WerPredictor, encode
from speechnas.space import Arch, SearchSpace

__all__ = ["Screen", "Trained", "Verdict"]


@dataclass(frozen=True, slots=True)
class Trained:
    """A completed rung-0 trial as the screen sees it."""

    number: int
    arch: Arch
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a proposal was screened: its optimistic objective vector, the predicted medians of
    its error rates, and the trained trial that dominates it."""

    optimistic: dict[str, float]
    median: dict[str, float]
    dominated_by: int
    dominating: dict[str, float]
    history: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimistic": self.optimistic,
            "median": self.median,
            "dominated_by": self.dominated_by,
            "dominating": self.dominating,
            "history": self.history,
            "confidence": self.confidence,
        }

    def reason(self) -> str:
        def show(d: Mapping[str, float]) -> str:
            return ", ".join(f"{k} {v:.4g}" for k, v in d.items())

        return (
            f"screened: predicted at best {show(self.optimistic)} (median "
            f"{show(self.median)}), dominated by trial {self.dominated_by} "
            f"({show(self.dominating)})"
        )


class Screen:
    """Fitted once per proposal on the completed rung-0 trials; judges candidates."""

    def __init__(
        self,
        cfg: ScreenConfig,
        *,
        objectives: Sequence[str],
        space: SearchSpace,
        vocab_size: int,
        seed: int,
    ) -> None:
        self.cfg = cfg
        self.objectives = tuple(objectives)
        self.space = space
        self.vocab_size = vocab_size
        self.seed = seed
        self.errors = [i for i, o in enumerate(self.objectives) if objective_kind(o) == "error"]
        self._trained: list[Trained] = []
        self._models: dict[int, WerPredictor] = {}

    def _row(self, arch: Arch) -> np.ndarray:
        return encode(arch, self.space, vocab_size=self.vocab_size)

    def fit(self, trained: Sequence[Trained]) -> bool:
        """Fits on ``trained``; False (nothing will be screened) below ``min_history``."""
        self._trained = list(trained)
        self._models = {}
        if len(self._trained) < self.cfg.min_history:
            return False
        x = np.stack([self._row(t.arch) for t in self._trained])
        for i in self.errors:
            model = WerPredictor(confidence=self.cfg.confidence, seed=self.seed)
            self._models[i] = model.fit(x, [t.values[i] for t in self._trained])
        return True

    def judge(self, arch: Arch, predicted: Mapping[str, Any]) -> Verdict | None:
        """The verdict on ``arch`` (``predicted``: the search's metrics known before training),
        or None when it may train: not fitted, an objective that cannot be predicted, or no
        trained trial dominates its optimistic vector."""
        if not self._trained or len(self._models) != len(self.errors):
            return None
        optimistic: list[float] = []
        median: dict[str, float] = {}
        row = self._row(arch)
        for i, name in enumerate(self.objectives):
            if i in self._models:
                p = self._models[i].predict(row)
                optimistic.append(float(p.low[0]))
                median[name] = float(p.median[0])
            else:
                try:
                    optimistic.append(objective_values(predicted, [name])[0])
                except ValueError:
                    return None
        for t in sorted(self._trained, key=lambda t: t.number):
            if all(a <= b for a, b in zip(t.values, optimistic, strict=True)) and any(
                a < b for a, b in zip(t.values, optimistic, strict=True)
            ):
                return Verdict(
                    optimistic=dict(zip(self.objectives, optimistic, strict=True)),
                    median=median,
                    dominated_by=t.number,
                    dominating=dict(zip(self.objectives, t.values, strict=True)),
                    history=len(self._trained),
                    confidence=self.cfg.confidence,
                )
        return None
