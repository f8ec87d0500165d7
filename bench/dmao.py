"""DMAO benchmark: the same architecture trained with and without one parameter reallocation.

Baseline and DMAO (Taylor importance, reallocation at ``--at`` of the steps, δ = ``--delta``)
train the same preset for the same number of steps on the built-in digits corpus, seeds 0-2 by
default; both are scored (their best-dev checkpoints) on every test set. The DMAO model has the
baseline's parameter count within one group. On the first seed, DMAO is also run with magnitude
importance and with the reallocation at 10% and 40% of training. Prints JSON (``--json`` also
writes it) and a table: WER per test set, mean ± sd over seeds, the relative change, and
MAPSSWE / paired-bootstrap p-values on the pooled test sets (every seed and test set). Every
run's scores are cached in its folder, so a rerun resumes:

    .venv/bin/python bench/dmao.py --preset small --steps 500 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _jobs import map_jobs

from speechnas.cli import default_config_path
from speechnas.data.loading import load_utterances
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.evaluate.significance import compare_systems, utterance_errors
from speechnas.train.config import DmaoConfig, ModelConfig, TrainConfig, load_config
from speechnas.train.score import score_checkpoint
from speechnas.train.trainer import Trainer
from speechnas.versions import versions


def _run(job: dict[str, Any]) -> dict[str, Any]:
    """One training (reused when its folder holds the scores) and its scores and transcripts."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    out = Path(job["out"])
    done = out / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg: TrainConfig = job["config"]
    start = time.perf_counter()
    result = Trainer.from_config(cfg, show_progress=False).fit(resume=True)
    seconds = time.perf_counter() - start
    evals = score_checkpoint(out / "best", cfg.data.test)
    meta = json.loads((out / "best" / "meta.json").read_text())
    scores = {
        "name": job["name"],
        "seed": cfg.seed,
        "steps": result.steps,
        "parameters": result.parameters,
        "wall_seconds": seconds,
        "best_dev_wer": result.best_dev_wer,
        "wer": {k: ev.rates.wer for k, ev in evals.items()},
        "hypotheses": {k: list(ev.hypotheses) for k, ev in evals.items()},
        "dmao": meta.get("dmao"),
    }
    done.write_text(json.dumps(scores))
    return scores


def _jobs(args: argparse.Namespace, base: TrainConfig) -> list[dict[str, Any]]:
    seeds = [int(s) for s in args.seeds.split(",")]
    plans: list[tuple[str, int, DmaoConfig | None]] = []
    # a folder per setting, so runs at another --at or --delta never reuse each other's results
    name = _dmao_name(args.at, args.delta)
    for seed in seeds:
        plans.append(("baseline", seed, None))
        plans.append((name, seed, DmaoConfig(at=args.at, delta=args.delta)))
    first = seeds[0]
    plans.append((f"{name}-magnitude", first,
                  DmaoConfig(at=args.at, delta=args.delta, importance="magnitude")))  # fmt: skip
    for at in (0.1, 0.2, 0.4):
        if at != args.at:
            side = _dmao_name(at, args.delta)
            plans.append((side, first, DmaoConfig(at=at, delta=args.delta)))
    jobs = []
    for name, seed, dmao in plans:
        out = Path(args.out) / f"{name}-seed{seed}"
        cfg = base.replace(seed=seed, output_dir=str(out), dmao=dmao)
        jobs.append({"name": name, "out": str(out), "config": cfg})
    return jobs


def _dmao_name(at: float, delta: float) -> str:
    """``dmao`` at the default setting (20%, δ 0.15), else ``dmao-at10``, ``dmao-at20-d10``..."""
    if (at, delta) == (0.2, 0.15):
        return "dmao"
    name = f"dmao-at{round(100 * at)}"
    return name if delta == 0.15 else f"{name}-d{round(100 * delta)}"


def _stats(values: list[float]) -> dict[str, float]:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd}


def _summary(runs: list[dict[str, Any]], refs: dict[str, list[str]]) -> dict[str, Any]:
    tests = list(refs)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_name.setdefault(r["name"], []).append(r)
    rows = {}
    for name, rs in by_name.items():
        rows[name] = {
            "seeds": [r["seed"] for r in rs],
            "parameters": [r["parameters"] for r in rs],
            "wer": {t: _stats([r["wer"][t] for r in rs]) for t in tests},
            "wer_pooled": _stats([_pooled_wer(r, refs) for r in rs]),
            "minutes": _stats([r["wall_seconds"] / 60 for r in rs]),
        }
    base = {r["seed"]: r for r in by_name["baseline"]}
    comparisons = {}
    for name, rs in by_name.items():
        if name == "baseline":
            continue
        pool_refs, hyp_a, hyp_b = [], [], []
        for r in rs:
            for t in tests:
                pool_refs += refs[t]
                hyp_a += r["hypotheses"][t]
                hyp_b += base[r["seed"]]["hypotheses"][t]
        test = compare_systems(pool_refs, hyp_a, hyp_b, seed=0)
        rel = {t: _relative(rows[name]["wer"][t]["mean"], rows["baseline"]["wer"][t]["mean"])
               for t in tests}  # fmt: skip
        comparisons[name] = {
            "relative_change": rel,
            "relative_change_pooled": _relative(test["wer_a"], test["wer_b"]),
            "pooled_test": test,
        }
    return {"rows": rows, "against_baseline": comparisons}


def _pooled_wer(run: dict[str, Any], refs: dict[str, list[str]]) -> float:
    errors = words = 0
    for t, r in refs.items():
        e, w = utterance_errors(r, run["hypotheses"][t])
        errors += int(e.sum())
        words += int(w.sum())
    return errors / words


def _relative(new: float, old: float) -> float:
    return (new - old) / old if old else float("nan")


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _table(summary: dict[str, Any], tests: list[str]) -> str:
    head = ["model", "seeds", "params", *tests, "pooled", "rel. to baseline, same seeds",
            "p MAPSSWE", "p bootstrap"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, row in summary["rows"].items():
        cmp_ = summary["against_baseline"].get(name)
        cells = [
            name,
            ",".join(map(str, row["seeds"])),
            f"{np.mean(row['parameters']) / 1e6:.4f} M",
            *(
                f"{100 * row['wer'][t]['mean']:.2f} ± {100 * row['wer'][t]['sd']:.2f}"
                for t in tests
            ),
            f"{100 * row['wer_pooled']['mean']:.2f} ± {100 * row['wer_pooled']['sd']:.2f}",
            f"{100 * cmp_['relative_change_pooled']:+.1f}%" if cmp_ else "",
            _p(cmp_["pooled_test"]["p_mapsswe"]) if cmp_ else "",
            _p(cmp_["pooled_test"]["p_bootstrap"]) if cmp_ else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=500, help="optimizer steps per training")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--at", type=float, default=0.2, help="share of training at reallocation")
    ap.add_argument("--delta", type=float, default=0.15, help="share of groups reallocated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training")
    ap.add_argument("--workers", type=int, default=2, help="trainings at a time")
    ap.add_argument("--corpora", default="corpora")
    ap.add_argument("--out", default="runs/bench-dmao")
    ap.add_argument("--json", default=None, help="also write the report here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    info = build_corpus(CorpusConfig(), args.corpora)
    base = load_config(default_config_path())
    budget = dataclasses.replace(base.budget, max_minutes=None, max_steps=args.steps,
                                 eval_at_minutes=(), patience=None)  # fmt: skip
    base = base.replace(
        data=base.data.with_corpus(info.manifests),
        model=ModelConfig(preset=args.preset, dropout=base.model.dropout),
        threads=args.threads,
        budget=budget,
    )
    jobs = _jobs(args, base)
    start = time.perf_counter()
    runs = map_jobs(_run, jobs, args.workers)
    # the test sets every run scored (runs cached before a split was added lack it)
    scored = set.intersection(*(set(r["wer"]) for r in runs))
    refs = {
        t: [u.text for u in load_utterances(m, skip_invalid=False)]
        for t, m in base.data.test.items()
        if t in scored
    }
    summary = _summary(runs, refs)
    report = {
        "preset": args.preset,
        "steps": args.steps,
        "at": args.at,
        "delta": args.delta,
        "corpus": str(info.folder),
        "wall_minutes": (time.perf_counter() - start) / 60,
        "versions": versions(),
        **summary,
        "allocations": {
            f"{r['name']}-seed{r['seed']}": r["dmao"]
            and {
                "arch_after": r["dmao"]["arch_after"],
                "dropped": r["dmao"]["dropped"],
                "duplicated": r["dmao"]["duplicated"],
                "params": [r["dmao"]["params_before"], r["dmao"]["params_after"]],
            }
            for r in runs
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print(_table(summary, list(refs)))


if __name__ == "__main__":
    main()
