"""The search-cost table of bench/supernet_rank.py: trainings, steps and minutes that random
search and a one-shot ranking spend to reach a share of the paths' best hypervolume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from supernet_rank import search_cost, trainings_to_share

# Four paths, (dev WER, parameters): 0 and 3 make the front, 1 and 2 are dominated by 3.
WER = [0.30, 0.25, 0.22, 0.20]
PARAMS = [100, 400, 800, 300]
MINUTES = [1.0, 2.0, 4.0, 1.5]


def test_a_path_that_dominates_all_others_is_enough_alone() -> None:
    points = np.array([[0.1, 10], [0.2, 20], [0.3, 30]], dtype=float)
    assert trainings_to_share([0, 1, 2], points, 0.99) == 1
    assert trainings_to_share([2, 1, 0], points, 0.99) == 3


def test_the_front_reaches_the_best_hypervolume_and_nothing_less_does() -> None:
    points = np.column_stack([WER, PARAMS]).astype(float)
    assert trainings_to_share([0, 3, 1, 2], points, 1.0) == 2
    assert trainings_to_share([1, 2, 0, 3], points, 1.0) == 4


def test_one_shot_pays_its_supernet_then_trains_in_its_own_order() -> None:
    rankings = {
        "right": {"inherited": [0.5, 0.45, 0.42, 0.40], "path_steps": 300, "cpu_minutes": 2.0},
        "wrong": {"inherited": [0.40, 0.42, 0.45, 0.5], "path_steps": 300, "cpu_minutes": 2.0},
    }
    cost = search_cost(WER, PARAMS, MINUTES, 100, rankings, shares=(1.0,), draws=400)["1"]
    right, wrong, rand = cost["right"], cost["wrong"], cost["random"]
    # Its front by inherited WER and parameters is paths 0 and 3, handed over first.
    assert sorted(right["order"][:2]) == [0, 3] and right["trainings"] == 2
    assert right["steps"] == 300 + 2 * 100 and right["cpu_minutes"] == pytest.approx(4.5)
    assert wrong["trainings"] > right["trainings"]
    # Random orders: both front paths must be among those trained, 2 to 4 trainings.
    assert 2 < rand["trainings"]["mean"] < 4 and rand["trainings"]["sd"] > 0
    assert rand["steps"]["mean"] == pytest.approx(100 * rand["trainings"]["mean"])


def test_across_seeds_summarises_each_variant_and_pairs_the_others_with_the_first_by_seed() -> None:
    from supernet_rank import across_seeds, tau

    good = [0.5, 0.45, 0.42, 0.40]  # ranks the paths as WER does: tau 1
    rows = []
    for seed, (a, b) in enumerate([(good, [0.40, 0.42, 0.45, 0.5]), (good, good)]):
        for name, inherited in (("base", a), ("other", [w - 0.05 for w in b])):
            rows.append({"variant": name, "seed": seed, "run": f"{name}/s{seed}",
                         "inherited_dev_wer": inherited, "train_minutes": 1.0 + seed,
                         **tau(inherited, WER)})  # fmt: skip
    cost = {"1": {"random": {"steps": {"mean": 400.0}, "cpu_minutes": {"mean": 8.0}},
                  **{r["run"]: {"steps": 200 * (1 + r["seed"]), "cpu_minutes": 4.0}
                     for r in rows}}}  # fmt: skip
    got = across_seeds(rows, WER, cost)
    base, other = got["variants"]["base"], got["variants"]["other"]
    assert base["seeds"] == 2 and base["kendall_tau"] == {"mean": 1.0, "sd": 0.0}
    assert other["kendall_tau"]["mean"] == pytest.approx(0.0) and other["kendall_tau"]["sd"] > 1
    assert base["ratio_to_random"]["1"]["steps"]["mean"] == pytest.approx(0.75)
    assert base["train_minutes"]["mean"] == pytest.approx(1.5)
    pair = got["against_first"]["other"]
    assert pair["first"] == "base" and pair["seeds"] == [0, 1]
    assert pair["tau_difference"] == pytest.approx([-2.0, 0.0])
    assert pair["tau_higher_in"] == 0 and pair["wer_lower_in"] == 2
    assert pair["path_mean_wer_difference"][1] == pytest.approx(-0.05)
