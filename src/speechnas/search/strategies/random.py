"""Random search: every proposal a random draw, uniform over the valid architectures or, with
option ``draw: choice``, over each choice's values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from speechnas.search.strategies.base import Observation, Strategy
from speechnas.space import Arch


class RandomSearch(Strategy):
    """Random sampling (`SearchSpace.sample`), skipping architectures already tried."""

    name = "random"
    defaults: ClassVar[dict[str, Any]] = {"draw": "architecture"}

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        rng = self.rng(index)
        return self.fresh(history, lambda _attempt: self.draw(rng))


__all__ = ["RandomSearch"]
