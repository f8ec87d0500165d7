"""Search efficiency on the speech NAS benchmark table: the cost to reach 95% of the best
attainable hypervolume, per strategy, with and without screening.

The table (``bench/tabular/speech-ctc.json``, built by ``bench/speech_table.py``) holds
architectures trained to fixed step budgets. A simulated search proposes architectures and
looks their results up instead of training them; what a search spends is the **optimizer steps**
of the trainings it would have run (the table's top fidelity per evaluated proposal), so the
figures mean the same on any machine.

The table holds a sample of a large space, so a proposal is mapped to the tabulated
architecture nearest to it that the search has not tried yet: the architectures' encodings
(:func:`speechnas.search.wer_predictor.encode`), standardized per column, by Euclidean distance.
``random`` draws uniformly from the untried rows instead (random search over the table itself,
the baseline of the cost ratio). With ``--screen`` every strategy's proposals also pass the
search's screen (:mod:`speechnas.search.screen`): a screened proposal costs nothing, is counted
as tried, and the strategy proposes again.

The best attainable hypervolume is that of every tabulated architecture (objectives normalised
by the table's own minimum and maximum, reference 1.1). A search runs until every row is tried,
so each one reaches it; the cost to 95% is the steps spent when its hypervolume first reaches
0.95 of it. Prints JSON and a table; writes a PNG of hypervolume against steps (mean over seeds).

    .venv/bin/python bench/table_search.py --seeds 10
    .venv/bin/python bench/table_search.py --objectives dev_wer,params --strategies random,predictor
    .venv/bin/python bench/table_search.py --objectives dev_wer,latency_ratio   # once timed
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from speechnas.search.config import ScreenConfig
from speechnas.search.pareto import hypervolume, normalize
from speechnas.search.screen import Screen, Trained
from speechnas.search.strategies import STRATEGIES, Observation, make_strategy
from speechnas.search.wer_predictor import encode
from speechnas.space import Arch, SearchSpace

HERE = Path(__file__).resolve().parent
TABLE = HERE / "tabular" / "speech-ctc.json"
LATENCY = HERE / "tabular" / "speech-ctc-latency.json"
PLOT = HERE / "tabular" / "table-search.png"
REFERENCE = 1.1
VOCAB = 64
DEFAULT_STRATEGIES = "random,evolution,tpe,nsga2,reinforce,predictor"


class Tabulated:
    """The table's complete seed-0 rows: objective values, predicted metrics, encodings."""

    def __init__(self, path: Path, objectives: list[str], latency: Path | None = None) -> None:
        table = json.loads(path.read_text(encoding="utf-8"))
        timed = {}
        if latency is not None and latency.is_file():
            timed = json.loads(latency.read_text(encoding="utf-8"))["archs"]
        self.skipped = 0  # complete rows without every objective (not timed yet, say)
        self.space = SearchSpace.from_dict(table["space"])
        top = str(table["steps"][-1])
        self.steps = int(top)
        self.archs: list[Arch] = []
        self.values: list[tuple[float, ...]] = []
        self.known: list[dict[str, float]] = []
        for row in table["rows"]:
            fid = row["fidelities"].get(top)
            if row["seed"] != 0 or row["error"] or fid is None:
                continue
            metrics = {**fid, "params": row["params"], "macs": row["macs"]}
            if row["hash"] in timed:
                t = timed[row["hash"]]
                metrics |= {"latency": t["measured_ms"], "latency_ratio": t["ratio_to_reference"],
                            "latency_predicted": t["predicted_ms"]}  # fmt: skip
            if any(not isinstance(metrics.get(o), int | float) for o in objectives):
                self.skipped += 1
                continue
            self.archs.append(self.space.validate(Arch.from_json(row["arch"])))
            self.values.append(tuple(float(metrics[o]) for o in objectives))
            # what a search knows before training: size, and latency (the screen's name for
            # whichever latency metric is an objective here)
            known = {"params": row["params"], "macs": row["macs"]}
            for o in objectives:
                if o.startswith("latency"):
                    known["latency"] = metrics[o]
            self.known.append(known)
        if len(self.archs) < 2:
            raise ValueError(
                f"{path}: {len(self.archs)} complete rows with {objectives} (metrics: dev_wer, "
                "wer:TEST, cer:TEST, params, macs; latency, latency_ratio and latency_predicted "
                "once timed by bench/speech_table.py --latency); at least 2 are needed"
            )
        self.index = {a.key(): i for i, a in enumerate(self.archs)}
        x = np.stack([self._row(a) for a in self.archs])
        self.mean, self.scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        self.scale[~(self.scale > 0)] = 1.0
        self.z = self._z(x)
        pts = np.array(self.values)
        self.lower, self.upper = pts.min(axis=0), pts.max(axis=0)
        self.best = self.hv(range(len(self.archs)))

    def _row(self, arch: Arch) -> np.ndarray:
        return encode(arch, self.space, vocab_size=VOCAB)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return np.nan_to_num((x - self.mean) / self.scale)  # inactive choice: the mean

    def nearest(self, arch: Arch, tried: set[int]) -> int:
        """The untried row of ``arch`` itself, else the untried row nearest to it."""
        i = self.index.get(arch.key())
        if i is not None and i not in tried:
            return i
        d = np.linalg.norm(self.z - self._z(self._row(arch)[None, :]), axis=1)
        d[list(tried)] = np.inf
        return int(np.argmin(d))

    def hv(self, rows: Any) -> float:
        pts = [self.values[i] for i in rows]
        if not pts:
            return 0.0
        m = len(self.lower)
        return hypervolume(normalize(pts, self.lower, self.upper), [REFERENCE] * m)


def search(tab: Tabulated, name: str, seed: int, objectives: list[str],
           screen_cfg: ScreenConfig | None) -> dict[str, Any]:  # fmt: skip
    """One search until every row is tried: steps and hypervolume after each evaluation."""
    import random

    rng = random.Random(seed)
    m = len(objectives)
    strategy = None
    if name != "random":
        strategy = make_strategy(
            name, tab.space, seed=seed, n_objectives=m,
            scalarize=lambda v: v[0] + 0.1 * sum(math.log(max(x, 1e-9)) for x in v[1:]),
        )  # fmt: skip
    history: list[Observation] = []
    tried: set[int] = set()
    evaluated: list[int] = []
    steps, curve, screened, proposal = [], [], 0, 0
    spent = 0
    while len(tried) < len(tab.archs):
        screen = None
        if screen_cfg is not None:
            names = ["latency" if o.startswith("latency") else o for o in objectives]
            screen = Screen(screen_cfg, objectives=names, space=tab.space,
                            vocab_size=VOCAB, seed=seed + proposal)  # fmt: skip
            trained = [Trained(i, tab.archs[i], tab.values[i]) for i in evaluated]
            if not screen.fit(trained):
                screen = None
        for attempt in range(1 + (screen_cfg.max_screened if screen else 0)):
            if strategy is None:
                i = rng.choice([k for k in range(len(tab.archs)) if k not in tried])
            else:
                i = tab.nearest(strategy.propose(history, proposal), tried)
            last = attempt == (screen_cfg.max_screened if screen else 0)
            verdict = None if screen is None or last else screen.judge(tab.archs[i], tab.known[i])
            tried.add(i)
            if verdict is None:
                break
            screened += 1
            history.append(Observation(tab.archs[i], None))
            if len(tried) == len(tab.archs):
                break
        if verdict is not None:  # the table ran out while screening
            break
        evaluated.append(i)
        history.append(Observation(tab.archs[i], tab.values[i]))
        spent += tab.steps
        steps.append(spent)
        curve.append(tab.hv(evaluated))
        proposal += 1
    target = 0.95 * tab.best
    reach = next((s for s, h in zip(steps, curve, strict=True) if h >= target), None)
    return {"steps": steps, "hv": curve, "screened": screened, "cost_to_95": reach,
            "trained_to_95": None if reach is None else reach // tab.steps}  # fmt: skip


_TABLES: dict[tuple[str, tuple[str, ...]], Tabulated] = {}


def _one(path: str, latency: str, objectives: list[str], name: str, seed: int,
         screen_cfg: ScreenConfig | None) -> dict[str, Any]:  # fmt: skip
    """One search in a worker process (the table loaded once per process)."""
    key = (path, tuple(objectives))
    if key not in _TABLES:
        _TABLES[key] = Tabulated(Path(path), objectives, Path(latency))
    return search(_TABLES[key], name, seed, objectives, screen_cfg)


def plot(path: Path, runs: dict[str, list[dict[str, Any]]], best: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, rs in runs.items():
        n = min(len(r["hv"]) for r in rs)
        arr = np.array([r["hv"][:n] for r in rs])
        x = np.array(rs[0]["steps"][:n]) / 1000
        ax.plot(x, arr.mean(axis=0), label=name)
        ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), alpha=0.12)
    ax.axhline(0.95 * best, color="k", linestyle="--", linewidth=1, label="95% of the table's")
    ax.set_xlabel("thousand optimizer steps trained")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--latency", default=str(LATENCY), help="bench/speech_table.py --latency")
    ap.add_argument("--objectives", default="dev_wer,params", help="comma-separated metrics")
    ap.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    ap.add_argument("--seeds", type=int, default=10, help="searches per strategy (0..N-1)")
    ap.add_argument("--screen", choices=("off", "on", "both"), default="both")
    ap.add_argument("--min-history", type=int, default=8, help="of the screen")
    ap.add_argument("--confidence", type=float, default=0.9, help="of the screen")
    ap.add_argument("--workers", type=int, default=2, help="searches at a time")
    ap.add_argument("--plot", default=str(PLOT))
    args = ap.parse_args()
    objectives = [o for o in args.objectives.split(",") if o]
    names = [n for n in args.strategies.split(",") if n]
    bad = [n for n in names if n not in STRATEGIES or n == "warmstart"]
    if bad:
        sys.exit(
            f"--strategies: {bad[0]!r} is not one of {sorted(set(STRATEGIES) - {'warmstart'})}"
        )
    if args.seeds < 1:
        sys.exit("--seeds: expected >= 1")
    try:
        tab = Tabulated(Path(args.table), objectives, Path(args.latency))
        screen_cfg = ScreenConfig(confidence=args.confidence, min_history=args.min_history)
    except ValueError as e:
        sys.exit(str(e))
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.screen]
    jobs = [(name, on, seed) for name in names for on in modes for seed in range(args.seeds)]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        done = pool.starmap(_one, [(args.table, args.latency, objectives, n, s,
                                    screen_cfg if on else None) for n, on, s in jobs])  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {}
    for (name, on, _), r in zip(jobs, done, strict=True):
        runs.setdefault(f"{name}+screen" if on else name, []).append(r)
    random_cost = (
        statistics.mean(r["cost_to_95"] for r in runs["random"]) if "random" in runs else None
    )
    summary: dict[str, Any] = {}
    for label, rs in runs.items():
        costs = [r["cost_to_95"] for r in rs]
        mean = statistics.mean(costs)
        summary[label] = {
            "cost_to_95_steps_mean": mean,
            "cost_to_95_steps_sd": statistics.stdev(costs) if len(costs) > 1 else 0.0,
            "trained_to_95_mean": statistics.mean(r["trained_to_95"] for r in rs),
            "screened_mean": statistics.mean(r["screened"] for r in rs),
            "ratio_to_random": None if random_cost is None else mean / random_cost,
        }
    report = {
        "table": args.table,
        "tabulated": len(tab.archs),
        "rows_without_an_objective": tab.skipped,
        "steps_per_training": tab.steps,
        "objectives": objectives,
        "best_hv": tab.best,
        "seeds": args.seeds,
        "screen": {"confidence": args.confidence, "min_history": args.min_history},
        "strategies": summary,
    }
    title = f"{' vs '.join(objectives)}: {len(tab.archs)} tabulated archs, {args.seeds} seeds"
    plot(Path(args.plot), runs, tab.best, title)
    report["plot"] = args.plot
    print(json.dumps(report, indent=1))
    t = Table(title=f"steps to 95% of the best hypervolume ({len(tab.archs)} architectures)")
    for c in ("search", "steps to 95% (mean ± sd)", "trainings", "screened", "/ random"):
        t.add_column(c, justify="right")
    for label, s in summary.items():
        ratio = s["ratio_to_random"]
        t.add_row(label, f"{s['cost_to_95_steps_mean']:,.0f} ± {s['cost_to_95_steps_sd']:,.0f}",
                  f"{s['trained_to_95_mean']:.1f}", f"{s['screened_mean']:.1f}",
                  "-" if ratio is None else f"{ratio:.2f}")  # fmt: skip
    Console(stderr=True).print(t)


if __name__ == "__main__":
    main()
