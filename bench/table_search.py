"""Search efficiency on the speech NAS benchmark table: the cost to reach 95% (``--share``) of
the best attainable hypervolume, per strategy, with and without screening.

The table (``bench/tabular/speech-ctc.json``, built by ``bench/speech_table.py``) holds
architectures trained to fixed step budgets. A simulated search proposes architectures and
looks their results up instead of training them; what a search spends is the **optimizer steps**
of the trainings it would have run (the table's top fidelity per evaluated proposal), so the
figures mean the same on any machine.

The table holds a sample of a large space, so a proposal is mapped to the tabulated
architecture nearest to it that the search has not tried yet: the architectures' encodings
(:func:`speechnas.search.wer_predictor.encode`), standardized per column, by Euclidean distance.
``random`` draws uniformly from the untried rows instead (random search over the table itself,
the baseline of the cost ratio). ``--draw choice`` (or ``both``) makes the strategies with a
``draw`` option (evolution, predictor) draw their fresh proposals choice by choice rather than
uniformly over the space's architectures (:meth:`speechnas.space.SearchSpace.sample`). With
``--screen`` every strategy's proposals also pass the search's screen
(:mod:`speechnas.search.screen`): a screened proposal costs nothing, is counted as tried, and
the strategy proposes again. With ``--halving C,ETA`` the search is successive
halving over the table's fidelities, as the real search runs: C proposals at the lowest, the
best 1/ETA of them (by dev WER) continued to each next fidelity, paying only the extra steps;
``--rank-by predicted`` ranks them by dev WER predicted at the top fidelity instead
(:mod:`speechnas.search.promote`'s rule and predictor: boosted trees over the encoding and the
lower dev WER, fitted on the rows trained to both, from 5 of them). Then a search may end short
of the target.

The best attainable hypervolume is that of every tabulated architecture (objectives normalised
by the table's own minimum and maximum, reference 1.1). A search runs until every row is tried,
so each one reaches it; the cost is the steps spent when its hypervolume first reaches
``--share`` (0.95; several shares give a table each from the same searches) of it. The JSON
keeps each seed's cost, and each strategy is tested against random search (Mann-Whitney U over
the seeds) and, with the screen, against itself without it (Wilcoxon signed-rank, paired by
seed: :func:`against`). With
min-max normalisation a handful of good rows already give most of the hypervolume, so a higher
share (0.99) separates the strategies more. The last row is
the fewest trainings any search needs to reach the share (:func:`fewest_to_share`): no
strategy's cost ratio to random search can be lower than that row's. Prints JSON and a table;
writes a PNG of hypervolume against steps (mean over seeds).

    .venv/bin/python bench/table_search.py --seeds 10
    .venv/bin/python bench/table_search.py --objectives dev_wer,params --strategies random,predictor
    .venv/bin/python bench/table_search.py --objectives dev_wer,latency_ratio   # once timed
    .venv/bin/python bench/table_search.py --halving 9,3 --rank-by both --share 0.99
    .venv/bin/python bench/table_search.py --strategies random,predictor --screen off \
        --share 0.95 0.99
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from speechnas.search.config import ScreenConfig
from speechnas.search.fidelity import rung_sizes
from speechnas.search.pareto import hypervolume, normalize, pareto_front
from speechnas.search.promote import fit_top_predictor
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
        self.fidelities = [int(f) for f in table["steps"]]
        self.curves: list[list[float | None]] = []  # dev WER at each fidelity
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
            self.curves.append(
                [row["fidelities"].get(str(f), {}).get("dev_wer") for f in self.fidelities]
            )
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

    def at(self, i: int, rung: int) -> tuple[float, ...]:
        """Row ``i``'s objective values after training to fidelity ``rung``: dev WER from its
        curve (the only error rate the table has below the top), the rest as at the top."""
        if rung == len(self.fidelities) - 1:
            return self.values[i]
        wer = self.curves[i][rung]
        assert wer is not None
        return (wer, *self.values[i][1:])

    def hv(self, rows: Any) -> float:
        pts = [self.values[i] for i in rows]
        if not pts:
            return 0.0
        m = len(self.lower)
        return hypervolume(normalize(pts, self.lower, self.upper), [REFERENCE] * m)


@dataclass
class Halving:
    """Successive halving over the table's fidelities: ``candidates`` proposals at the lowest,
    the best ``1/eta`` promoted to each next one (paying only the extra steps), ranked by dev
    WER observed at their rung or (``predicted``) by dev WER predicted at the top one."""

    candidates: int
    eta: int
    rank_by: str = "observed"


class Proposer:
    """A strategy's (or uniform) proposals mapped to untried rows, screened when asked."""

    def __init__(self, tab: Tabulated, name: str, seed: int, objectives: list[str],
                 screen_cfg: ScreenConfig | None, draw: str = "architecture") -> None:  # fmt: skip
        import random

        self.tab, self.seed, self.screen_cfg = tab, seed, screen_cfg
        self.rng = random.Random(seed)
        self.names = ["latency" if o.startswith("latency") else o for o in objectives]
        self.strategy = None
        if name != "random":
            options = {"draw": draw} if "draw" in STRATEGIES[name].defaults else {}
            self.strategy = make_strategy(
                name, tab.space, seed=seed, n_objectives=len(objectives),
                scalarize=lambda v: v[0] + 0.1 * sum(math.log(max(x, 1e-9)) for x in v[1:]),
                **options,
            )  # fmt: skip
        self.history: list[Observation] = []
        self.tried: set[int] = set()
        self.screened = 0
        self.proposals = 0

    def left(self) -> bool:
        return len(self.tried) < len(self.tab.archs)

    def next(self, trained: list[Trained]) -> int | None:
        """The next row to train (None: the table ran out while screening); ``trained``: what
        the screen learns from."""
        tab, cfg = self.tab, self.screen_cfg
        screen = None
        if cfg is not None:
            screen = Screen(cfg, objectives=self.names, space=tab.space, vocab_size=VOCAB,
                            seed=self.seed + self.proposals)  # fmt: skip
            if not screen.fit(trained):
                screen = None
        skips = cfg.max_screened if screen is not None and cfg is not None else 0
        for attempt in range(skips + 1):
            if self.strategy is None:
                i = self.rng.choice([k for k in range(len(tab.archs)) if k not in self.tried])
            else:
                i = tab.nearest(self.strategy.propose(self.history, self.proposals), self.tried)
            self.tried.add(i)
            if (
                screen is None
                or attempt == skips
                or screen.judge(tab.archs[i], tab.known[i]) is None
            ):
                self.proposals += 1
                return i
            self.screened += 1
            self.history.append(Observation(tab.archs[i], None))
            if not self.left():
                return None
        raise AssertionError("unreachable")

    def tell(self, i: int, values: tuple[float, ...], rung: int) -> None:
        self.history.append(Observation(self.tab.archs[i], values, rung))


def search(
    tab: Tabulated,
    name: str,
    seed: int,
    objectives: list[str],
    screen_cfg: ScreenConfig | None,
    halving: Halving | None = None,
    share: float | tuple[float, ...] = 0.95,
    draw: str = "architecture",
) -> dict[str, Any]:
    """One search until every row is tried: steps spent and hypervolume (of the rows trained
    to the top fidelity) after each top-fidelity result."""
    prop = Proposer(tab, name, seed, objectives, screen_cfg, draw)
    top = len(tab.fidelities) - 1
    done: list[int] = []  # rows trained to the top fidelity
    steps, curve = [], []
    spent = 0

    def reached(i: int) -> None:
        done.append(i)
        steps.append(spent)
        curve.append(tab.hv(done))

    if halving is None:
        while prop.left():
            i = prop.next([Trained(k, tab.archs[k], tab.values[k]) for k in done])
            if i is None:
                break
            spent += tab.steps
            prop.tell(i, tab.values[i], top)
            reached(i)
    else:
        sizes = rung_sizes(halving.candidates, halving.eta, len(tab.fidelities))
        at: list[list[int]] = [[] for _ in tab.fidelities]  # rows trained to each fidelity
        while prop.left():
            bracket: list[int] = []
            while len(bracket) < sizes[0] and prop.left():
                i = prop.next([Trained(k, tab.archs[k], tab.at(k, 0)) for k in at[0]])
                if i is None:
                    break
                spent += tab.fidelities[0]
                bracket.append(i)
                at[0].append(i)
                prop.tell(i, tab.at(i, 0), 0)
            for r in range(1, len(sizes)):
                bracket = _promote(tab, bracket, r, at, halving, seed)[: sizes[r]]
                for i in bracket:
                    spent += tab.fidelities[r] - tab.fidelities[r - 1]
                    at[r].append(i)
                    prop.tell(i, tab.at(i, r), r)
                    if r == top:
                        reached(i)
    shares = (share,) if isinstance(share, float | int) else tuple(share)
    by_share = {}
    for sh in shares:
        target = sh * tab.best
        reach = next((s for s, h in zip(steps, curve, strict=True) if h >= target), None)
        by_share[sh] = {
            "cost": reach,
            "trained": None if reach is None else sum(1 for s in steps if s <= reach),
        }
    first = by_share[shares[0]]
    return {"steps": steps, "hv": curve, "screened": prop.screened, "cost": first["cost"],
            "trained": first["trained"], "by_share": by_share,
            "total_steps": spent}  # fmt: skip


#: subsets :func:`fewest_to_share` tries per size before it settles for a greedy choice
EXACT_LIMIT = 300_000


def fewest_to_share(tab: Tabulated, share: float) -> dict[str, Any]:
    """The fewest rows any search must train to the top fidelity for its hypervolume to reach
    ``share`` of the best: a bound on every strategy's cost (no search does with fewer), hence
    on the cost ratio to random search any strategy can reach on this table. The subsets of the
    Pareto front are tried size by size (only front rows can be in the smallest subset: a
    dominated row adds nothing its dominator does not); past :data:`EXACT_LIMIT` subsets of
    a size, rows are added greedily by hypervolume gain instead, which can only overstate
    the count (``exact`` says which)."""
    front = pareto_front(tab.values)
    target = share * tab.best - 1e-12
    for k in range(1, len(front) + 1):
        if math.comb(len(front), k) > EXACT_LIMIT:
            break
        best = max(itertools.combinations(front, k), key=tab.hv)
        if tab.hv(best) >= target:
            return {"rows": list(best), "trainings": k, "steps": k * tab.steps, "exact": True}
    chosen: list[int] = []
    while tab.hv(chosen) < target:
        chosen.append(max((i for i in front if i not in chosen),
                          key=lambda i: tab.hv([*chosen, i])))  # fmt: skip
    return {"rows": chosen, "trainings": len(chosen), "steps": len(chosen) * tab.steps,
            "exact": False}  # fmt: skip


def _promote(tab: Tabulated, rows: list[int], rung: int, at: list[list[int]], halving: Halving,
             seed: int) -> list[int]:  # fmt: skip
    """``rows`` (trained to ``rung - 1``) best first, by their dev WER there or, predicted,
    at the top fidelity: trees fitted on the rows trained to both (architecture encoding and
    the lower dev WER), once 5 such rows exist."""
    low = rung - 1
    observed = [tab.curves[i][low] for i in rows]
    key = observed
    top = len(tab.fidelities) - 1
    reached = set(at[top])
    pairs = [i for i in at[low] if i in reached]
    if halving.rank_by == "predicted" and len(pairs) >= 5 and rows:

        def x(idx: list[int]) -> np.ndarray:
            enc = np.stack([tab._row(tab.archs[i]) for i in idx])
            return np.column_stack([enc, [tab.curves[i][low] for i in idx]])

        targets = [tab.curves[i][top] for i in pairs]
        model, _ = fit_top_predictor(x(pairs), targets, seed=seed)
        key = list(model.predict(x(rows)).median)
    order = sorted(range(len(rows)), key=lambda k: (key[k], k))
    return [rows[k] for k in order]


_TABLES: dict[tuple[str, tuple[str, ...]], Tabulated] = {}


def _one(path: str, latency: str, objectives: list[str], name: str, seed: int,
         screen_cfg: ScreenConfig | None, halving: Halving | None,
         share: tuple[float, ...], draw: str) -> dict[str, Any]:  # fmt: skip
    """One search in a worker process (the table loaded once per process)."""
    key = (path, tuple(objectives))
    if key not in _TABLES:
        _TABLES[key] = Tabulated(Path(path), objectives, Path(latency))
    return search(_TABLES[key], name, seed, objectives, screen_cfg, halving, share, draw) | {
        "seed": seed
    }


def plot(path: Path, runs: dict[str, list[dict[str, Any]]], best: float, title: str,
         share: float) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, rs in runs.items():
        grid = np.array(sorted({x for r in rs for x in r["steps"]}))
        if not len(grid):
            continue
        # each run's hypervolume as a step function of the steps spent, on a common grid
        arr = np.array([
            [max((h for x, h in zip(r["steps"], r["hv"], strict=True) if x <= g), default=0.0)
             for g in grid] for r in rs
        ])  # fmt: skip
        ax.plot(grid / 1000, arr.mean(axis=0), label=name)
        ax.fill_between(grid / 1000, arr.min(axis=0), arr.max(axis=0), alpha=0.12)
    ax.axhline(share * best, color="k", linestyle="--", linewidth=1,
               label=f"{100 * share:g}% of the table's")  # fmt: skip
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
    ap.add_argument(
        "--halving",
        default="",
        help="CANDIDATES,ETA: successive halving over "
        "the table's fidelities (e.g. 9,3); default: every proposal to the top",
    )
    ap.add_argument(
        "--rank-by",
        choices=("observed", "predicted", "both"),
        default="both",
        help="--halving: promotion by observed or predicted dev WER",
    )
    ap.add_argument("--share", type=float, nargs="+", default=[0.95],
                    help="the shares of the best hypervolume whose cost is reported (one "
                    "table each, from the same searches; the plot marks the first)")  # fmt: skip
    ap.add_argument("--draw", choices=("architecture", "choice", "both"), default="architecture",
                    help="how the strategies with a draw option (evolution, predictor) draw "
                    "fresh proposals: uniform over architectures or per choice")  # fmt: skip
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
    if bad_share := [s for s in args.share if not 0.0 < s <= 1.0]:
        sys.exit(f"--share: expected in (0, 1], got {bad_share[0]}")
    try:
        tab = Tabulated(Path(args.table), objectives, Path(args.latency))
        screen_cfg = ScreenConfig(confidence=args.confidence, min_history=args.min_history)
    except ValueError as e:
        sys.exit(str(e))
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.screen]
    halving = None
    ranks: list[str | None] = [None]
    if args.halving:
        try:
            cand, eta = (int(v) for v in args.halving.split(","))
        except ValueError:
            sys.exit(f"--halving: expected CANDIDATES,ETA such as 9,3, got {args.halving!r}")
        if objectives[0] != "dev_wer" or any(o.startswith(("wer", "cer")) for o in objectives):
            sys.exit("--halving: the table has only dev_wer below its top fidelity; make it the "
                     "first objective and the only error rate")  # fmt: skip
        if len(rung_sizes(cand, eta, len(tab.fidelities))) < len(tab.fidelities):
            sys.exit(f"--halving: {cand} candidates at eta {eta} do not reach the top fidelity")
        halving = Halving(cand, eta)
        ranks = {"observed": ["observed"], "predicted": ["predicted"],
                 "both": ["observed", "predicted"]}[args.rank_by]  # fmt: skip
    draws = ["architecture", "choice"] if args.draw == "both" else [args.draw]

    def drawn(n: str) -> bool:  # whether --draw applies (random here draws the table's rows)
        return n != "random" and "draw" in STRATEGIES[n].defaults

    jobs = [
        (n, on, rb, dr, sd) for n in names for on in modes for rb in ranks
        for dr in (draws if drawn(n) else draws[:1]) for sd in range(args.seeds)
    ]  # fmt: skip
    work = [
        (args.table, args.latency, objectives, n, sd, screen_cfg if on else None,
         None if halving is None else Halving(halving.candidates, halving.eta, rb or "observed"),
         tuple(args.share), dr)
        for n, on, rb, dr, sd in jobs
    ]  # fmt: skip
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        done = pool.starmap(_one, work)
    runs: dict[str, list[dict[str, Any]]] = {}
    for (name, on, rb, dr, _), r in zip(jobs, done, strict=True):
        label = name + ("+screen" if on else "") + ("+predicted-rank" if rb == "predicted" else "")
        label += "+draw-choice" if dr == "choice" and drawn(name) else ""
        runs.setdefault(label, []).append(r)

    per_share = {sh: summarise(tab, runs, sh) for sh in args.share}
    first = per_share[args.share[0]]
    report = {
        "table": args.table,
        "tabulated": len(tab.archs),
        "rows_without_an_objective": tab.skipped,
        "steps_per_training": tab.steps,
        "objectives": objectives,
        "best_hv": tab.best,
        "share": args.share[0],
        "seeds": args.seeds,
        "screen": {"confidence": args.confidence, "min_history": args.min_history},
        "halving": None
        if halving is None
        else {
            "candidates": halving.candidates,
            "eta": halving.eta,
            "fidelities": tab.fidelities,
        },
        "strategies": first["strategies"],
        "fewest_possible": first["fewest_possible"],
        "by_share": {f"{sh:g}": v for sh, v in per_share.items()},
    }
    title = f"{' vs '.join(objectives)}: {len(tab.archs)} tabulated archs, {args.seeds} seeds"
    plot(Path(args.plot), runs, tab.best, title, args.share[0])
    report["plot"] = args.plot
    print(json.dumps(report, indent=1))
    for sh, v in per_share.items():
        show_share(tab, sh, v)


def summarise(
    tab: Tabulated, runs: dict[str, list[dict[str, Any]]], share: float
) -> dict[str, Any]:
    """Each strategy's cost to ``share`` of the best hypervolume over its searches, its ratio to
    random search's, and the fewest trainings any search needs."""

    def costs_of(rs: list[dict[str, Any]]) -> list[int]:
        return [
            r["by_share"][share]["cost"] for r in rs if r["by_share"][share]["cost"] is not None
        ]

    def mean_cost(rs: list[dict[str, Any]]) -> float | None:
        costs = costs_of(rs)
        return statistics.mean(costs) if costs else None

    random_cost = mean_cost(runs["random"]) if "random" in runs else None
    summary: dict[str, Any] = {}
    for label, rs in runs.items():
        costs = costs_of(rs)
        mean = mean_cost(rs)
        trained = [r["by_share"][share]["trained"] for r in rs]
        summary[label] = {
            "reached": f"{len(costs)}/{len(rs)}",
            "cost_steps_mean": mean,
            "cost_steps_sd": statistics.stdev(costs) if len(costs) > 1 else 0.0,
            "cost_steps_by_seed": {r["seed"]: r["by_share"][share]["cost"] for r in rs},
            "trained_to_top_mean": statistics.mean(t for t in trained if t is not None)
            if costs
            else None,
            "screened_mean": statistics.mean(r["screened"] for r in rs),
            "total_steps_mean": statistics.mean(r["total_steps"] for r in rs),
            "final_hv_mean": statistics.mean(r["hv"][-1] if r["hv"] else 0.0 for r in rs),
            "ratio_to_random": None if random_cost is None or mean is None else mean / random_cost,
        }
    for label, s in summary.items():
        s["vs_random"] = (
            None if label == "random" or "random" not in summary
            else against(s["cost_steps_by_seed"], summary["random"]["cost_steps_by_seed"], False)
        )  # fmt: skip
        base = label.replace("+screen", "")
        s["vs_unscreened"] = (
            against(s["cost_steps_by_seed"], summary[base]["cost_steps_by_seed"], True)
            if base != label and base in summary
            else None
        )
    fewest = fewest_to_share(tab, share)
    fewest["ratio_to_random"] = None if random_cost is None else fewest["steps"] / random_cost
    return {"strategies": summary, "fewest_possible": fewest}


def against(a: dict[int, int | None], b: dict[int, int | None], paired: bool) -> dict[str, Any]:
    """Is search A's cost different from search B's? Two-sided tests on the seeds' costs.

    Paired (the same strategy and seed with and without the screen, which share their first
    proposals): the Wilcoxon signed-rank test over the seeds both reached the share with, and
    how many of them A made cheaper, dearer or the same. A seed the screen leaves unchanged
    counts as no difference (Pratt's treatment of zeros), and if none changed, p is 1.
    Unpaired (two strategies: seed k of one shares nothing with seed k of the other): the
    Mann-Whitney U test. Both as exact permutation tests (scipy's, over every sign flip or
    every split of the seeds), since costs are whole trainings and tie often, which the
    normal approximation handles poorly at 10 seeds; p >= 0.05 means the seeds cannot tell the
    two apart."""
    from scipy.stats import PermutationMethod, mannwhitneyu, wilcoxon

    if paired:
        pairs = [(a[k], b[k]) for k in sorted(a) if a[k] is not None and b.get(k) is not None]
        d = [x - y for x, y in pairs]
        out: dict[str, Any] = {
            "test": "wilcoxon", "seeds": len(d), "cheaper": sum(v < 0 for v in d),
            "dearer": sum(v > 0 for v in d), "same": sum(v == 0 for v in d),
            "median_difference": float(np.median(d)) if d else None,
        }  # fmt: skip
        if not any(d):
            return out | {"p_value": 1.0 if d else None}
        exact = PermutationMethod(n_resamples=2 ** len(d))
        return out | {"p_value": float(wilcoxon(d, zero_method="pratt", method=exact).pvalue)}
    xa = [v for v in a.values() if v is not None]
    xb = [v for v in b.values() if v is not None]
    if not xa or not xb:
        return {"test": "mannwhitneyu", "p_value": None}
    exact = PermutationMethod(n_resamples=math.comb(len(xa) + len(xb), len(xa)))
    res = mannwhitneyu(xa, xb, alternative="two-sided", method=exact)
    return {"test": "mannwhitneyu", "p_value": float(res.pvalue),
            "median_difference": float(np.median(xa) - np.median(xb))}  # fmt: skip


def show_share(tab: Tabulated, share: float, v: dict[str, Any]) -> None:
    """The table of :func:`summarise`'s figures for one share."""
    summary, fewest = v["strategies"], v["fewest_possible"]
    pct = f"{100 * share:g}%"
    t = Table(title=f"steps to {pct} of the best hypervolume ({len(tab.archs)} architectures)")
    for c in ("search", "reached", f"steps to {pct} (mean ± sd)", "top trainings", "screened",
              "final HV", "/ random", "p vs random",
              "p vs no screen (cheaper/dearer)"):  # fmt: skip
        t.add_column(c, justify="right")

    def p(v: dict[str, Any] | None) -> str:
        if v is None or v["p_value"] is None:
            return "-"
        tally = f" ({v['cheaper']}/{v['dearer']})" if "cheaper" in v else ""
        return f"{v['p_value']:.3f}{tally}"

    for label, s in summary.items():
        ratio, cost = s["ratio_to_random"], s["cost_steps_mean"]
        t.add_row(label, s["reached"],
                  "-" if cost is None else f"{cost:,.0f} ± {s['cost_steps_sd']:,.0f}",
                  "-" if cost is None else f"{s['trained_to_top_mean']:.1f}",
                  f"{s['screened_mean']:.1f}", f"{s['final_hv_mean'] / tab.best:.3f}",
                  "-" if ratio is None else f"{ratio:.2f}", p(s["vs_random"]),
                  p(s["vs_unscreened"]))  # fmt: skip
    ratio = fewest["ratio_to_random"]
    t.add_row("fewest possible (any search)" + ("" if fewest["exact"] else ", greedy"), "",
              f"{fewest['steps']:,}", str(fewest["trainings"]), "", f"{share:.3f}",
              "-" if ratio is None else f"{ratio:.2f}", "", "")  # fmt: skip
    Console(stderr=True, width=150).print(t)


if __name__ == "__main__":
    main()
