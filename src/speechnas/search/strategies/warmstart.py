"""Warm start: try given architectures first (e.g. another study's Pareto front), then search."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from speechnas.search.strategies.base import REGISTRY, Observation, Strategy, make_strategy
from speechnas.space import Arch


class WarmStart(Strategy):
    """Proposes the ``seeds`` not yet in the history, in order, then delegates to the strategy
    named ``inner`` (built with the same space, seed, objectives and ``inner_options``), which
    sees the seeds' observations in the history like any others. Seeds may be Arch objects or
    Arch JSON; an invalid one is a ValueError naming it."""

    name = "warmstart"
    defaults: ClassVar[dict[str, Any]] = {"seeds": (), "inner": "evolution", "inner_options": None}

    def check_options(self) -> None:
        inner = self.options["inner"]
        if inner not in REGISTRY or inner == self.name:
            allowed = sorted(n for n in REGISTRY if n != self.name)
            raise self._bad("inner", f"expected one of {allowed}")
        seeds = []
        for k, s in enumerate(self.options["seeds"]):
            try:
                seeds.append(self.space.validate(s if isinstance(s, Arch) else Arch.from_json(s)))
            except ValueError as e:
                raise ValueError(f"strategy warmstart: seeds[{k}]: {e}") from None
        self.seeds: list[Arch] = seeds
        inner_options: dict[str, Any] = dict(self.options["inner_options"] or {})
        self.inner = make_strategy(
            inner,
            self.space,
            seed=self.seed,
            n_objectives=self.n_objectives,
            scalarize=self.scalarize,
            **inner_options,
        )

    def set_feasible(self, test: Callable[[Arch], bool] | None) -> None:
        super().set_feasible(test)
        self.inner.set_feasible(test)

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        seen = self.seen(history)
        for arch in self.seeds:
            if arch.key() not in seen:
                return arch
        return self.inner.propose(history, index)


__all__ = ["WarmStart"]
