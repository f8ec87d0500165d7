"""The strategy interface: propose the next architecture from the observations so far.

A strategy keeps no state between calls: everything it knows comes from the history it is given,
and its randomness from a `random.Random` seeded with (strategy name, seed, trial index). So the
same (seed, history, index) always gives the same architecture, and a resumed or distributed
search proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from speechnas.space import SAMPLE_BY, Arch, SearchSpace

Scalarize = Callable[[Sequence[float]], float]


@dataclass(frozen=True, slots=True)
class Observation:
    """One finished trial as a strategy sees it.

    values: the objective values, all to be minimised; None when the trial failed (diverged,
        crashed) or was rejected (e.g. over a hardware limit).
    fidelity: the rung the values come from (higher = more training).
    """

    arch: Arch
    values: tuple[float, ...] | None
    fidelity: int = 0


def first_objective(values: Sequence[float]) -> float:
    return float(values[0])


class Strategy(ABC):
    """Base class: option checking, seeded randomness, views of the history, de-duplication.

    Subclasses set `name`, `defaults` (every option they accept with its default) and implement
    `propose`. Options arrive as keyword arguments; an unknown one is a ValueError.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    # How often a proposal that repeats an observed architecture is drawn again before accepted.
    max_retries: ClassVar[int] = 20
    # How often an architecture that fails the feasibility test is drawn again.
    max_infeasible: ClassVar[int] = 200

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a concrete strategy: registered under its name
            REGISTRY[cls.name] = cls

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        n_objectives: int = 1,
        scalarize: Scalarize | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"strategy {self.name}: seed {seed!r} must be an integer")
        if not isinstance(n_objectives, int) or n_objectives < 1:
            raise ValueError(f"strategy {self.name}: n_objectives {n_objectives!r} must be >= 1")
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"strategy {self.name}: unknown option(s) {unknown}; "
                f"allowed: {sorted(self.defaults)}"
            )
        self.space = space
        self.seed = seed
        self.n_objectives = n_objectives
        self.scalarize: Scalarize = scalarize or first_objective
        self.options: dict[str, Any] = {**self.defaults, **options}
        self.feasible: Callable[[Arch], bool] | None = None
        if "draw" in self.defaults and self.options["draw"] not in SAMPLE_BY:
            raise self._bad("draw", f"expected one of {list(SAMPLE_BY)}")
        self.check_options()

    def check_options(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Raise a ValueError naming a bad option; subclasses with options override it."""

    def _bad(self, key: str, expected: str) -> ValueError:
        return ValueError(f"strategy {self.name}: option {key}={self.options[key]!r}: {expected}")

    def int_option(self, key: str, minimum: int = 1) -> int:
        v = self.options[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise self._bad(key, f"expected an integer >= {minimum}")
        return v

    def float_option(self, key: str, low: float, high: float) -> float:
        v = self.options[key]
        if not isinstance(v, int | float) or isinstance(v, bool) or not low <= v <= high:
            raise self._bad(key, f"expected a number in [{low:g}, {high:g}]")
        return float(v)

    def draw(self, rng: random.Random) -> Arch:
        """A fresh random architecture, drawn as option ``draw`` says: "architecture", uniform
        over the space's architectures, or "choice", each choice uniform over its values
        (:meth:`SearchSpace.sample`; in a space with per-layer choices the first is almost
        always its deepest models)."""
        return self.space.sample(rng, by=self.options.get("draw", "architecture"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, {self.options})"

    @abstractmethod
    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        """The index-th architecture of the search (0-based), given every observation so far in
        trial order. Deterministic: the same (seed, history, index) gives the same Arch, so a
        resumed or distributed search proposes what an uninterrupted one would."""

    # helpers for subclasses
    def rng(self, index: int) -> random.Random:
        """The random stream of trial ``index``, independent of every other trial's."""
        return random.Random(f"{self.name}:{self.seed}:{index}")

    def int_seed(self, index: int) -> int:
        """A 32-bit seed for trial ``index``, for libraries that take an integer."""
        return self.rng(index).getrandbits(32)

    def score(self, values: Sequence[float]) -> float:
        """The single number to minimise, ``scalarize(values)``; ``values`` may hold more entries
        than ``n_objectives`` (e.g. WER and latency for a scalarized single objective)."""
        s = float(self.scalarize(values))
        if math.isnan(s):
            raise ValueError(f"strategy {self.name}: scalarize{tuple(values)} is NaN")
        return s

    def objective_values(self, values: Sequence[float]) -> list[float]:
        """The raw values for a multi-objective strategy; there must be ``n_objectives``."""
        if len(values) != self.n_objectives:
            raise ValueError(
                f"strategy {self.name}: {len(values)} objective values {tuple(values)} for "
                f"n_objectives={self.n_objectives}"
            )
        return [float(v) for v in values]

    @staticmethod
    def seen(history: Sequence[Observation]) -> set[str]:
        """Keys of every architecture tried so far, failed ones included."""
        return {obs.arch.key() for obs in history}

    @staticmethod
    def completed(history: Sequence[Observation]) -> list[Observation]:
        """One observation per architecture that has values: the one at its highest fidelity
        (the latest among equals), ordered by when that observation arrived."""
        best: dict[str, Observation] = {}
        for obs in history:
            if obs.values is None:
                continue
            key = obs.arch.key()
            old = best.get(key)
            if old is None or obs.fidelity >= old.fidelity:
                best.pop(key, None)
                best[key] = obs
        return list(best.values())

    def set_feasible(self, test: Callable[[Arch], bool] | None) -> None:
        """A cheap test of a drawn architecture (the search's constraints on predicted
        latency, size and MACs): :meth:`fresh` draws again while it fails, so proposals are not
        spent on architectures that would be rejected before training."""
        self.feasible = test

    def fresh(self, history: Sequence[Observation], draw: Callable[[int], Arch]) -> Arch:
        """``draw(attempt)`` until it gives an architecture not in ``history`` (at most
        `max_retries` redraws, or none once the space is exhausted) that passes the feasibility
        test (at most `max_infeasible` redraws); the last draw is accepted when either runs
        out."""
        seen = self.seen(history)
        exhausted = len(seen) >= self.space.count()
        test = self.feasible
        arch = draw(0)
        attempt = repeats = 0
        while attempt < self.max_infeasible:
            repeat = not exhausted and arch.key() in seen and repeats < self.max_retries
            if not repeat and (test is None or test(arch)):
                break
            repeats += repeat
            attempt += 1
            arch = draw(attempt)
        return arch


#: Strategy name → class: every subclass that sets ``name`` registers itself when defined.
REGISTRY: dict[str, type[Strategy]] = {}


def make_strategy(name: str, space: SearchSpace, *, seed: int, **options: Any) -> Strategy:
    """The strategy ``name`` over ``space``; ``options`` are ``n_objectives``, ``scalarize`` and
    the strategy's own options (see each class's ``defaults``)."""
    if name not in REGISTRY:
        raise ValueError(f"strategy: {name!r} is not one of {sorted(REGISTRY)}")
    return REGISTRY[name](space, seed=seed, **options)


__all__ = ["REGISTRY", "Observation", "Scalarize", "Strategy", "first_objective", "make_strategy"]
