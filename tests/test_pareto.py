from __future__ import annotations

import math

import numpy as np
import pytest

from speechnas.search.pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    normalize,
    pareto_front,
)

POINTS = [(1, 5), (2, 3), (3, 4), (4, 1), (5, 5), (2, 3)]


def test_fronts_of_a_known_set() -> None:
    assert non_dominated_sort(POINTS) == [[0, 1, 3, 5], [2], [4]]
    assert pareto_front(POINTS) == [0, 1, 3, 5]  # the duplicate (2, 3) stays on the front
    assert dominates((2, 3), (3, 4)) and not dominates((2, 3), (2, 3))
    assert non_dominated_sort([]) == [] and pareto_front([]) == []


def test_fronts_in_three_objectives_and_every_point_in_one_front() -> None:
    pts = [(1, 2, 3), (2, 1, 3), (1, 1, 4), (2, 2, 4), (3, 3, 3), (0, 9, 9)]
    fronts = non_dominated_sort(pts)
    assert fronts == [[0, 1, 2, 5], [3, 4]]
    assert sorted(i for f in fronts for i in f) == list(range(len(pts)))


def test_crowding_distance() -> None:
    pts = [(0, 4), (1, 2), (3, 1), (4, 0)]
    d = crowding_distance(pts, [0, 1, 2, 3])
    # objective 0 (range 4): (3-0)/4 and (4-1)/4; objective 1 (range 4): (4-1)/4 and (2-0)/4
    assert d == [math.inf, 1.5, 1.25, math.inf]
    # the order of `front` only permutes the result; fronts of <= 2 points are all boundary
    assert crowding_distance(pts, [3, 1, 0, 2]) == [math.inf, 1.5, math.inf, 1.25]
    assert crowding_distance(pts, [1, 2]) == [math.inf, math.inf]
    # an objective constant over the front adds nothing to the interior points
    assert crowding_distance([(0, 1), (1, 1), (3, 1)], [0, 1, 2]) == [math.inf, 1.0, math.inf]


def test_hypervolume_2d_by_hand() -> None:
    # staircase (1,3), (2,2), (3,1) under reference (4,4): 3*1 + 2*1 + 1*1
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == 6.0
    # a dominated point, a point beyond the reference and a duplicate change nothing
    more = [(1, 3), (2, 2), (3, 1), (3, 3), (5, 0), (2, 2)]
    assert hypervolume(more, (4, 4)) == 6.0
    assert hypervolume([(4, 1)], (4, 4)) == 0.0  # on the reference: no volume
    assert hypervolume([], (4, 4)) == 0.0


def test_hypervolume_3d_by_hand() -> None:
    assert hypervolume([(1, 1, 1)], (2, 2, 2)) == 1.0
    # boxes 2*2*1 and 1*1*2 overlapping in a unit cube
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == 5.0
    # three boxes of 6, pairwise overlaps of 2, common overlap 1: 18 - 6 + 1
    assert hypervolume([(1, 2, 3), (2, 3, 1), (3, 1, 2)], (4, 4, 4)) == 13.0


def _monte_carlo(pts: np.ndarray, ref: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    lo = pts.min(axis=0)
    u = lo + rng.random((n, pts.shape[1])) * (ref - lo)
    covered = np.zeros(n, dtype=bool)
    for p in pts:
        covered |= np.all(u >= p, axis=1)
    box = float(np.prod(ref - lo))
    share = covered.mean()
    return box * share, box * math.sqrt(share * (1 - share) / n)


@pytest.mark.parametrize("m", [3, 4])
def test_hypervolume_matches_monte_carlo(m: int) -> None:
    rng = np.random.default_rng(7)
    pts = rng.random((12, m))
    ref = np.full(m, 1.1)
    exact = hypervolume(pts, ref)
    estimate, stderr = _monte_carlo(pts, ref, 200_000, seed=11)
    assert abs(exact - estimate) < 4 * stderr
    # the front alone has the same volume, and so does any permutation of the points
    assert hypervolume(pts[pareto_front(pts)], ref) == pytest.approx(exact, rel=1e-12)
    assert hypervolume(pts[::-1], ref) == pytest.approx(exact, rel=1e-12)


def test_normalize() -> None:
    out = normalize([(1.0, 10.0, 3.0), (3.0, 30.0, 3.0)], (1.0, 10.0, 3.0), (3.0, 30.0, 3.0))
    assert out.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="one entry per objective"):
        normalize([(1.0, 2.0)], (0.0,), (1.0,))
    with pytest.raises(ValueError, match="NaN"):
        hypervolume([(math.nan, 1.0)], (2.0, 2.0))
