"""The driver contract: how a search fills its study with trials.

The runner (:func:`speechnas.search.runner.run_search`) does everything around a driver: it
checks the constraints against the driver's space, builds the corpus and the training config,
opens (or resumes) the study, shows progress, and afterwards writes the front, selects and
retrains. A driver only decides which architectures become trials and how they are evaluated.

An implementer subclasses :class:`Driver` in a module of its own in this package (the
registry finds it there) and provides:

``name``
    its registry name (class attribute).
``strategies``
    the values of ``strategy.name`` it runs (class attribute); no two drivers share one.
``setup()``
    checks the strategy options and the space, cheaply, and returns the space whose
    architectures become the study's trials. It runs before any file, corpus, study or
    training exists, so a bad option costs nothing; it writes nothing.
``run(ss, base, ...)``
    fills the study: every trial opened with :func:`speechnas.search.record.open_trial` and
    ended with :func:`~speechnas.search.record.record_trial` (or ``record_metrics``,
    ``fail_trial``, ``guarded``), so every trial carries the same attributes. It may find the
    study resumed: finished trials are kept and not run again; interrupted ones (FAIL with status
    "interrupted") are to be run again.

and, where the defaults do not fit, the hooks the runner asks:

``trial_budget()``
    the number of trials progress counts towards (default ``n_trials``; None: unknown).
``header()``
    what the start line says about how it runs (default nothing).
``retrain_config(base)``
    the training config the selection is retrained with (default ``base``).
``init_from(selected)``
    the checkpoint the retraining of ``selected`` starts from (default None: from scratch).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

    from speechnas.search.config import SearchConfig
    from speechnas.search.progress import Progress
    from speechnas.search.select import Result
    from speechnas.search.study import SearchStudy
    from speechnas.space import SearchSpace
    from speechnas.train.config import TrainConfig

#: Driver name → class: every subclass that sets ``name`` registers itself when defined.
REGISTRY: dict[str, type[Driver]] = {}


class Driver(ABC):
    """One way of running a search (see the module docstring for the contract)."""

    name: ClassVar[str]
    strategies: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # an abstract intermediate class
        taken = {s: d.name for d in REGISTRY.values() if d.name != cls.name for s in d.strategies}
        shared = sorted(set(cls.strategies) & set(taken))
        if shared:
            raise TypeError(f"driver {cls.name}: strategies {shared} belong to another driver")
        REGISTRY[cls.name] = cls

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def setup(self) -> SearchSpace:
        """Checks the options and the space before any work; returns the space searched."""

    @abstractmethod
    def run(
        self,
        ss: SearchStudy,
        base: TrainConfig,
        *,
        vocab_size: int,
        progress: Progress,
        deadline: float | None,
        console: Console,
    ) -> None:
        """Fills ``ss`` with trials trained from ``base`` (which scores the search test set
        only); ``vocab_size`` is the tokenizer's, ``deadline`` a ``time.time()`` after which no
        new trial starts; ``progress.update(ss)`` shows the trials finished so far."""

    def trial_budget(self) -> int | None:
        return self.cfg.n_trials

    def header(self) -> str:
        return ""

    def budgets_in_minutes(self) -> bool:
        """Whether some training of this search stops on the clock (a rung without ``steps``),
        so that other processes on the CPU change what it trains."""
        return any(r.steps is None for r in self.cfg.fidelity.rungs)

    def retrain_config(self, base: TrainConfig) -> TrainConfig:
        return base

    def init_from(self, selected: Result) -> str | None:
        return None


_Options = TypeVar("_Options")


def parse_options(cls: type[_Options], options: Mapping[str, Any], strategy: str) -> _Options:
    """``strategy.options`` as the options dataclass ``cls`` of a driver: unknown keys named
    with the allowed ones, and whatever the dataclass rejects under ``strategy.options``."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"strategy.options: unknown {unknown} for {strategy}; allowed: {names}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"strategy.options: {e}") from None


def trained_weights(selected: Result) -> str | None:
    """The ``best`` checkpoint of the selected trial's folder, where there is one: for drivers
    whose retraining continues from a trial's weights rather than from scratch."""
    from pathlib import Path

    if not selected.output_dir:
        return None
    best = Path(selected.output_dir) / "best"
    return str(best) if best.is_dir() else None


__all__ = ["REGISTRY", "Driver", "parse_options", "trained_weights"]
