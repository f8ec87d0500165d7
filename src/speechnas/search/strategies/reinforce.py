"""REINFORCE over a factorised categorical policy, rebuilt from the history at every call."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from speechnas.search.encoding import flat_names, flatten, walk
from speechnas.search.strategies.base import Observation, Strategy
from speechnas.space import Arch
from speechnas.space.arch import Scalar
from speechnas.space.choice import vkey


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


class Reinforce(Strategy):
    """A policy of independent softmax logits per flat choice (one set per layer for per-layer
    choices), sampled in declaration order so only active choices are drawn.

    Each observation with values, in trial order, is one policy-gradient step with reward
    ``-scalarize(values)`` and a moving-average baseline (started at the first reward):
    ``logits += lr * (reward - baseline) * grad log p(arch)``, then
    ``baseline = decay * baseline + (1 - decay) * reward``. Failed observations give no step.
    Replaying the steps from the history makes the policy deterministic and resumable.
    """

    name = "reinforce"
    defaults: ClassVar[dict[str, Any]] = {"lr": 0.5, "baseline_decay": 0.9}

    def check_options(self) -> None:
        self.float_option("lr", 0.0, float("inf"))
        self.float_option("baseline_decay", 0.0, 1.0)

    def policy(self, history: Sequence[Observation]) -> dict[str, np.ndarray]:
        """Logits per flat name (shape (len(choices),)) after replaying ``history``."""
        names = flat_names(self.space)
        keys = {n: [vkey(v) for v in choices] for n, choices in names.items()}
        logits = {n: np.zeros(len(choices)) for n, choices in names.items()}
        lr, decay = float(self.options["lr"]), float(self.options["baseline_decay"])
        baseline: float | None = None
        for obs in history:
            if obs.values is None:
                continue
            reward = -self.score(obs.values)
            if baseline is None:
                baseline = reward
            advantage = reward - baseline
            for name, value in flatten(obs.arch, self.space).items():
                grad = -_softmax(logits[name])
                grad[keys[name].index(vkey(value))] += 1.0
                logits[name] += lr * advantage * grad
            baseline = decay * baseline + (1.0 - decay) * reward
        return logits

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        logits = self.policy(history)
        rng = self.rng(index)

        def suggest(name: str, choices: list[Scalar]) -> Scalar:
            return _draw(choices, _softmax(logits[name]), rng)

        return self.fresh(history, lambda _attempt: walk(self.space, suggest, rng=rng))


def _draw(choices: list[Scalar], probs: np.ndarray, rng: random.Random) -> Scalar:
    r = rng.random()
    for value, p in zip(choices, probs, strict=True):
        r -= p
        if r < 0:
            return value
    return choices[-1]


__all__ = ["Reinforce"]
