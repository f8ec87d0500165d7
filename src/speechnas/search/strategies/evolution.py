"""Regularized (aging) evolution: tournament selection from the youngest observations."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, ClassVar

from speechnas.search.strategies.base import Observation, Strategy
from speechnas.space import Arch


class Evolution(Strategy):
    """Aging evolution over the last ``population`` observations that have values.

    The first ``population`` proposals are uniform draws. After that each proposal mutates the
    winner of a tournament among ``sample`` random members of the population (the lowest
    scalarized value wins); with probability ``crossover_prob`` two tournament winners are crossed
    over first and the child mutated. Older observations leave the population as newer arrive,
    which is what regularizes the search. An architecture observed at several fidelities counts
    once, with the values of its highest fidelity.
    """

    name = "evolution"
    defaults: ClassVar[dict[str, Any]] = {
        "population": 8, "sample": 3, "crossover_prob": 0.2, "draw": "architecture",
    }  # fmt: skip

    def check_options(self) -> None:
        self.int_option("population")
        self.int_option("sample")
        self.float_option("crossover_prob", 0.0, 1.0)

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        rng = self.rng(index)
        size = self.options["population"]
        population = self.completed(history)[-size:]
        if index < size or not population:
            return self.fresh(history, lambda _attempt: self.draw(rng))
        scored = [(self.score(obs.values), obs.arch) for obs in population if obs.values]
        return self.fresh(history, lambda _attempt: self._child(scored, rng))

    def _child(self, scored: list[tuple[float, Arch]], rng: random.Random) -> Arch:
        parent = self._tournament(scored, rng)
        if rng.random() < self.options["crossover_prob"] and len(scored) > 1:
            parent = self.space.crossover(parent, self._tournament(scored, rng), rng)
        return self.space.mutate(parent, rng)

    def _tournament(self, scored: list[tuple[float, Arch]], rng: random.Random) -> Arch:
        entrants = rng.sample(range(len(scored)), min(self.options["sample"], len(scored)))
        best = min(entrants, key=lambda i: (scored[i][0], i))
        return scored[best][1]


__all__ = ["Evolution"]
