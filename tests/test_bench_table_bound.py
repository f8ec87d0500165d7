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
