"""Search strategies: each proposes the next architecture from the observations so far.

    strategy = make_strategy("evolution", space, seed=0, population=10)
    arch = strategy.propose(history, index=len(history))

Optuna is imported only when an Optuna-backed strategy proposes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from speechnas.search.strategies.base import (
    REGISTRY,
    Observation,
    Scalarize,
    Strategy,
    make_strategy,
)
from speechnas.search.strategies.evolution import Evolution
from speechnas.search.strategies.optuna import NSGA2, TPE
from speechnas.search.strategies.predictor import PredictorGuided
from speechnas.search.strategies.random import RandomSearch
from speechnas.search.strategies.reinforce import Reinforce
from speechnas.search.strategies.warmstart import WarmStart

#: Every strategy by name (the classes above register themselves when defined).
STRATEGIES: dict[str, type[Strategy]] = REGISTRY
#: Strategies that rank by several objectives at once; the others minimise one scalar.
MULTI_OBJECTIVE = ("nsga2",)


def is_multi_objective(name: str, options: Mapping[str, Any]) -> bool:
    """Whether strategy ``name`` with ``options`` proposes from the whole objective vector
    (a warm start does when its inner strategy does)."""
    if name == WarmStart.name:
        name = options.get("inner", WarmStart.defaults["inner"])
    return name in MULTI_OBJECTIVE


__all__ = [
    "MULTI_OBJECTIVE",
    "NSGA2",
    "STRATEGIES",
    "TPE",
    "Evolution",
    "Observation",
    "PredictorGuided",
    "RandomSearch",
    "Reinforce",
    "Scalarize",
    "Strategy",
    "WarmStart",
    "is_multi_objective",
    "make_strategy",
]
