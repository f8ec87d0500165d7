"""Pareto fronts, crowding distances and exact hypervolume, every objective minimised.

Points are given as a sequence of equal-length sequences, or an array of shape (N, M) with N
points and M objectives. Written here rather than taken from Optuna because Optuna's
non-dominated sorting and hypervolume live in private modules (``optuna._hypervolume``,
``optuna.study._multi_objective``) whose names and signatures change between releases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Points = Sequence[Sequence[float]] | np.ndarray


def _array(points: Points) -> np.ndarray:
    """(N, M) float array; raises a ValueError on ragged input or non-finite values."""
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
    if arr.ndim != 2:
        raise ValueError(f"points: expected shape (N, M), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("points: contain NaN or infinite values")
    return arr


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is no worse than ``b`` in every objective and better in one."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(x <= y) and np.any(x < y))


def non_dominated_sort(points: Points) -> list[list[int]]:
    """Fronts of point indices: front 0 is non-dominated, front k is non-dominated once fronts
    0..k-1 are removed. Indices within a front are ascending; equal points share a front."""
    arr = _array(points)
    n = len(arr)
    if n == 0:
        return []
    le = np.all(arr[:, None, :] <= arr[None, :, :], axis=2)
    lt = np.any(arr[:, None, :] < arr[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)  # how many points dominate each point
    fronts: list[list[int]] = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in np.flatnonzero(dom[i]):
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(int(j))
        current = sorted(nxt)
    return fronts


def pareto_front(points: Points) -> list[int]:
    """Indices of the non-dominated points, ascending."""
    fronts = non_dominated_sort(points)
    return fronts[0] if fronts else []


def crowding_distance(points: Points, front: Sequence[int]) -> list[float]:
    """NSGA-II crowding distance of each index of ``front`` (same order as ``front``).

    Per objective, the two extreme points get infinity and every other point the gap between its
    neighbours divided by the objective's range; distances add over objectives. An objective on
    which the whole front is equal adds nothing beyond the infinities of its extremes.
    """
    arr = _array(points)
    idx = list(front)
    dist = np.zeros(len(idx))
    if len(idx) <= 2:
        return [float("inf")] * len(idx)
    sub = arr[idx]
    for m in range(sub.shape[1]):
        order = np.argsort(sub[:, m], kind="stable")
        col = sub[order, m]
        dist[order[0]] = dist[order[-1]] = np.inf
        span = col[-1] - col[0]
        if span > 0:
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return [float(d) for d in dist]


def normalize(points: Points, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
    """(points - lower) / (upper - lower) per objective, shape (N, M); an objective with
    ``upper == lower`` maps to ``points - lower`` (0 for points at the bound)."""
    arr = _array(points)
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if lo.shape != (arr.shape[1],) or hi.shape != lo.shape:
        raise ValueError(
            f"normalize: lower {lo.shape} and upper {hi.shape} must have one entry per "
            f"objective ({arr.shape[1]})"
        )
    span = np.where(hi > lo, hi - lo, 1.0)
    return (arr - lo) / span


def hypervolume(points: Points, reference: Sequence[float]) -> float:
    """The exact volume dominated by ``points`` and bounded by ``reference``.

    Points not strictly better than the reference in every objective add nothing. Two objectives:
    a sweep over the front sorted by the first objective. More: slicing along the last objective,
    each slice the (M-1)-objective hypervolume of the points below it; exponential in M but exact
    and quick for the front sizes of a search (tens of points).
    """
    arr = _array(points)
    ref = np.asarray(reference, dtype=float)
    if arr.size == 0:
        return 0.0
    if ref.shape != (arr.shape[1],):
        raise ValueError(
            f"hypervolume: reference has {ref.size} entries for {arr.shape[1]} objectives"
        )
    arr = arr[np.all(arr < ref, axis=1)]
    if len(arr) == 0:
        return 0.0
    return _hv(arr[pareto_front(arr)], ref)


def _hv(arr: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of mutually non-dominated points (or a superset), all strictly inside ref."""
    m = arr.shape[1]
    if m == 1:
        return float(ref[0] - arr[:, 0].min())
    if m == 2:
        order = np.argsort(arr[:, 0], kind="stable")
        total, best_y = 0.0, ref[1]
        for x, y in arr[order]:
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(total)
    order = np.argsort(arr[:, -1], kind="stable")
    arr = arr[order]
    total = 0.0
    for k in range(len(arr)):
        top = arr[k + 1, -1] if k + 1 < len(arr) else ref[-1]
        depth = top - arr[k, -1]
        if depth <= 0:
            continue
        below = arr[: k + 1, :-1]
        total += depth * _hv(below[pareto_front(below)], ref[:-1])
    return float(total)


__all__ = [
    "crowding_distance",
    "dominates",
    "hypervolume",
    "non_dominated_sort",
    "normalize",
    "pareto_front",
]
