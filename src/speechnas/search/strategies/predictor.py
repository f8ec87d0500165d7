"""Predictor-guided search: propose the candidate a WER predictor, fitted on the history so far,
expects to be best.

Each proposal fits :class:`speechnas.search.wer_predictor.WerPredictor` on the completed
observations (each architecture's :func:`~speechnas.search.wer_predictor.encode` row plus the
rung it reached; the target is the strategy's scalar score, so a latency term of the search's
reward is learnt too), draws ``candidates`` fresh architectures that pass the search's
feasibility test, and proposes the one with the lowest optimistic prediction: the median minus
``kappa`` standard deviations of a bootstrap ensemble of the same trees (a lower confidence
bound, which explores where the predictor is unsure).
Predictions are made for the highest rung seen, so candidates are compared on where training
ends, not where it starts. Before ``min_history`` observations, and with probability
``explore`` afterwards, a proposal is a uniform draw.

Parameter and MAC counts in the encoding use a fixed vocabulary of 64 units: the strategy does
not know the tokenizer, and the counts only need to order architectures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from speechnas.search.strategies.base import Observation, Strategy
from speechnas.space import Arch

_VOCAB = 64


class PredictorGuided(Strategy):
    """Lower-confidence-bound choice among random candidates under a boosted-tree WER model."""

    name = "predictor"
    defaults: ClassVar[dict[str, Any]] = {"candidates": 128, "min_history": 6, "kappa": 1.0,
                                          "ensemble": 5, "explore": 0.1,
                                          "draw": "architecture"}  # fmt: skip

    def check_options(self) -> None:
        self.int_option("candidates")
        self.int_option("min_history", minimum=4)
        self.float_option("kappa", 0.0, 10.0)
        self.int_option("ensemble", minimum=2)
        self.float_option("explore", 0.0, 1.0)

    def _row(self, arch: Arch, fidelity: int) -> np.ndarray:
        from speechnas.search.wer_predictor import encode

        return np.append(encode(arch, self.space, vocab_size=_VOCAB), float(fidelity))

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        from speechnas.search.wer_predictor import WerPredictor

        rng = self.rng(index)
        done = self.completed(history)
        if len(done) < self.options["min_history"] or rng.random() < self.options["explore"]:
            return self.fresh(history, lambda _attempt: self.draw(rng))
        x = np.stack([self._row(o.arch, o.fidelity) for o in done])
        y = [self.score(o.values) for o in done if o.values is not None]
        model = WerPredictor(seed=self.int_seed(index) % 2**31, ensemble=self.options["ensemble"],
                             folds=0)  # fmt: skip
        model.fit(x, y)
        top = max(o.fidelity for o in done)
        pool: dict[str, Arch] = {}
        for _ in range(self.options["candidates"]):
            arch = self.fresh([*history, *(Observation(a, None) for a in pool.values())],
                              lambda _attempt: self.draw(rng))  # fmt: skip
            pool.setdefault(arch.key(), arch)
        archs = list(pool.values())
        pred = model.predict(np.stack([self._row(a, top) for a in archs]))
        assert pred.spread is not None
        return archs[int(np.argmin(pred.median - self.options["kappa"] * pred.spread))]


__all__ = ["PredictorGuided"]
