"""Promotion by predicted rank: late bloomers overtake early starters once the study has seen
enough of both rungs, and a tiny search records which rank decided each promotion."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from search_helpers import TINY_SPACE, search_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.config import search_config_from_dict
from speechnas.search.fidelity import SlotState, promotion_order, rank_scalar
from speechnas.search.objectives import Scalarizer
from speechnas.search.promote import MIN_PAIRS, VALUE_FROM, predicted_top
from speechnas.search.runner import run_search
from speechnas.space import Arch, load_space

OBJECTIVES = ("wer:test", "latency")


def _study(pairs: list[tuple[Arch, float, float]], cands: list[tuple[Arch, float]]):  # type: ignore[no-untyped-def]
    """A study with each pair's architecture at rung 0 and rung 1, then the rung-0 candidates."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    for arch, low, high in pairs:
        for rung, wer in ((0, low), (1, high)):
            study.add_trial(optuna.trial.create_trial(
                values=[wer, 3.0], user_attrs={"rung": rung, "arch": arch.to_json()}))  # fmt: skip
    for arch, low in cands:
        study.add_trial(optuna.trial.create_trial(
            values=[low, 3.0], user_attrs={"rung": 0, "arch": arch.to_json()}))  # fmt: skip
    trials = study.trials
    slots = [
        SlotState(t.number, True, tuple(t.values), Arch.from_json(t.user_attrs["arch"]).key())
        for t in trials[-len(cands) :]
    ]
    return trials, slots


def test_predicted_rank_promotes_the_late_bloomer(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    space = load_space(tmp_path / "tiny.yaml")
    wide = [a for a in space.enumerate() if a["d_model"] == 32]
    narrow = [a for a in space.enumerate() if a["d_model"] == 16]
    # Wide models start slowly (0.9 at rung 0) and end best (0.2); narrow ones the reverse.
    pairs = [(a, 0.9, 0.2) for a in wide[:4]] + [(a, 0.5, 0.4) for a in narrow[:4]]
    trials, slots = _study(pairs, [(narrow[-1], 0.5), (wide[-1], 0.9)])
    kw = {"objectives": OBJECTIVES, "space": space, "vocab_size": 32, "top_rung": 1, "seed": 0}
    values, predicted = predicted_top(trials, slots, **kw)
    assert predicted == "change"  # few pairs: the trees learn the change from the lower rung
    assert values[0][0] == pytest.approx(0.4, abs=0.05) and values[1][0] == pytest.approx(
        0.2, abs=0.05
    )
    assert [v[1] for v in values] == [3.0, 3.0]  # latency is not predicted
    rank = rank_scalar(Scalarizer(OBJECTIVES, 0.0))
    observed_first = promotion_order(slots, rank)[0]
    predicted_first = promotion_order(
        slots, rank, rank_values=lambda c: predicted_top(trials, c, **kw)[0]
    )[0]
    assert observed_first == slots[0].number and predicted_first == slots[1].number

    few = pairs[: MIN_PAIRS - 1]
    trials, slots = _study(few, [(narrow[-1], 0.5), (wide[-1], 0.9)])
    values, predicted = predicted_top(trials, slots, **kw)
    assert predicted is None and values == [(0.5, 3.0), (0.9, 3.0)]


def test_with_enough_pairs_the_trees_learn_the_top_value_itself(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    space = load_space(tmp_path / "tiny.yaml")
    wide = [a for a in space.enumerate() if a["d_model"] == 32]
    narrow = [a for a in space.enumerate() if a["d_model"] == 16]
    # The lower rung says nothing (its values alternate whatever the width); the width decides.
    half = (VALUE_FROM + 1) // 2  # the tiny space has 16 of each width; two are candidates
    pairs = [(a, (0.5, 0.9)[i % 2], 0.2) for i, a in enumerate(wide[:half])]
    pairs += [(a, (0.5, 0.9)[i % 2], 0.4) for i, a in enumerate(narrow[:half])]
    assert len(pairs) >= VALUE_FROM
    trials, slots = _study(pairs, [(narrow[-1], 0.5), (wide[-1], 0.9)])
    kw = {"objectives": OBJECTIVES, "space": space, "vocab_size": 32, "top_rung": 1, "seed": 0}
    values, predicted = predicted_top(trials, slots, **kw)
    assert predicted == "value"
    assert values[0][0] == pytest.approx(0.4, abs=0.02) and values[1][0] == pytest.approx(
        0.2, abs=0.02
    )
    trials, slots = _study(pairs[: VALUE_FROM - 1], [(narrow[-1], 0.5), (wide[-1], 0.9)])
    assert predicted_top(trials, slots, **kw)[1] == "change"


def test_rank_by_is_checked(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    base = json.loads(json.dumps(search_config(tiny_corpus, tmp_path).to_dict()))
    with pytest.raises(ValueError, match=r"fidelity.rank_by: 'guess' is not one of"):
        search_config_from_dict({**base, "fidelity": {**base["fidelity"], "rank_by": "guess"}})


def test_a_search_promotes_by_prediction_once_it_has_pairs(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config(
        tiny_corpus, tmp_path,
        strategy={"name": "random"},
        fidelity={"rungs": [{"minutes": 5, "steps": 2}, {"minutes": 5, "steps": 4}], "eta": 2,
                  "candidates": 2, "rank_by": "predicted"},
        n_trials=3 * (MIN_PAIRS + 1),
    )  # fmt: skip
    trials = run_search(cfg).study.trials()
    promoted = [t for t in trials if t.user_attrs.get("rung") == 1]
    assert len(promoted) == MIN_PAIRS + 1 and all(t.state.name == "COMPLETE" for t in promoted)
    how = [t.user_attrs["promotion"] for t in promoted]
    assert how == ["observed"] * MIN_PAIRS + ["predicted"]
    assert promoted[-1].user_attrs["promotion_form"] == "change"
    assert all("promotion_form" not in t.user_attrs for t in promoted[:-1])
