"""What a search produced: per-architecture results, the Pareto front, the hypervolume over
time, the choice for a deployment target, and retraining it at full budget."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechnas.search.objectives import CONSTRAINT_KEYS, LIMITS, is_error_rate
from speechnas.search.pareto import hypervolume, non_dominated_sort, normalize
from speechnas.search.study import SearchStudy, arch_of, jsonable, values_of
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial
    from rich.table import Table

    from speechnas.train.config import TrainConfig


@dataclass(frozen=True, slots=True)
class Result:
    """One architecture's result at the highest fidelity it completed."""

    arch: Arch
    key: str
    trial: int  # the trial the values come from
    rung: int
    fidelity: dict[str, Any]
    values: tuple[float, ...]
    metrics: dict[str, Any]
    trials: tuple[int, ...]  # every completed trial of this architecture
    output_dir: str | None

    def metric(self, name: str) -> float:
        v = self.metrics.get(name)
        return math.nan if v is None else float(v)

    def to_dict(self, objectives: Sequence[str]) -> dict[str, Any]:
        return {
            "key": self.key,
            "trial": self.trial,
            "trials": list(self.trials),
            "rung": self.rung,
            "fidelity": self.fidelity,
            "objectives": dict(zip(objectives, self.values, strict=True)),
            "metrics": self.metrics,
            "arch": self.arch.to_json(),
            "output_dir": self.output_dir,
        }


def _trials(source: optuna.Study | SearchStudy | Sequence[FrozenTrial]) -> list[FrozenTrial]:
    if isinstance(source, SearchStudy):
        return source.trials()
    if hasattr(source, "get_trials"):
        return source.get_trials(deepcopy=False)  # type: ignore[union-attr]
    return list(source)  # type: ignore[arg-type]


def results(source: optuna.Study | SearchStudy | Sequence[FrozenTrial]) -> list[Result]:
    """One :class:`Result` per architecture with a completed trial: the one at its highest rung
    (the latest among equals), ordered by that trial's number."""
    by_key: dict[str, list[FrozenTrial]] = {}
    for t in _trials(source):
        if values_of(t) is not None and "arch_key" in t.user_attrs:
            by_key.setdefault(t.user_attrs["arch_key"], []).append(t)
    out = []
    for key, ts in by_key.items():
        best = max(ts, key=lambda t: (t.user_attrs.get("rung", 0), t.number))
        a = best.user_attrs
        arch = arch_of(best)
        assert arch is not None
        out.append(
            Result(
                arch=arch,
                key=key,
                trial=best.number,
                rung=int(a.get("rung", 0)),
                fidelity=dict(a.get("fidelity", {})),
                values=values_of(best) or (),
                metrics=dict(a.get("metrics", {})),
                trials=tuple(t.number for t in ts),
                output_dir=a.get("output_dir"),
            )
        )
    return sorted(out, key=lambda r: r.trial)


def front(rows: Sequence[Result]) -> list[Result]:
    """The non-dominated rows, ordered by their first objective."""
    if not rows:
        return []
    first = non_dominated_sort([r.values for r in rows])[0]
    return sorted((rows[i] for i in first), key=lambda r: (r.values, r.trial))


def pareto_front(source: optuna.Study | SearchStudy | Sequence[FrozenTrial]) -> list[Result]:
    """The Pareto front over the study's objectives, each architecture at its highest
    fidelity."""
    return front(results(source))


def reference_point(
    objectives: Sequence[str],
    rows: Sequence[Result],
    *,
    given: Mapping[str, float] | None = None,
    constraints: Mapping[str, float | None] | None = None,
) -> tuple[float, ...]:
    """The hypervolume reference, per objective: the configured value; else 1.0 for an error
    rate (100 %); else the constraint's limit on that metric; else 1.1 × the largest value
    observed (data-dependent: it can move as the study grows)."""
    given = given or {}
    limits = {LIMITS[k][0]: v for k, v in (constraints or {}).items() if v is not None}
    ref = []
    for i, o in enumerate(objectives):
        if o in given:
            ref.append(float(given[o]))
        elif is_error_rate(o):
            ref.append(1.0)
        elif o in limits:
            ref.append(float(limits[o]))
        else:
            ref.append(1.1 * max((r.values[i] for r in rows), default=1.0))
    return tuple(ref)


def normalized_hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume of ``points`` in the box [0, reference], scaled to [0, 1]."""
    if not points:
        return 0.0
    m = len(reference)
    return hypervolume(normalize(points, [0.0] * m, reference), [1.0] * m)


def hypervolume_series(
    source: optuna.Study | SearchStudy | Sequence[FrozenTrial], reference: Sequence[float]
) -> list[dict[str, Any]]:
    """The normalised hypervolume after every completed trial, in completion order, of the
    results known at that moment (each architecture at its highest fidelity so far)."""
    trials = [t for t in _trials(source) if values_of(t) is not None]
    trials.sort(key=lambda t: (t.datetime_complete, t.number))
    start = min((t.datetime_start for t in _trials(source) if t.datetime_start), default=None)
    out = []
    for k, t in enumerate(trials):
        rows = results(trials[: k + 1])
        hv = normalized_hypervolume([r.values for r in rows], reference)
        minutes = (t.datetime_complete - start).total_seconds() / 60 if start else 0.0
        out.append({"trial": t.number, "completed": k + 1, "minutes": minutes, "hv": hv})
    return out


def select_for_target(
    source: optuna.Study | SearchStudy | Sequence[FrozenTrial] | Sequence[Result],
    *,
    prefer: str = "wer:test",
    **constraints: float | None,
) -> Result:
    """The architecture that meets every given limit (``max_latency_ms``, ``max_params``...:
    any of :data:`CONSTRAINT_KEYS`) with the lowest ``prefer`` metric, taken among those that
    reached the highest rung any of them reached (a result after more training is the more
    reliable). A ValueError lists the closest candidates when none qualifies."""
    rows = list(source) if _is_results(source) else results(source)  # type: ignore[arg-type]
    unknown = sorted(set(constraints) - set(CONSTRAINT_KEYS))
    if unknown:
        raise ValueError(f"select_for_target: unknown limits {unknown}; known: {CONSTRAINT_KEYS}")
    limits = {k: float(v) for k, v in constraints.items() if v is not None}
    if not rows:
        raise ValueError("no completed architecture to select from")
    if any(not math.isfinite(r.metric(prefer)) for r in rows):
        known = sorted({k for r in rows for k in r.metrics})
        raise ValueError(f"prefer: {prefer!r} is not a metric of every result; metrics: {known}")

    def excess(r: Result) -> float:
        return sum(max(0.0, r.metric(LIMITS[k][0]) / v - 1.0) for k, v in limits.items() if v > 0)

    ok = [r for r in rows if excess(r) == 0.0]
    if not ok:
        closest = sorted(rows, key=lambda r: (excess(r), r.metric(prefer)))[:3]
        lines = "; ".join(
            f"trial {r.trial} ({', '.join(_describe(r, k) for k in limits)})" for r in closest
        )
        want = ", ".join(f"{k}={v:g}" for k, v in limits.items())
        raise ValueError(f"no architecture meets {want}; closest: {lines}")
    top = max(r.rung for r in ok)
    return min((r for r in ok if r.rung == top), key=lambda r: (r.metric(prefer), r.trial))


def _is_results(source: Any) -> bool:
    return isinstance(source, Sequence) and bool(source) and isinstance(source[0], Result)


def _describe(r: Result, constraint: str) -> str:
    metric, label, unit = LIMITS[constraint]
    return f"{label} {r.metric(metric):.4g}{unit}"


def retrain(
    arch: Arch,
    base: TrainConfig,
    minutes: float,
    output_dir: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    threads: int | None = None,
    init_from: str | None = None,
) -> dict[str, Any]:
    """Trains ``arch`` on all the training data for ``minutes`` (from scratch, or from the
    checkpoint ``init_from`` of the same architecture) and scores every test set of ``base``.
    The model is a normal checkpoint folder, ``output_dir/best``
    (``speechnas.train.checkpoint.load_model``, ``speechnas evaluate``). Returns the trial
    metrics plus ``checkpoint``."""
    if threads is not None:
        base = base.replace(threads=threads)
    base = base.replace(data=dataclasses.replace(base.data, fraction=1.0), init_from=init_from)
    fid = Fidelity(minutes, 1.0, steps)
    metrics = run_trial(arch, base=base, fidelity=fid, output_dir=output_dir, seed=seed, plots=True)
    return {**metrics, "checkpoint": str(Path(output_dir) / "best")}


def front_table(rows: Sequence[Result], objectives: Sequence[str], title: str) -> Table:
    """A rich table of front rows: trial, rung, key, objectives, params, MACs."""
    from rich.table import Table

    table = Table(title=title)
    extra = [c for c in ("params", "macs") if c not in objectives]  # unless shown already
    for col in ("trial", "rung", "arch", *objectives, *extra):
        table.add_column("MMACs" if col == "macs" else col,
                         justify="left" if col == "arch" else "right")  # fmt: skip
    for r in rows:
        vals = [format_value(o, v) for o, v in zip(objectives, r.values, strict=True)]
        more = [f"{r.metric('params'):,.0f}" if c == "params" else f"{r.metric('macs') / 1e6:.1f}"
                for c in extra]  # fmt: skip
        table.add_row(str(r.trial), str(r.rung), r.key[:8], *vals, *more)
    return table


def format_value(objective: str, v: float) -> str:
    if is_error_rate(objective):
        return f"{100 * v:.2f}%"
    if objective == "latency":
        return f"{v:.2f} ms"
    if objective == "memory":
        return f"{v:.2f} MB"
    if objective == "mcd":
        return f"{v:.2f} dB"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def write_pareto_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(jsonable(payload), indent=1, default=str, allow_nan=False))
    return path


__all__ = [
    "Result",
    "front",
    "front_table",
    "hypervolume_series",
    "normalized_hypervolume",
    "pareto_front",
    "reference_point",
    "results",
    "retrain",
    "select_for_target",
    "write_pareto_json",
]
