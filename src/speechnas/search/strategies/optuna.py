"""TPE and NSGA-II through Optuna's samplers, rebuilt from the history at every proposal.

Each call makes a fresh in-memory study, adds one finished trial per observed architecture
(`optuna.trial.create_trial` with the flat parameters of `speechnas.search.encoding`), asks for a
trial and walks the space with ``suggest_categorical``, so conditional and per-layer choices are
suggested only when active. The sampler is seeded from (strategy, seed, index); nothing survives
between calls, so a resumed search proposes what an uninterrupted one would.

NSGA-II needs each replayed trial's generation, which only Optuna's private generation key in the
trial's system attributes conveys. Every NSGA-II proposal therefore checks that the sampler put
it in the generation the replay implies, and raises `ReplayError` otherwise, rather than letting
an Optuna that renamed or dropped the key turn NSGA-II into random search without a word.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from speechnas.search.encoding import distributions, flatten, walk
from speechnas.search.strategies.base import Observation, Strategy
from speechnas.space import Arch

if TYPE_CHECKING:
    import optuna


class ReplayError(RuntimeError):
    """Optuna did not take the replayed history as this module expects (an Optuna change)."""


def generation_key() -> str:
    """The trial system attribute in which Optuna's NSGAIISampler keeps a trial's generation."""
    import optuna

    get = getattr(optuna.samplers.NSGAIISampler, "_get_generation_key", None)
    if get is None:
        raise ReplayError(
            f"nsga2: Optuna {optuna.__version__} has no NSGAIISampler._get_generation_key, so the "
            "history cannot be replayed in generations; use an Optuna release that has it "
            "(see pyproject.toml) or update speechnas.search.strategies.optuna"
        )
    return str(get())


def _quiet_study(sampler: optuna.samplers.BaseSampler, n_objectives: int) -> optuna.Study:
    """A fresh in-memory study, without the log line the storage writes for every new study (one
    per proposal here); only that storage's logger is silenced, and only meanwhile."""
    import optuna

    log = logging.getLogger(optuna.storages.InMemoryStorage.__module__)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        return optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)
    finally:
        log.setLevel(level)


class _OptunaStrategy(Strategy):
    """Shared machinery; subclasses choose the sampler and whether values are scalarized."""

    def multi_objective(self) -> bool:
        return self.n_objectives > 1

    def sampler(self, index: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def trial_attrs(self, position: int) -> dict[str, Any]:
        """System attributes of the ``position``-th (0-based) completed trial of the history."""
        return {}

    def check_replay(self, study: optuna.Study, trial: optuna.Trial, completed: int) -> None:
        """Raise `ReplayError` if the sampler did not take the ``completed`` replayed trials as
        expected when it sampled ``trial``."""

    def propose(self, history: Sequence[Observation], index: int) -> Arch:
        import optuna

        multi = self.multi_objective()
        study = _quiet_study(self.sampler(index), self.n_objectives if multi else 1)
        dists = distributions(self.space)
        trials = []
        for k, obs in enumerate(self.completed(history)):
            assert obs.values is not None
            params = flatten(obs.arch, self.space)
            values = self.objective_values(obs.values) if multi else [self.score(obs.values)]
            trials.append(
                optuna.trial.create_trial(
                    params=params,
                    distributions={n: dists[n] for n in params},
                    values=values,
                    system_attrs=self.trial_attrs(k),
                )
            )
        study.add_trials(trials)
        rng = self.rng(index)

        def draw(_attempt: int) -> Arch:
            # A repeat stays a running trial, which TPE's constant liar steers away from.
            trial = study.ask()
            arch = walk(self.space, trial.suggest_categorical, rng=rng)
            self.check_replay(study, trial, len(trials))
            return arch

        return self.fresh(history, draw)


class TPE(_OptunaStrategy):
    """Optuna's TPESampler: on the scalarized value with one objective, on the raw values (MOTPE)
    with several. Options are passed to the sampler; the defaults are Optuna's."""

    name = "tpe"
    defaults: ClassVar[dict[str, Any]] = {
        "n_startup_trials": 10,
        "n_ei_candidates": 24,
        "multivariate": False,
    }

    def check_options(self) -> None:
        self.int_option("n_startup_trials", 0)
        self.int_option("n_ei_candidates")
        if not isinstance(self.options["multivariate"], bool):
            raise self._bad("multivariate", "expected true or false")

    def sampler(self, index: int) -> optuna.samplers.BaseSampler:
        import optuna

        o = self.options
        return optuna.samplers.TPESampler(
            seed=self.int_seed(index),
            n_startup_trials=o["n_startup_trials"],
            n_ei_candidates=o["n_ei_candidates"],
            multivariate=o["multivariate"],
            group=o["multivariate"],  # conditional spaces need grouping when multivariate
        )


class NSGA2(_OptunaStrategy):
    """Optuna's NSGAIISampler on the raw objective values (with one objective: the scalarized
    value, as the single-objective strategies).

    NSGA-II proceeds in generations of ``population_size`` completed trials; since the study is
    rebuilt from the history, each replayed trial gets the generation an uninterrupted run would
    have given it (its position among completed trials // population_size).
    """

    name = "nsga2"
    defaults: ClassVar[dict[str, Any]] = {
        "population_size": 8,
        "mutation_prob": None,
        "crossover_prob": 0.9,
    }

    def check_options(self) -> None:
        self.int_option("population_size", 2)
        if self.options["mutation_prob"] is not None:
            self.float_option("mutation_prob", 0.0, 1.0)
        self.float_option("crossover_prob", 0.0, 1.0)

    def sampler(self, index: int) -> optuna.samplers.BaseSampler:
        import optuna

        o = self.options
        return optuna.samplers.NSGAIISampler(
            seed=self.int_seed(index),
            population_size=o["population_size"],
            mutation_prob=o["mutation_prob"],
            crossover_prob=o["crossover_prob"],
        )

    def trial_attrs(self, position: int) -> dict[str, Any]:
        # The generation key is how the sampler itself tags trials; no public API sets it.
        return {generation_key(): position // self.options["population_size"]}

    def check_replay(self, study: optuna.Study, trial: optuna.Trial, completed: int) -> None:
        """The proposal must be in generation ``completed // population_size``: from the second
        generation on, bred from the replayed population rather than drawn at random."""
        import optuna

        want = completed // self.options["population_size"]
        frozen = study.get_trials(deepcopy=False)[trial.number]
        try:
            got = study.sampler.get_trial_generation(study, frozen)  # type: ignore[attr-defined]
        except AttributeError as err:
            raise ReplayError(
                f"nsga2: Optuna {optuna.__version__}'s NSGAIISampler has no generations as "
                "speechnas.search.strategies.optuna expects"
            ) from err
        if got != want:
            raise ReplayError(
                f"nsga2: Optuna {optuna.__version__} put the proposal after {completed} replayed "
                f"trials in generation {got}, not {want}: it ignores the generations under "
                f"{generation_key()!r}, and NSGA-II would be random search; use an Optuna "
                "release that keeps that key or update speechnas.search.strategies.optuna"
            )


__all__ = ["NSGA2", "TPE", "ReplayError", "generation_key"]
