"""The bound of bench/table_search.py: the fewest trainings any search needs to reach a share
of the benchmark table's best hypervolume, on the checked-in table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from speechnas.search.pareto import pareto_front

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import table_search
from table_search import Tabulated, fewest_to_share

BENCH = Path(table_search.__file__).parent


@pytest.fixture(scope="module")
def tab() -> Tabulated:
    return Tabulated(BENCH / "tabular" / "speech-ctc.json", ["dev_wer", "params"])


@pytest.mark.parametrize("share", [0.9, 0.99])
def test_the_fewest_rows_reach_the_share_and_one_fewer_never_does(
    tab: Tabulated, share: float
) -> None:
    got = fewest_to_share(tab, share)
    assert got["exact"] and got["trainings"] == len(got["rows"]) >= 1
    assert got["steps"] == got["trainings"] * tab.steps
    assert tab.hv(got["rows"]) >= share * tab.best
    if got["trainings"] == 2:  # then no single row of the whole table reaches it
        assert all(tab.hv([i]) < share * tab.best for i in range(len(tab.archs)))


def test_the_whole_front_for_the_whole_hypervolume_and_greedy_never_fewer(
    tab: Tabulated, monkeypatch: pytest.MonkeyPatch
) -> None:
    front = pareto_front(tab.values)
    assert fewest_to_share(tab, 1.0)["trainings"] == len(front)
    exact = fewest_to_share(tab, 0.99)
    monkeypatch.setattr(table_search, "EXACT_LIMIT", 0)
    greedy = fewest_to_share(tab, 0.99)
    assert not greedy["exact"] and greedy["trainings"] >= exact["trainings"]
    assert tab.hv(greedy["rows"]) >= 0.99 * tab.best


def test_one_search_reports_its_cost_to_every_share_and_no_fewer_than_the_bound(
    tab: Tabulated,
) -> None:
    from table_search import search

    r = search(tab, "random", 0, ["dev_wer", "params"], None, share=(0.95, 0.99))
    low, high = r["by_share"][0.95], r["by_share"][0.99]
    assert (r["cost"], r["trained"]) == (low["cost"], low["trained"])
    assert low["cost"] <= high["cost"] and low["cost"] == low["trained"] * tab.steps
    for share, got in r["by_share"].items():
        k = got["trained"]  # the hypervolume first reaches the share at the k-th training
        assert r["hv"][k - 1] >= share * tab.best and (k == 1 or r["hv"][k - 2] < share * tab.best)
        assert k >= fewest_to_share(tab, share)["trainings"]


def test_each_seed_cost_is_kept_and_tested_against_random_and_the_unscreened_search(
    tab: Tabulated,
) -> None:
    from table_search import against, summarise

    runs = {
        "random": [{"seed": k, **search_row(c)} for k, c in enumerate([9, 8, 10, 7, 9, 11])],
        "tpe": [{"seed": k, **search_row(c)} for k, c in enumerate([2, 3, 1, 2, 3, 2])],
        "tpe+screen": [{"seed": k, **search_row(c)} for k, c in enumerate([2, 2, 1, 1, 3, None])],
    }
    got = summarise(tab, runs, 0.95)["strategies"]
    costs = [2, 3, 1, 2, 3, 2]
    assert got["tpe"]["cost_steps_by_seed"] == {k: 1000 * c for k, c in enumerate(costs)}
    assert got["random"]["vs_random"] is None and got["tpe"]["vs_unscreened"] is None
    # every tpe seed is cheaper than every random seed: the least p of a 6-against-6 split
    assert got["tpe"]["vs_random"]["p_value"] == pytest.approx(2 / 924)
    paired = got["tpe+screen"]["vs_unscreened"]
    assert (paired["seeds"], paired["cheaper"], paired["dearer"], paired["same"]) == (5, 2, 0, 3)
    assert 0.05 < paired["p_value"] < 1  # two of five seeds cheaper: not a difference
    same = against({0: 5, 1: 6}, {0: 5, 1: 6}, paired=True)
    assert same["p_value"] == 1.0 and same["same"] == 2
    # ten seeds, all cheaper by distinct amounts: the exact sign-flip p is 2 / 2**10
    ten = against({k: k for k in range(10)}, {k: 2 * k + 1 for k in range(10)}, paired=True)
    assert ten["p_value"] == pytest.approx(2 / 1024)


def search_row(cost: int | None) -> dict:
    """The part of a search's result that :func:`summarise` reads, for a cost in trainings."""
    steps = None if cost is None else cost * 1000
    return {"by_share": {0.95: {"cost": steps, "trained": cost}}, "screened": 0,
            "total_steps": 150_000, "hv": [1.0]}  # fmt: skip
