"""Do the search's low rungs rank architectures like the final training does?

Samples architectures uniformly from a search config's space, trains each exactly as the search
would at every rung of its fidelity schedule (the trial code, the trial recipe, one thread each,
a promoted rung continuing from the lower one), then retrains each from scratch as the search
retrains its selection (all the training data, ``retrain_minutes``). Prints JSON and a table:
per architecture the rung and final WERs, and per rung the Spearman and Kendall correlation of
its dev and test WER with the final dev WER, the final WER per test set and their mean, plus
the regret of picking by that rung (how much worse the rung's favourite ends than the best).

    .venv/bin/python bench/fidelity_rank.py                        # 12 archs, default search
    .venv/bin/python bench/fidelity_rank.py --config my-search.yaml --n 16 --workers 2

Runs ``--workers`` trainings at a time (each on ``--final-threads`` threads in the final
phase). A rerun with the same arguments reuses every finished training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _jobs import map_jobs
from scipy.stats import kendalltau, spearmanr

from speechnas.search.config import default_search_path, load_search_config
from speechnas.search.runner import prepare_base, retrain_base, trial_base
from speechnas.search.select import retrain
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, load_space
from speechnas.versions import versions


def _rungs(job: dict[str, Any]) -> dict[str, Any]:
    cfg = load_search_config(job["config"])
    base = trial_base(cfg, prepare_base(cfg))
    arch = Arch.from_json(job["arch"])
    out = Path(job["out"])
    rows: dict[str, Any] = {}
    previous = None
    for k, rung in enumerate(cfg.fidelity.rungs):
        done = out / f"rung{k}.json"
        if not done.is_file():
            fid = Fidelity(rung.minutes, rung.fraction, rung.steps)
            metrics = run_trial(arch, base=base, fidelity=fid, output_dir=out / f"rung{k}",
                                seed=cfg.seed, resume_from=previous)  # fmt: skip
            done.write_text(json.dumps(metrics))
        rows[f"rung{k}"] = json.loads(done.read_text())
        previous = out / f"rung{k}"
    return rows


def _final(job: dict[str, Any]) -> dict[str, Any]:
    done = Path(job["out"]) / "final.json"
    if not done.is_file():
        cfg = load_search_config(job["config"])
        base = retrain_base(cfg, prepare_base(cfg))
        metrics = retrain(Arch.from_json(job["arch"]), base, cfg.retrain_minutes,
                          Path(job["out"]) / "final", seed=cfg.seed,
                          threads=job["threads"])  # fmt: skip
        done.write_text(json.dumps(metrics))
    return json.loads(done.read_text())


def _corr(x: list[float], y: list[float]) -> dict[str, float]:
    return {
        "spearman": float(spearmanr(x, y).statistic),
        "kendall": float(kendalltau(x, y).statistic),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(default_search_path()))
    ap.add_argument("--n", type=int, default=12, help="architectures")
    ap.add_argument("--seed", type=int, default=0, help="which architectures are sampled")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--final-threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-fidelity")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    cfg = load_search_config(args.config)
    prepare_base(cfg)  # builds the corpus once, before the workers start
    space = load_space(cfg.space)
    rng = random.Random(args.seed)
    archs: dict[str, Arch] = {}
    while len(archs) < args.n:
        a = space.sample(rng)
        archs.setdefault(a.hash(), a)
    out = Path(args.out)
    jobs = [
        {"config": args.config, "arch": a.to_json(), "out": str(out / key[:12]),
         "threads": args.final_threads}
        for key, a in archs.items()
    ]  # fmt: skip
    start = time.perf_counter()
    rung_rows = map_jobs(_rungs, jobs, args.workers)
    rung_minutes = (time.perf_counter() - start) / 60
    finals = map_jobs(_final, jobs, args.workers)
    tests = sorted(k.removeprefix("wer:") for k in finals[0] if k.startswith("wer:"))
    table = []
    for key, rr, fin in zip(archs, rung_rows, finals, strict=True):
        row = {"key": key[:8], "params": fin["params"], "final_steps": fin["steps"]}
        for rung, m in rr.items():
            row[f"{rung}_dev"] = m["dev_wer"]
            if cfg.search_test is not None:  # trials may score dev only
                row[f"{rung}_test"] = m[f"wer:{cfg.search_test}"]
            row[f"{rung}_steps"] = m["steps"]
        row["final_dev"] = fin["dev_wer"]
        for t in tests:
            row[f"final_{t}"] = fin[f"wer:{t}"]
        row["final_mean_test"] = float(np.mean([fin[f"wer:{t}"] for t in tests]))
        table.append(row)
    targets = ["final_dev", *(f"final_{t}" for t in tests), "final_mean_test"]
    corr: dict[str, Any] = {}
    for k in range(len(cfg.fidelity.rungs)):
        for kind in ("dev", "test") if cfg.search_test is not None else ("dev",):
            x = [r[f"rung{k}_{kind}"] for r in table]
            pick = int(np.argmin(x))
            corr[f"rung{k}_{kind}"] = {
                t: {**_corr(x, [r[t] for r in table]),
                    "regret": table[pick][t] - min(r[t] for r in table)}
                for t in targets
            }  # fmt: skip
    corr["final_dev"] = {t: _corr([r["final_dev"] for r in table], [r[t] for r in table])
                         for t in targets[1:]}  # fmt: skip
    report = {
        "config": args.config,
        "rungs": [dataclasses.asdict(r) for r in cfg.fidelity.rungs],
        "retrain_minutes": cfg.retrain_minutes,
        "final_threads": args.final_threads,
        "workers": args.workers,
        "n": len(table),
        "minutes": {"rungs": rung_minutes, "all": (time.perf_counter() - start) / 60},
        "rows": table,
        "correlation": corr,
        "versions": versions(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    _print_table(corr, targets)


def _print_table(corr: dict[str, Any], targets: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="rank correlation (Spearman / Kendall) with the final training; regret")
    t.add_column("ranked by")
    for target in targets:
        t.add_column(target, justify="right")
    for name, cols in corr.items():
        cells = []
        for target in targets:
            c = cols.get(target)
            if c is None:
                cells.append("")
                continue
            regret = f" / +{100 * c['regret']:.1f}pt" if "regret" in c else ""
            cells.append(f"{c['spearman']:.2f} / {c['kendall']:.2f}{regret}")
        t.add_row(name, *cells)
    Console(stderr=True).print(t)


if __name__ == "__main__":
    main()
