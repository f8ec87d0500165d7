"""The search's drivers and what they share: the registry and its contract, recording a trial,
constraints no architecture can meet, and imports that never go round in a circle."""

from __future__ import annotations

import inspect
import random
from pathlib import Path

import pytest
from search_helpers import search_config
from test_supernet import _space_file

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.nn.cost import count_parameters
from speechnas.search.config import ConstraintsConfig, StrategyConfig
from speechnas.search.drivers import Driver, driver_for, drivers, get_driver, strategy_names
from speechnas.search.feasibility import MIN_VOCAB, check_feasible, smallest, starting_points
from speechnas.search.record import (
    CLAIM_KEYS,
    OUTCOME_KEYS,
    guarded,
    open_trial,
    record_metrics,
)
from speechnas.search.runner import run_search
from speechnas.search.strategies import STRATEGIES
from speechnas.search.study import open_study
from speechnas.search.trial import Fidelity
from speechnas.space import SearchSpace, load_space, space_from_yaml


def test_the_registry_names_every_driver_and_strategy() -> None:
    assert sorted(drivers()) == ["darts", "oneshot", "pool"]
    assert get_driver("oneshot") is driver_for("oneshot")
    assert get_driver("darts") is driver_for("darts")
    assert {driver_for(s).name for s in STRATEGIES} == {"pool"}
    assert strategy_names() == sorted([*STRATEGIES, "darts", "oneshot"])
    with pytest.raises(ValueError, match=r"driver: 'grid' is not one of \['darts', 'oneshot', "):
        get_driver("grid")
    with pytest.raises(ValueError, match=r"strategy.name: 'grid' is not one of \['darts', "):
        driver_for("grid")


@pytest.mark.parametrize("name", sorted(drivers()))
def test_every_driver_keeps_the_contract(
    name: str, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cls = drivers()[name]
    assert issubclass(cls, Driver) and not inspect.isabstract(cls) and cls.name == name
    assert cls.strategies and all(driver_for(s) is cls for s in cls.strategies)
    for hook in ("run", "setup", "trial_budget", "header", "retrain_config", "init_from"):
        mine, contract = (
            inspect.signature(getattr(cls, hook)),
            inspect.signature(getattr(Driver, hook)),
        )
        assert list(mine.parameters) == list(contract.parameters), hook
    space = str(_space_file(tmp_path))  # a space every driver can search
    # the darts strategy compresses one seed architecture of the space
    seeds = [load_space(space).sample(random.Random(0)).to_json()] if name == "darts" else []
    cfg = search_config(tiny_corpus, tmp_path, space=space, strategy={"name": cls.strategies[0]},
                        seeds=seeds)  # fmt: skip
    searched = cls(cfg).setup()
    assert isinstance(searched, SearchSpace) and searched.count() > 0
    assert not Path(cfg.output_dir).exists()  # setup writes nothing


def test_a_bad_strategy_fails_before_any_work(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    cfg = search_config(tiny_corpus, tmp_path)
    with pytest.raises(ValueError, match=r"strategy\.name: 'grid' is not one of"):
        run_search(cfg.replace(strategy=StrategyConfig("grid")))
    with pytest.raises(ValueError, match=r"strategy evolution: unknown option\(s\) \['size'\]"):
        run_search(cfg.replace(strategy=StrategyConfig("evolution", {"size": 3})))
    assert not Path(cfg.output_dir).exists()


def test_completed_and_failed_trials_carry_the_same_attributes(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config(tiny_corpus, tmp_path, constraints={"max_params": 20_000})
    space = load_space(cfg.space)
    ss = open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", len(cfg.objectives))
    arch = next(space.enumerate())
    fid = Fidelity(1.0, 1.0, 2)

    def opened(k: int) -> int:
        return open_trial(ss, space, arch, cfg=cfg, fidelity=fid, worker="test", slot=f"0/0/{k}",
                          bracket=0, rung=0, position=k)  # fmt: skip

    ok, over, crash = opened(0), opened(1), opened(2)
    metrics = {"wer:test": 0.5, "latency": 2.0, "params": 10_000}
    assert record_metrics(ss, ok, cfg, metrics, predicted=(), checkpoint="ok/best") == "complete"
    big = {**metrics, "params": 30_000}
    assert record_metrics(ss, over, cfg, big, predicted=(), checkpoint="x/best") == "fail"
    assert guarded(ss, crash, lambda: 1 / 0) == "fail"  # type: ignore[arg-type,return-value]
    trials = {t.number: t for t in ss.trials()}
    assert [trials[n].state.name for n in (ok, over, crash)] == ["COMPLETE", "FAIL", "FAIL"]
    keys = set(trials[ok].user_attrs)
    assert keys == set(trials[over].user_attrs) == set(trials[crash].user_attrs) - {"traceback"}
    assert set(CLAIM_KEYS) | set(OUTCOME_KEYS) <= keys
    done, failed = trials[ok].user_attrs, trials[over].user_attrs
    assert done["status"] == "ok" and done["scalar"] == pytest.approx(0.5 + 0.05 * 0.6931, 1e-3)
    assert done["arch_key"] == arch.hash() and done["fidelity"] == fid.to_dict()
    assert failed["status"] == "rejected after training: params 30,000 > 20,000"
    assert failed["scalar"] is None and failed["metrics"]["params"] == 30_000
    assert trials[crash].user_attrs["status"] == "crashed: ZeroDivisionError: division by zero"


def test_impossible_constraints_fail_before_the_corpus(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    corpora = tmp_path / "corpora"
    cfg = search_config(tiny_corpus, tmp_path, constraints={"max_params": 10})
    cfg = cfg.replace(corpus="digits-en", corpora_dir=str(corpora))  # built on first use
    message = (
        r"constraints.max_params: 10 cannot be met: the smallest architecture of space 'tiny' "
        r"has at least 14,962 parameters \(counted with the smallest vocabulary, 2 tokens"
    )
    for resume in (False, True):
        with pytest.raises(ValueError, match=message):
            run_search(cfg, resume=resume)
    assert not corpora.exists() and not Path(cfg.output_dir).exists()
    space = load_space(cfg.space)
    smallest_params = min(count_parameters(a, vocab_size=MIN_VOCAB) for a in space.enumerate())
    assert smallest_params == 14_962
    check_feasible(cfg.replace(constraints=ConstraintsConfig(max_params=14_962)), space)
    slow = cfg.replace(constraints=ConstraintsConfig(max_latency_ms=0.01, max_macs=1e3))
    with pytest.raises(ValueError, match=r"max_latency_ms: 0.01 cannot be met: .* fewest MACs "
                       r"is predicted at [\d.]+ ms per 5 s utterance on proxy; "
                       r"constraints.max_macs: 1,000 cannot be met"):  # fmt: skip
        check_feasible(slow, space)


def test_the_smallest_is_found_where_a_numeric_choice_is_not_monotone() -> None:
    # ffn_lowrank 0 is full rank: rank 64 is the smallest, and subsampling by 8 beats 4
    per_layer = {"ffn_dim": ", per_layer: layers", "ffn_lowrank": ", per_layer: layers"}
    space = space_from_yaml(
        "name: lowrank\nchoices:\n"
        + "".join(
            f"  - {{name: {k}, values: {v}{per_layer.get(k, '')}}}\n"
            for k, v in [("frontend", "[fbank80]"), ("subsampling", "[conv2d]"),
                         ("subsampling_factor", "[4, 8]"), ("encoder", "[transformer]"),
                         ("d_model", "[96]"), ("layers", "[1, 2]"), ("heads", "[2]"),
                         ("ffn_dim", "[256]"), ("ffn_lowrank", "[0, 64, 128]"),
                         ("decoder", "[ctc]")]
        )
    )  # fmt: skip

    def params(a: object) -> float:
        return count_parameters(a, vocab_size=MIN_VOCAB)  # type: ignore[arg-type]

    value, arch = smallest(space, starting_points(space), params)
    assert value == min(params(a) for a in space.enumerate())
    assert arch["ffn_lowrank"] == (64,) and arch["subsampling_factor"] == 8
