"""Random search: every proposal a uniform draw over the valid architectures."""

from __future__ import annotations

from collections.abc import Sequence

from speechnas.search.strategies.base import Observation, Strategy
from speechnas.space import Arch


class RandomSearch(Strategy):
    """Uniform sampling (`SearchSpace.sample`), skipping architectures already tried."""

    name = "random"

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        rng = self.rng(index)
        return self.fresh(history, lambda _attempt: self.space.sample(rng))


__all__ = ["RandomSearch"]
