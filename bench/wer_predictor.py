"""How well does the WER predictor rank architectures it has not seen? Measured on the table.

Reads the benchmark table (``bench/speech_table.py``), keeps the architectures trained to its
top fidelity (seed 0), and predicts their top-fidelity WER (``--target``: ``dev_wer``, a test
set's ``wer:NAME``, or ``mean`` over the test sets) by K-fold cross-validation over
architectures (``--folds``, repeated ``--repeats`` times with other splits): every architecture
is predicted by a model that never saw it. Rows compared:

* the predictor from the architecture alone (what the search can use before any training);
* the predictor with the learning curve so far (dev WER at the lower fidelities), its trees
  fitted on the WER itself or on the change from the curve's last value (``baseline``);
* each lower fidelity's own dev WER as the prediction (what successive halving uses), and the
  parameter count alone (bigger is better), as baselines.

Prints JSON and a table: Kendall tau, Spearman, MAE and the interval's coverage per row
(mean and sd over the repeats). ``--sizes N ...`` adds what promotion by prediction sees: the
predictor trained on only N architectures (drawn at random, ``--size-repeats`` times) ranks the
rest, learning the WER itself, the change from the lower fidelity's WER, or as
:func:`speechnas.search.promote.fit_top_predictor` chooses ("the rule"), against the lower
fidelity's own WER.

    .venv/bin/python bench/wer_predictor.py
    .venv/bin/python bench/wer_predictor.py --target mean --folds 5 --repeats 5
    .venv/bin/python bench/wer_predictor.py --sizes 5 10 15 20 30 45 60 90
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from speechnas.search.promote import fit_top_predictor
from speechnas.search.wer_predictor import Prediction, WerPredictor, encode, rank_quality
from speechnas.space import SearchSpace, load_space
from speechnas.versions import versions

HERE = Path(__file__).resolve().parent
TABLE = HERE / "tabular" / "speech-ctc.json"
CHANGE = ", learning the change"  # trees fit target - the curve's last value (``baseline``)


def target_of(fid: dict[str, Any], target: str) -> float:
    if target == "mean":
        return float(np.mean([v for k, v in fid.items() if k.startswith("wer:")]))
    return float(fid[target])


def by_training_size(x: np.ndarray, lows: np.ndarray, y: np.ndarray, sizes: list[int],
                     repeats: int, forms: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Kendall tau on the architectures left out when ``n`` of them (drawn at random,
    ``repeats`` times) train the predictor: what promotion in a search sees, whose study holds
    a few to a few dozen architectures with values at both rungs. ``forms`` maps a name to a
    function (x_train, y_train, x_test, seed) -> predictions; the lower rung's own WER
    (``lows``) is the baseline successive halving uses."""
    from scipy.stats import kendalltau

    def tau(truth: np.ndarray, pred: np.ndarray) -> float:
        got = float(kendalltau(truth, pred).statistic)
        return 0.0 if np.isnan(got) else got  # a constant prediction ranks nothing

    out: dict[str, Any] = {}
    for n in sizes:
        if n >= len(y) - 5:
            continue
        taus: dict[str, list[float]] = {name: [] for name in ("observed", *forms)}
        rng = np.random.default_rng(n)
        for rep in range(repeats):
            order = rng.permutation(len(y))
            train, test = order[:n], order[n:]
            taus["observed"].append(tau(y[test], lows[test]))
            for name, form in forms.items():
                taus[name].append(tau(y[test], form(x[train], y[train], x[test], rep)))
        out[str(n)] = {name: {"mean": statistics.fmean(v), "sd": statistics.stdev(v)}
                       for name, v in taus.items()}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--space", default=str(HERE / "tabular" / "speech-ctc.yaml"))
    ap.add_argument("--target", default="dev_wer", help="dev_wer, wer:NAME or mean")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--confidence", type=float, default=0.8)
    ap.add_argument("--vocab", type=int, default=64, help="the table recipe's vocabulary")
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[],
        help="also score promotion's forms trained on this many architectures",
    )
    ap.add_argument("--size-repeats", type=int, default=20)
    args = ap.parse_args()

    table = json.loads(Path(args.table).read_text())
    space: SearchSpace = load_space(args.space)
    steps = [str(s) for s in table["steps"]]
    top, lower = steps[-1], steps[:-1]
    rows = [r for r in table["rows"] if r["seed"] == 0 and top in r["fidelities"]]
    if len(rows) < 2 * args.folds:
        raise SystemExit(f"{args.table}: {len(rows)} complete architectures; need {2 * args.folds}")
    y = np.array([target_of(r["fidelities"][top], args.target) for r in rows])
    low_target = "dev_wer"  # the lower fidelities score dev only

    def curve(r: dict[str, Any], upto: list[str]) -> dict[str, float]:
        return {f: target_of(r["fidelities"][f], low_target) for f in upto if f in r["fidelities"]}

    variants: dict[str, list[str]] = {"architecture only": []}
    for i, f in enumerate(lower):
        variants[f"with curve to {f} steps"] = lower[: i + 1]
        variants[f"with curve to {f} steps{CHANGE}"] = lower[: i + 1]
    feats = {
        name: np.stack([encode(r["arch"], space, vocab_size=args.vocab,
                               curve=curve(r, upto), fidelities=upto) for r in rows])
        for name, upto in variants.items()
    }  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {n: [] for n in variants}
    baselines: dict[str, list[dict[str, float]]] = {f"WER at {f} steps": [] for f in lower}
    baselines["parameters (more is better)"] = []
    rng = np.random.default_rng(0)
    for rep in range(args.repeats):
        order = rng.permutation(len(rows))
        folds = np.array_split(order, args.folds)
        preds = {n: {k: np.zeros(len(rows)) for k in ("median", "low", "high")} for n in variants}
        for held in folds:
            train = np.setdiff1d(order, held)
            for name, x in feats.items():
                base = -1 if name.endswith(CHANGE) else None
                p = WerPredictor(confidence=args.confidence, seed=rep, baseline=base)
                p.fit(x[train], y[train])
                got = p.predict(x[held])
                for k in ("median", "low", "high"):
                    preds[name][k][held] = getattr(got, k)
        for name in variants:
            results[name].append(rank_quality(y, Prediction(**preds[name])))
        if rep == 0:  # the baselines do not depend on the split
            for f in lower:
                baselines[f"WER at {f} steps"].append(
                    rank_quality(y, [target_of(r["fidelities"][f], low_target) for r in rows])
                )
            baselines["parameters (more is better)"].append(
                rank_quality(y, [-float(r["params"]) for r in rows])
            )

    def agg(runs: list[dict[str, float]]) -> dict[str, Any]:
        keys = runs[0].keys()
        return {k: {"mean": statistics.fmean(r[k] for r in runs),
                    "sd": statistics.stdev([r[k] for r in runs]) if len(runs) > 1 else 0.0}
                for k in keys}  # fmt: skip

    report = {
        "table": args.table, "target": args.target, "top_steps": int(top),
        "architectures": len(rows),
        "by_family": {f: sum(r["family"] == f for r in rows)
                      for f in sorted({r["family"] for r in rows})},
        "folds": args.folds, "repeats": args.repeats, "confidence": args.confidence,
        "predictor": {n: agg(v) for n, v in results.items()},
        "baselines": {n: agg(v) for n, v in baselines.items()},
        "versions": versions(),
    }  # fmt: skip
    if args.sizes:

        def form(baseline: int | None) -> Any:
            def fit_predict(xt: np.ndarray, yt: np.ndarray, xs: np.ndarray, seed: int) -> Any:
                model = WerPredictor(seed=seed, folds=0, baseline=baseline).fit(xt, yt)
                return model.predict(xs).median

            return fit_predict

        def chosen(xt: np.ndarray, yt: np.ndarray, xs: np.ndarray, seed: int) -> Any:
            return fit_top_predictor(xt, yt, seed=seed)[0].predict(xs).median

        forms = {"WER itself": form(None), "the change": form(-1), "the rule": chosen}
        report["by_training_size"] = {
            f: by_training_size(feats[f"with curve to {f} steps"],
                                np.array([target_of(r["fidelities"][f], low_target)
                                          for r in rows]),
                                y, args.sizes, args.size_repeats, forms)
            for f in lower
        }  # fmt: skip
    print(json.dumps(report, indent=1))
    t = Table(title=f"{args.target} at {top} steps, {len(rows)} architectures, "
                    f"{args.folds}-fold x {args.repeats}")  # fmt: skip
    for col in ("prediction", "Kendall tau", "Spearman", "MAE (points)", "interval coverage"):
        t.add_column(col, justify="left" if col == "prediction" else "right")
    for group in ("predictor", "baselines"):
        for name, a in report[group].items():
            cov = a.get("coverage")
            mae = "" if name.startswith("parameters") else f"{100 * a['mae']['mean']:.2f}"
            t.add_row(name, f"{a['kendall_tau']['mean']:.3f} ± {a['kendall_tau']['sd']:.3f}",
                      f"{a['spearman']['mean']:.3f}", mae,
                      "" if cov is None else f"{cov['mean']:.2f}")  # fmt: skip
    Console().print(t)
    for f, by_n in report.get("by_training_size", {}).items():
        t = Table(title=f"Kendall tau of promotion from {f} steps, by architectures trained on "
                        f"({args.size_repeats} draws each)")  # fmt: skip
        names = list(next(iter(by_n.values())))
        t.add_column("trained on", justify="right")
        for name in names:
            t.add_column(name, justify="right")
        for n, row in by_n.items():
            t.add_row(n, *(f"{row[k]['mean']:.3f} ± {row[k]['sd']:.3f}" for k in names))
        Console().print(t)


if __name__ == "__main__":
    main()
