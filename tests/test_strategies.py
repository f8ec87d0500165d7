from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from speechnas.search.encoding import distributions, flatten, unflatten, walk
from speechnas.search.strategies import STRATEGIES, Observation, Strategy, make_strategy
from speechnas.space import Arch, SearchSpace, load_space, space_from_yaml


def _warm_seeds(space: SearchSpace) -> dict[str, Any]:
    rng = random.Random(99)
    return {"seeds": [space.sample(rng).to_json() for _ in range(3)]}


# The table: every registered strategy, with the options it is tested under.
CASES: dict[str, Callable[[SearchSpace], dict[str, Any]]] = {
    "random": lambda space: {},
    "evolution": lambda space: {"population": 6},
    "tpe": lambda space: {"n_startup_trials": 5},
    "nsga2": lambda space: {"population_size": 4},
    "reinforce": lambda space: {},
    "warmstart": _warm_seeds,
    "predictor": lambda space: {"candidates": 8, "min_history": 4, "ensemble": 2},
}
NAMES = sorted(CASES)
MODEL_BASED = ["evolution", "tpe", "nsga2"]

SYNTHETIC = space_from_yaml(
    """
name: synthetic
choices:
  - {name: a, values: [0, 1, 2, 3, 4]}
  - {name: b, values: [0, 1, 2, 3, 4]}
  - {name: c, values: [0, 1, 2, 3, 4]}
  - {name: d, values: [0, 1, 2, 3, 4]}
  - {name: n, values: [1, 2]}
  - {name: w, values: [0, 1, 2, 3], per_layer: n}
  - {name: e, values: [0, 1, 2], when: {a: [3, 4]}}
"""
)
TARGET = {"a": 3, "b": 1, "c": 4, "d": 0}


def cost(arch: Arch) -> float:
    """A deterministic objective with its optimum 0 at a=3, b=1, c=4, d=0, n=2, w=(2, 2), e=1."""
    s = sum((int(arch[k]) - t) ** 2 for k, t in TARGET.items())  # type: ignore[call-overload]
    s += sum((int(x) - 2) ** 2 for x in arch["w"]) + 2 * (2 - int(arch["n"]))  # type: ignore[union-attr]
    s += (int(arch["e"]) - 1) ** 2 if "e" in arch else 1  # type: ignore[call-overload]
    return float(s)


def strategy(name: str, space: SearchSpace, seed: int, **kw: Any) -> Strategy:
    return make_strategy(name, space, seed=seed, **CASES[name](space), **kw)


def two_objectives(arch: Arch) -> tuple[float, float]:
    """A stand-in for (error, cost) that any space yields: key length and a hash digit."""
    return (float(len(arch.key()) % 17), float(int(arch.hash()[:2], 16)))


def run(
    s: Strategy,
    space: SearchSpace,
    n: int,
    values: Callable[[Arch], tuple[float, ...]],
    *,
    fail_every: int | None = 5,
) -> list[Observation]:
    """``n`` sequential trials, each proposal validated; trials 3, 3 + fail_every, … fail."""
    history: list[Observation] = []
    for i in range(n):
        arch = s.propose(history, i)
        space.validate(arch)
        failed = fail_every is not None and i % fail_every == 3
        history.append(Observation(arch, None if failed else values(arch)))
    return history


def test_the_table_covers_every_registered_strategy() -> None:
    assert set(CASES) == set(STRATEGIES)
    with pytest.raises(ValueError, match="not one of"):
        make_strategy("annealing", SYNTHETIC, seed=0)
    with pytest.raises(ValueError, match="unknown option"):
        make_strategy("evolution", SYNTHETIC, seed=0, populaton=4)
    with pytest.raises(ValueError, match="population=0"):
        make_strategy("evolution", SYNTHETIC, seed=0, population=0)


@pytest.mark.parametrize("name", ["random", "evolution", "predictor"])
def test_draw_choice_spreads_random_proposals_over_the_families(name: str) -> None:
    space = load_space("speech-all")
    with pytest.raises(ValueError, match=r"option draw='layer': expected one of"):
        make_strategy(name, space, seed=0, draw="layer")
    families = {}
    for draw in ("architecture", "choice"):
        s = make_strategy(name, space, seed=0, draw=draw)
        families[draw] = {s.propose([], i)["encoder"] for i in range(24)}  # all random draws
    assert families["architecture"] == {"conformer"}  # the family with the most architectures
    assert len(families["choice"]) >= 4


@pytest.mark.parametrize("space_name", ["conformer-ctc", "speech-all"])
@pytest.mark.parametrize("name", NAMES)
def test_valid_new_and_resumable(name: str, space_name: str) -> None:
    space = load_space(space_name)
    multi = space_name == "speech-all"  # two raw objectives there, one elsewhere
    kw: dict[str, Any] = (
        {"n_objectives": 2, "scalarize": lambda v: v[0] + 0.01 * v[1]} if multi else {}
    )
    values = two_objectives if multi else (lambda a: (two_objectives(a)[0],))
    history = run(strategy(name, space, 3, **kw), space, 14, values)
    keys = [obs.arch.key() for obs in history]
    assert len(set(keys)) >= len(keys) - 1
    # A fresh instance given any prefix of the history proposes what the run proposed.
    again = strategy(name, space, 3, **kw)
    for i in (0, 5, 13):
        assert again.propose(history[:i], i) == history[i].arch
    # Another seed proposes something else somewhere.
    other = run(strategy(name, space, 4, **kw), space, 8, values)
    assert [o.arch for o in other] != [o.arch for o in history[:8]]


@pytest.mark.parametrize("name", NAMES)
def test_only_failures_so_far(name: str) -> None:
    space = load_space("conformer-ctc")
    rng = random.Random(5)
    failed = [Observation(space.sample(rng), None) for _ in range(10)]
    s = strategy(name, space, 0)
    arch = s.propose(failed, 10)
    space.validate(arch)
    assert arch not in {o.arch for o in failed}
    assert s.propose(failed, 10) == arch


def test_warmstart_tries_its_seeds_first_then_the_inner_strategy() -> None:
    opts = _warm_seeds(SYNTHETIC)
    s = make_strategy("warmstart", SYNTHETIC, seed=0, inner="tpe", **opts)
    history = run(s, SYNTHETIC, 5, lambda a: (cost(a),))
    assert [o.arch.to_json() for o in history[:3]] == opts["seeds"]
    inner = make_strategy("tpe", SYNTHETIC, seed=0)
    assert history[3].arch == inner.propose(history[:3], 3)
    with pytest.raises(ValueError, match=r"seeds\[0\]"):
        make_strategy("warmstart", SYNTHETIC, seed=0, seeds=[{"a": 9}])


def test_reinforce_moves_probability_towards_rewarded_values() -> None:
    s = make_strategy("reinforce", SYNTHETIC, seed=0)
    rng = random.Random(1)
    history = [Observation(a, (cost(a),)) for a in (SYNTHETIC.sample(rng) for _ in range(40))]
    logits = s.policy(history)
    # a=3 is the best value of `a`, a=0 the worst (cost (a-3)^2)
    assert logits["a"][3] > logits["a"][0]


def test_flat_encoding_round_trips_with_conditions_and_layers() -> None:
    space = load_space("speech-all")
    rng = random.Random(2)
    dists = distributions(space)
    for _ in range(30):
        arch = space.sample(rng)
        flat = flatten(arch, space)
        assert set(flat) <= set(dists)
        assert all(v in dists[k].choices for k, v in flat.items())
        assert unflatten(flat, space) == arch
        assert walk(space, lambda name, _choices, flat=flat: flat[name]) == arch
    assert "ffn_dim.11" in dists and "ffn_dim.12" not in dists  # at most 12 layers
    arch = space.sample(rng)
    with pytest.raises(ValueError, match="missing"):
        unflatten({k: v for k, v in flatten(arch, space).items() if k != "encoder"}, space)


def _mean_best(name: str, budget: int, seeds: Sequence[int]) -> float:
    """Mean over seeds of the best cost found in ``budget`` trials, default options."""
    best = []
    for seed in seeds:
        s = make_strategy(name, SYNTHETIC, seed=seed)
        history = run(s, SYNTHETIC, budget, lambda a: (cost(a),), fail_every=None)
        best.append(min(o.values[0] for o in history if o.values is not None))
    return statistics.mean(best)


def test_model_based_strategies_beat_random_on_a_synthetic_objective() -> None:
    # Six generations of NSGA-II's default population of 8; five fixed seeds.
    budget, seeds = 48, range(5)
    final = {name: _mean_best(name, budget, seeds) for name in ["random", *MODEL_BASED]}
    for name in MODEL_BASED:
        assert final[name] < final["random"], final


# --------------------------------------------------------------------------- NSGA-II replay


def test_optuna_nsga2_tags_its_trials_with_the_generation_key_the_replay_uses() -> None:
    """A plain Optuna NSGA-II study for three generations: every trial carries, under the key
    the strategy writes when it replays a history, its position // population_size."""
    import optuna

    from speechnas.search.strategies.optuna import generation_key

    sampler = optuna.samplers.NSGAIISampler(population_size=4, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_categorical("x", [0, 1, 2, 3, 4])
        y = trial.suggest_categorical("y", [0, 1, 2, 3, 4])
        return float(x + y), float((x - 4) ** 2 + y)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=12)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert [t.system_attrs.get(generation_key()) for t in trials] == [t.number // 4 for t in trials]


def _captured_studies(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every study the Optuna strategies create from now on."""
    from speechnas.search.strategies import optuna as optuna_strategies

    studies: list[Any] = []
    make = optuna_strategies._quiet_study

    def keep(*args: Any) -> Any:
        studies.append(make(*args))
        return studies[-1]

    monkeypatch.setattr(optuna_strategies, "_quiet_study", keep)
    return studies


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_nsga2_replay_proposes_from_a_population(
    monkeypatch: pytest.MonkeyPatch, n_objectives: int
) -> None:
    """After a replayed history of two and a half generations the proposal is bred from the
    replayed population (generation 2, with parents), not drawn by the initial random sampler."""
    studies = _captured_studies(monkeypatch)
    s = make_strategy("nsga2", SYNTHETIC, seed=0, population_size=4, n_objectives=n_objectives)
    values = (lambda a: (cost(a), two_objectives(a)[1])) if n_objectives == 2 else None
    history = run(s, SYNTHETIC, 10, values or (lambda a: (cost(a),)), fail_every=None)
    studies.clear()
    s.propose(history, 10)
    (study,) = studies
    proposal = study.get_trials(deepcopy=False)[-1]
    generation = study.sampler.get_trial_generation(study, proposal)
    assert generation == 10 // 4
    assert study.sampler.get_parent_population(study, generation)


def test_nsga2_replay_fails_loudly_when_optuna_ignores_the_generations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if Optuna had renamed its generation key: the replayed tags are not read, and the
    proposal would be random; the strategy says so instead of going on."""
    import optuna

    from speechnas.search.strategies.optuna import NSGA2, ReplayError

    s = make_strategy("nsga2", SYNTHETIC, seed=0, population_size=4)
    history = run(s, SYNTHETIC, 6, lambda a: (cost(a),), fail_every=None)
    monkeypatch.setattr(NSGA2, "trial_attrs", lambda self, k: {"renamed:generation": k // 4})
    s.propose(history[:3], 3)  # still the first generation: random is right there
    with pytest.raises(ReplayError, match="generation 0, not 1"):
        s.propose(history, 6)
    monkeypatch.undo()
    monkeypatch.setattr(optuna.samplers.NSGAIISampler, "_get_generation_key", None)  # as if gone
    with pytest.raises(ReplayError, match="_get_generation_key"):
        s.propose(history, 6)
