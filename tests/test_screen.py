"""Screening proposals before training: the verdict on a fitted history, the config's checks,
and a tiny search that screens, records and stays reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from search_helpers import TINY_SPACE, search_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.config import ScreenConfig, search_config_from_dict
from speechnas.search.objectives import ProxyLatency
from speechnas.search.runner import run_search
from speechnas.search.screen import Screen, Trained
from speechnas.search.tasks import AsrTrials
from speechnas.space import load_space

OBJECTIVES = ("wer:test", "latency")


def _space(tmp: Path):  # type: ignore[no-untyped-def]
    path = tmp / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return load_space(path)


def test_a_slow_proposal_is_screened_and_a_fast_one_is_not(tmp_path: Path) -> None:
    space = _space(tmp_path)
    task = AsrTrials(32, ProxyLatency(), 5.0)
    by_latency = sorted(space.enumerate(), key=lambda a: task.predicted(a)["latency"])
    fastest, slowest = by_latency[0], by_latency[-1]
    # WER grows with latency here, so a slower model is worse on both objectives.
    trained = [
        Trained(n, a, (0.1 + 0.01 * task.predicted(a)["latency"], task.predicted(a)["latency"]))
        for n, a in enumerate(by_latency[1:-1:2])
    ]
    screen = Screen(ScreenConfig(min_history=8), objectives=OBJECTIVES, space=space,
                    vocab_size=32, seed=0)  # fmt: skip
    assert screen.fit(trained)
    verdict = screen.judge(slowest, task.predicted(slowest))
    assert verdict is not None
    winner = trained[[t.number for t in trained].index(verdict.dominated_by)]
    assert all(w <= o for w, o in zip(winner.values, verdict.optimistic.values(), strict=True))
    assert verdict.optimistic["latency"] == task.predicted(slowest)["latency"]
    assert verdict.optimistic["wer:test"] <= verdict.median["wer:test"]
    assert "screened: predicted at best wer:test" in verdict.reason()
    # Nothing trained is as fast as the fastest model: whatever its WER, it may train.
    assert screen.judge(fastest, task.predicted(fastest)) is None
    # An objective the search cannot predict before training: no verdict.
    assert screen.judge(slowest, {"params": 1.0}) is None


def test_nothing_is_screened_before_the_history_is_long_enough(tmp_path: Path) -> None:
    space = _space(tmp_path)
    archs = list(space.enumerate())
    trained = [Trained(n, a, (0.5, 1.0)) for n, a in enumerate(archs[:7])]
    screen = Screen(ScreenConfig(min_history=8), objectives=OBJECTIVES, space=space,
                    vocab_size=32, seed=0)  # fmt: skip
    assert not screen.fit(trained)
    assert screen.judge(archs[-1], {"latency": 99.0}) is None


def test_the_screen_config_names_what_it_cannot_judge(tiny_corpus: CorpusInfo,
                                                      tmp_path: Path) -> None:  # fmt: skip
    base = json.loads(json.dumps(search_config(tiny_corpus, tmp_path).to_dict()))
    with pytest.raises(ValueError, match=r"screen: objective 'rtf:test' is neither"):
        search_config_from_dict({**base, "objectives": ["wer:test", "rtf:test"], "screen": {}})
    with pytest.raises(ValueError, match=r"screen.confidence: expected in \(0, 1\), got 1.5"):
        search_config_from_dict({**base, "screen": {"confidence": 1.5}})
    with pytest.raises(ValueError, match=r"screen.min_history: expected >= 5"):
        search_config_from_dict({**base, "screen": {"min_history": 2}})
    with pytest.raises(ValueError, match=r"screen: unknown key\(s\) \['kappa'\]"):
        search_config_from_dict({**base, "screen": {"kappa": 1}})
    assert search_config_from_dict({**base, "screen": {}}).screen == ScreenConfig()


def _screening_search(corpus: CorpusInfo, folder: Path):  # type: ignore[no-untyped-def]
    cfg = search_config(
        corpus, folder,
        strategy={"name": "random"},
        fidelity={"rungs": [{"minutes": 5, "steps": 2}], "eta": 2, "candidates": 6},
        n_trials=12,
        screen={"min_history": 5, "confidence": 0.5},
    )  # fmt: skip
    return run_search(cfg)


def test_a_search_records_screened_proposals_and_trains_the_others(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    outcome = _screening_search(tiny_corpus, tmp_path / "a")
    trials = outcome.study.trials()
    slots = [t for t in trials if "slot" in t.user_attrs]
    screened = [t for t in trials if "screened" in t.user_attrs]
    assert len(slots) == 12 and all(t.state.name == "COMPLETE" for t in slots)
    assert screened, "the second bracket should screen a proposal on this history"
    by_number = {t.number: t for t in trials}
    trained_keys = {t.user_attrs["arch_key"] for t in slots}
    for t in screened:
        v = t.user_attrs["screened"]
        assert t.state.name == "PRUNED" and t.user_attrs["status"].startswith("screened: ")
        assert t.user_attrs["proposal"] >= 6  # the first bracket has no history to judge by
        winner = by_number[v["dominated_by"]]
        assert winner.state.name == "COMPLETE" and winner.user_attrs["rung"] == 0
        assert all(w <= o for w, o in zip(winner.values, v["optimistic"].values(), strict=True))
        assert t.user_attrs["arch_key"] not in trained_keys  # skipped, not trained later
    pareto = json.loads((tmp_path / "a" / "search" / "pareto.json").read_text())
    assert pareto["trials"]["screened"] == len(screened) and pareto["trials"]["PRUNED"] == 0
    # The same seed screens and trains the same architectures.
    again = _screening_search(tiny_corpus, tmp_path / "b").study.trials()
    assert [t.user_attrs["arch_key"] for t in again] == [t.user_attrs["arch_key"] for t in trials]


def test_size_objectives_come_from_the_prediction_and_ties_train(tmp_path: Path) -> None:
    space = _space(tmp_path)
    archs = list(space.enumerate())
    screen = Screen(ScreenConfig(min_history=5), objectives=("wer:test", "params"), space=space,
                    vocab_size=32, seed=0)  # fmt: skip
    assert screen.fit([Trained(n, a, (0.2, 1.0)) for n, a in enumerate(archs[:6])])
    # params is predicted for every architecture; a trained one as small and more accurate wins
    verdict = screen.judge(archs[-1], {"params": 2.0})
    assert verdict is not None and verdict.dominating == {"wer:test": 0.2, "params": 1.0}
    # as small as the best trained one: not dominated, so it trains
    assert screen.judge(archs[-1], {"params": 1.0}) is None
