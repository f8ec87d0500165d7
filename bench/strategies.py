"""Strategy benchmark on the tabular benchmark: every strategy searches by table lookup.

Each strategy proposes ``--budget`` architectures of the table's space, once per seed; a
proposal's objective values are looked up in the table instead of trained. After every trial the
hypervolume of the observations so far is computed, with every objective normalised by the
table's own min and max and the reference point at 1.1 in each normalised coordinate. Prints
JSON (the final hypervolume mean and std per strategy, and whether it beats random search) and
writes a PNG of hypervolume against trials with one-std bands.

    .venv/bin/python bench/strategies.py                               # wer:test and macs
    .venv/bin/python bench/strategies.py --objectives wer:test,params --budget 30 --seeds 10

Single-objective strategies (evolution, REINFORCE) minimise ``first + lam * sum(ln(others))``,
the runner's form of scalarisation; NSGA-II and TPE use the raw objectives.

While the table is incomplete the search still runs over the space, and a proposal missing from
the table counts as a failed trial (values None): it uses up budget like a crashed training
would, and strategies then avoid it as they avoid any tried architecture. Re-proposing instead
would hand the strategies the knowledge of which architectures are tabulated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechnas.search.pareto import hypervolume, normalize
from speechnas.search.strategies import STRATEGIES, Observation, make_strategy
from speechnas.space import Arch, SearchSpace

HERE = Path(__file__).resolve().parent
TABLE = HERE / "tabular" / "conformer64.json"
PLOT = HERE / "tabular" / "strategies.png"
REFERENCE = 1.1
# warmstart needs seed architectures from elsewhere (another study's front); not benchmarked here.
DEFAULT_STRATEGIES = [n for n in STRATEGIES if n != "warmstart"]


def load_table(path: Path, objectives: Sequence[str]) -> tuple[SearchSpace, dict[str, tuple]]:
    """The table's space and ``{arch key: objective values}`` for the rows that have metrics."""
    table = json.loads(path.read_text(encoding="utf-8"))
    space = SearchSpace.from_dict(table["space"])
    values: dict[str, tuple[float, ...]] = {}
    for row in table["rows"]:
        metrics = row.get("metrics")
        if not metrics:
            continue
        missing = [o for o in objectives if not isinstance(metrics.get(o), int | float)]
        if missing:
            numeric = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
            raise ValueError(f"objective {missing[0]!r} is not a numeric metric; have {numeric}")
        key = space.validate(Arch.from_json(row["arch"])).key()
        values[key] = tuple(float(metrics[o]) for o in objectives)
    if not values:
        raise ValueError(f"{path}: no row with metrics yet")
    return space, values


def scalarizer(lam: float):  # type: ignore[no-untyped-def]
    def scalarize(v: Sequence[float]) -> float:
        return v[0] + lam * sum(math.log(x) for x in v[1:])

    return scalarize


def search(
    name: str,
    space: SearchSpace,
    table: dict[str, tuple[float, ...]],
    *,
    seed: int,
    budget: int,
    lam: float,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[list[float], int]:
    """Hypervolume after each trial of one search, and the number of untabulated proposals."""
    m = len(lower)
    strategy = make_strategy(name, space, seed=seed, n_objectives=m, scalarize=scalarizer(lam))
    history: list[Observation] = []
    curve, missing = [], 0
    for i in range(budget):
        arch = strategy.propose(history, i)
        values = table.get(arch.key())
        missing += values is None
        history.append(Observation(arch, values))
        done = [o.values for o in history if o.values is not None]
        pts = normalize(done, lower, upper) if done else np.zeros((0, m))
        curve.append(hypervolume(pts, [REFERENCE] * m))
    return curve, missing


def plot(path: Path, results: dict[str, dict[str, Any]], best: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        mean, std = np.array(r["hv_mean"]), np.array(r["hv_std"])
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.axhline(best, color="k", linestyle="--", linewidth=1, label="table optimum")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--objectives", default="wer:test,macs", help="comma-separated metrics")
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    ap.add_argument("--budget", type=int, default=20, help="trials per search")
    ap.add_argument("--seeds", type=int, default=5, help="searches per strategy (seeds 0..N-1)")
    ap.add_argument("--lam", type=float, default=0.1, help="weight of ln(other objectives)")
    ap.add_argument("--plot", default=str(PLOT))
    args = ap.parse_args()
    objectives = [o for o in args.objectives.split(",") if o]
    names = [n for n in args.strategies.split(",") if n]
    bad = [n for n in names if n not in STRATEGIES]
    if bad:
        sys.exit(f"--strategies: {bad[0]!r} is not one of {sorted(STRATEGIES)}")
    if args.budget < 1 or args.seeds < 1:
        sys.exit("--budget and --seeds must be >= 1")

    try:
        space, table = load_table(Path(args.table), objectives)
    except ValueError as e:
        sys.exit(str(e))
    pts = np.array(list(table.values()))
    lower, upper = pts.min(axis=0), pts.max(axis=0)
    m = len(objectives)
    best = hypervolume(normalize(pts, lower, upper), [REFERENCE] * m)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        curves, missing = [], []
        for seed in range(args.seeds):
            curve, miss = search(
                name, space, table, seed=seed, budget=args.budget, lam=args.lam,
                lower=lower, upper=upper,
            )  # fmt: skip
            curves.append(curve)
            missing.append(miss)
        arr = np.array(curves)
        std = arr.std(axis=0, ddof=1) if args.seeds > 1 else np.zeros(args.budget)
        results[name] = {
            "final_hv_mean": float(arr[:, -1].mean()),
            "final_hv_std": float(std[-1]),
            "hv_mean": arr.mean(axis=0).round(5).tolist(),
            "hv_std": std.round(5).tolist(),
            "untabulated_proposals_mean": float(np.mean(missing)),
        }
        print(f"{name}: final HV {arr[:, -1].mean():.4f} ± {std[-1]:.4f}", file=sys.stderr)
    ref = results.get("random", {}).get("final_hv_mean")
    for r in results.values():
        r["beats_random"] = None if ref is None else r["final_hv_mean"] > ref
    report = {
        "table": str(args.table),
        "tabulated": len(table),
        "space_size": space.count(),
        "objectives": objectives,
        "bounds": {"lower": lower.tolist(), "upper": upper.tolist()},
        "reference": REFERENCE,
        "table_optimum_hv": best,
        "budget": args.budget,
        "seeds": args.seeds,
        "lam": args.lam,
        "std": "sample standard deviation over seeds",
        "strategies": {
            n: {k: r[k] for k in ("final_hv_mean", "final_hv_std", "beats_random")}
            | {"untabulated_proposals_mean": r["untabulated_proposals_mean"]}
            for n, r in results.items()
        },
        "curves": {n: {"mean": r["hv_mean"], "std": r["hv_std"]} for n, r in results.items()},
    }
    title = f"{' vs '.join(objectives)}: {len(table)}/{space.count()} archs, {args.seeds} seeds"
    plot(Path(args.plot), results, best, title)
    report["plot"] = str(args.plot)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
