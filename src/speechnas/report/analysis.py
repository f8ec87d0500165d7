"""The numbers behind the report's search views: the front as it grew, best-so-far and
hypervolume against trials and training minutes, the diversity of the explored architectures,
and which choices matter for each objective."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from speechnas.search.select import front, normalized_hypervolume, reference_point, results
from speechnas.search.study import values_of

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from speechnas.search.finished import Run

#: PED-ANOVA ranks by the top 10 % of trials: below this many architectures it has too few.
MIN_PED_ANOVA = 20
#: The most front snapshots the evolution view keeps (evenly spaced over the completions).
MAX_SNAPSHOTS = 40


def completed(run: Run) -> list[FrozenTrial]:
    """The completed trials in the order they completed."""
    done = [t for t in run.trials if values_of(t) is not None]
    return sorted(done, key=lambda t: (t.datetime_complete, t.number))


def _train_minutes(t: FrozenTrial) -> float:
    m = (t.user_attrs.get("metrics") or {}).get("train_minutes")
    return float(m) if m is not None else 0.0


@dataclass(frozen=True, slots=True)
class Progression:
    """Per completed trial, in completion order: its number, the cumulative training minutes
    of every trial finished by then (completed or failed), the normalised hypervolume and the
    best value so far of each objective."""

    trial: list[int]
    train_minutes: list[float]
    hypervolume: list[float]
    best: dict[str, list[float]]
    reference: tuple[float, ...]


def progression(run: Run) -> Progression:
    done = completed(run)
    finished = sorted(
        (t for t in run.trials if t.datetime_complete is not None),
        key=lambda t: (t.datetime_complete, t.number),
    )
    ref = tuple(run.pareto.get("reference") or ())
    if len(ref) != len(run.objectives):
        ref = reference_point(
            run.objectives, run.results, constraints=run.config.constraints.to_dict()
        )
    minutes, hv, cum, j = [], [], 0.0, 0
    best = {o: [] for o in run.objectives}
    for k, t in enumerate(done):
        while j < len(finished) and finished[j].datetime_complete <= t.datetime_complete:
            cum += _train_minutes(finished[j])
            j += 1
        minutes.append(cum)
        rows = results(done[: k + 1])
        hv.append(normalized_hypervolume([r.values for r in rows], ref))
        for i, o in enumerate(run.objectives):
            v = values_of(t)[i]  # type: ignore[index]
            best[o].append(min(v, best[o][-1]) if best[o] else v)
    return Progression([t.number for t in done], minutes, hv, best, ref)


def front_snapshots(run: Run) -> list[tuple[int, list[Any]]]:
    """(completed trials so far, the front then) at up to :data:`MAX_SNAPSHOTS` moments, the
    last being the final front."""
    done = completed(run)
    n = len(done)
    if n == 0:
        return []
    marks = sorted({round(x) for x in np.linspace(1, n, min(n, MAX_SNAPSHOTS))})
    return [(k, front(results(done[:k]))) for k in marks]


# --------------------------------------------------------------------------------- diversity
def _explored(run: Run) -> list[dict[str, Any]]:
    """The parameters of every architecture proposed, first proposal of each, in trial order."""
    seen: set[str] = set()
    out = []
    for t in run.trials:
        key = t.user_attrs.get("arch_key")
        if key is None or key in seen or not t.params:
            continue
        seen.add(key)
        out.append(t.params)
    return out


def choice_of(param: str) -> str:
    """The choice a flattened parameter belongs to (``ffn_dim.3`` → ``ffn_dim``)."""
    base, _, idx = param.rpartition(".")
    return base if base and idx.isdigit() else param


def _space_sizes(run: Run) -> dict[str, int]:
    """Choice → how many values the space offers (per-layer choices pooled over layers)."""
    values: dict[str, set[str]] = {}
    for t in run.trials:
        for name, d in t.distributions.items():
            choices = getattr(d, "choices", None)
            if choices is not None:
                values.setdefault(choice_of(name), set()).update(map(repr, choices))
    return {k: len(v) for k, v in values.items()}


def diversity(run: Run) -> dict[str, list[float]]:
    """Per choice offering more than one value: the normalised entropy (0: every explored
    architecture takes the same value; 1: the values are equally frequent) of its values over
    the architectures explored so far, after each new architecture. Per-layer choices pool
    their layers' values."""
    sizes = {k: n for k, n in _space_sizes(run).items() if n > 1}
    counts: dict[str, Counter[str]] = {k: Counter() for k in sizes}
    out: dict[str, list[float]] = {k: [] for k in sizes}
    for params in _explored(run):
        for name, v in params.items():
            c = choice_of(name)
            if c in counts:
                counts[c][repr(v)] += 1
        for c, cnt in counts.items():
            total = sum(cnt.values())
            p = np.array([x / total for x in cnt.values()]) if total else np.zeros(0)
            h = float(-(p * np.log(p)).sum()) if total else 0.0
            out[c].append(max(0.0, h / math.log(sizes[c])))
    return out


# -------------------------------------------------------------------------------- importance
@dataclass(frozen=True, slots=True)
class Importance:
    """Per objective, choice → share of importance (summing to 1), and how it was computed."""

    method: str
    values: dict[str, dict[str, float]]


def _result_trials(run: Run) -> list[FrozenTrial]:
    """One trial per architecture: the one its result comes from (the highest rung)."""
    by_number = {t.number: t for t in run.trials}
    return [by_number[r.trial] for r in run.results if by_number[r.trial].params]


def _ped_anova(trials: Sequence[FrozenTrial], n_obj: int) -> list[dict[str, float]]:
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if len(trials) < MIN_PED_ANOVA:
        raise ValueError(f"{len(trials)} architectures, PED-ANOVA needs {MIN_PED_ANOVA}")
    study = optuna.create_study(directions=["minimize"] * n_obj)
    study.add_trials(trials)
    ev = PedAnovaImportanceEvaluator()
    out = []
    for i in range(n_obj):
        with warnings.catch_warnings():  # "low target values are better": they are, here
            warnings.simplefilter("ignore", UserWarning)
            imp = get_param_importances(study, evaluator=ev, target=lambda t, i=i: t.values[i])
        if not imp or not all(math.isfinite(v) for v in imp.values()) or sum(imp.values()) <= 0:
            raise ValueError("PED-ANOVA found no importance (too few or too similar trials)")
        out.append(dict(imp))
    return out


def _surrogate(trials: Sequence[FrozenTrial], n_obj: int) -> list[dict[str, float]]:
    """A ridge regression on one-hot choices; a choice's importance is the variance of its
    part of the prediction over the trials."""
    names = sorted({p for t in trials for p in t.params})
    levels = {p: sorted({repr(t.params.get(p)) for t in trials}) for p in names}
    cols = [(p, lv) for p in names for lv in levels[p] if len(levels[p]) > 1]
    x = np.array([[float(repr(t.params.get(p)) == lv) for p, lv in cols] for t in trials])
    out = []
    for i in range(n_obj):
        y = np.array([t.values[i] for t in trials], dtype=float)
        y = (y - y.mean()) / (y.std() or 1.0)
        xc = x - x.mean(0) if len(cols) else x
        w = np.linalg.solve(xc.T @ xc + 1.0 * np.eye(len(cols)), xc.T @ y) if cols else []
        parts: dict[str, np.ndarray] = {}
        for (p, _), col, wj in zip(cols, xc.T, w, strict=True):
            parts[p] = parts.get(p, 0.0) + wj * col
        var = {p: float(np.var(v)) for p, v in parts.items()}
        total = sum(var.values())
        out.append({p: v / total for p, v in var.items()} if total > 0 else {})
    return out


def importance(run: Run) -> Importance:
    """PED-ANOVA (Optuna's importance evaluator that needs no extra package) over one trial
    per architecture, per objective; where it cannot rank (few trials), the ridge surrogate.
    Per-layer choices are summed over their layers."""
    trials = _result_trials(run)
    n_obj = len(run.objectives)
    if len(trials) < 2:
        return Importance("none: fewer than two architectures completed", {})
    try:
        raw, method = _ped_anova(trials, n_obj), "PED-ANOVA (optuna.importance)"
    except (ValueError, RuntimeError, ZeroDivisionError):
        raw = _surrogate(trials, n_obj)
        method = (
            f"ridge regression on one-hot choices ({len(trials)} architectures: too few for "
            f"PED-ANOVA, which needs {MIN_PED_ANOVA})"
        )
    values = {}
    for o, imp in zip(run.objectives, raw, strict=True):
        pooled: dict[str, float] = {}
        for p, v in imp.items():
            pooled[choice_of(p)] = pooled.get(choice_of(p), 0.0) + v
        values[o] = {k: v for k, v in sorted(pooled.items(), key=lambda kv: -kv[1]) if v > 0}
    return Importance(method, values)


__all__ = [
    "Importance",
    "Progression",
    "choice_of",
    "completed",
    "diversity",
    "front_snapshots",
    "importance",
    "progression",
]
