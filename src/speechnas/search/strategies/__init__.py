"""Search strategies: each proposes the next architecture from the observations so far.

    strategy = make_strategy("evolution", space, seed=0, population=10)
    arch = strategy.propose(history, index=len(history))

Optuna is imported only when an Optuna-backed strategy proposes.
"""

from __future__ import annotations

from typing import Any

from speechnas.search.strategies.base import Observation, Scalarize, Strategy
from speechnas.search.strategies.evolution import Evolution
from speechnas.search.strategies.optuna import NSGA2, TPE
from speechnas.search.strategies.random import RandomSearch
from speechnas.search.strategies.reinforce import Reinforce
from speechnas.search.strategies.warmstart import WarmStart
from speechnas.space import SearchSpace

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RandomSearch, Evolution, TPE, NSGA2, Reinforce, WarmStart)
}


def make_strategy(name: str, space: SearchSpace, *, seed: int, **options: Any) -> Strategy:
    """The strategy ``name`` over ``space``; ``options`` are ``n_objectives``, ``scalarize`` and
    the strategy's own options (see each class's ``defaults``)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy: {name!r} is not one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](space, seed=seed, **options)


__all__ = [
    "NSGA2",
    "STRATEGIES",
    "TPE",
    "Evolution",
    "Observation",
    "RandomSearch",
    "Reinforce",
    "Scalarize",
    "Strategy",
    "WarmStart",
    "make_strategy",
]
