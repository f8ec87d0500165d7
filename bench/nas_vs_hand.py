"""Does the search beat hand design? Its selection against the presets, same recipe, same budget.

Every model (the selection of each ``--search`` output folder, any ``--arch``, and the presets)
is trained from scratch by the search's own retraining code with one recipe (the search
config's training config), the same budget and the same data, once per ``--seeds`` seed. Then
per model: WER on every test set (mean ± sd over seeds), a paired bootstrap of each model
against each preset (the seeds pooled per utterance, see :mod:`speechnas.evaluate.significance`),
latency on the search's target, and parameters. Prints JSON and a table.

Latency: whole-model timings move with the process and the machine's load (the same model can
time 1.5-2x apart in two processes), so every model is exported and timed once per round, the
models interleaved, for ``--rounds`` rounds after all training; a row reports the median over
rounds, the spread (min-max) and, per preset, the median of the per-round ratios, which is the
figure to compare.

Output units are part of the recipe: ``--hand-units char`` also trains every preset with
character outputs (the packaged training recipe's) beside the search config's units, so a
search that picks a new frame rate with word pieces is compared with the presets under both.

    .venv/bin/python bench/nas_vs_hand.py --search runs/search
    .venv/bin/python bench/nas_vs_hand.py --search runs/search --arch before=old-pick.json \\
        --presets small,base --seeds 0,1,2 --steps 900 --workers 2

The budget is ``--steps`` optimizer steps by default (the same work on any machine, so a
figure holds elsewhere); ``--minutes`` trains for wall-clock minutes instead, like the main
job's retraining. A rerun with the same arguments reuses every finished training.
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
from _retrain import trained

from speechnas.data.loading import load_utterances
from speechnas.evaluate.significance import paired_bootstrap, utterance_errors
from speechnas.hardware.evaluation import measure_archs
from speechnas.nn.presets import preset
from speechnas.search.config import default_search_path, load_search_config
from speechnas.search.objectives import latency_model
from speechnas.search.runner import prepare_base, retrain_base
from speechnas.space import Arch
from speechnas.train.checkpoint import load_model
from speechnas.versions import versions


def _train(job: dict[str, Any]) -> dict[str, Any]:
    """One model and seed: trained (or reused), and its hypotheses on every test set."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    cfg = load_search_config(job["config"])
    # no space check: a preset (``base``) may lie outside the search space
    base = retrain_base(cfg, prepare_base(cfg)).replace(space=None)
    if job["tokenizer"]:  # a preset with its own output units (the packaged recipe's)
        base = base.replace(tokenizer=dataclasses.replace(base.tokenizer, kind=job["tokenizer"]))
    return trained(Path(job["out"]), base, Arch.from_json(job["arch"]), base.data.test,
                   minutes=job["minutes"], seed=job["seed"], steps=job["steps"],
                   threads=job["threads"])  # fmt: skip


def _models(args: argparse.Namespace) -> dict[str, Arch]:
    """Label -> architecture; a label ``preset:NAME@UNITS`` trains with ``UNITS`` as tokenizer."""
    models: dict[str, Arch] = {}
    for folder in args.search:
        report = json.loads((Path(folder) / "pareto.json").read_text())
        if not report.get("selected"):
            raise SystemExit(f"{folder}/pareto.json: the search selected nothing")
        models[f"search:{Path(folder).name}"] = Arch.from_json(report["selected"]["arch"])
    for item in args.arch:
        label, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--arch {item!r}: expected LABEL=JSON or LABEL=FILE")
        text = value if value.lstrip().startswith("{") else Path(value).read_text()
        models[label] = Arch.from_json(json.loads(text))
    for name in filter(None, args.presets.split(",")):
        models[f"preset:{name}"] = preset(name)
        for units in filter(None, args.hand_units.split(",")):
            models[f"preset:{name}@{units}"] = preset(name)
    return models


def _latency_rounds(
    models: dict[str, Arch], cfg: Any, vocab: dict[str, int], rounds: int
) -> dict[str, list[float]]:
    """Each model's median latency in each of ``rounds`` interleaved rounds (random weights,
    which do not change a float model's time; each model with its own output vocabulary)."""
    out: dict[str, list[float]] = {label: [] for label in models}
    for r in range(rounds):
        for label, arch in models.items():
            (row,) = measure_archs([arch], cfg.target, [cfg.latency_seconds],
                                   vocab_size=vocab[label], seed=r, rounds=1)  # fmt: skip
            out[label].append(float(row["measured_ms"]))
    return out


def _errors(result: dict[str, Any], refs: dict[str, list[str]], test: str) -> np.ndarray:
    return utterance_errors(refs[test], result["hypotheses"][test])[0]


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` → [0, 1, 2]; ``3x`` → [0, 1, 2]. A bare ``3`` is the one seed 3, so one seed
    printed in the summary makes a slip visible."""
    if text.endswith("x"):
        n = int(text[:-1])
        if n < 1:
            raise SystemExit(f"--seeds {text}: a count must be at least 1x")
        return list(range(n))
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise SystemExit(
            f"--seeds {text!r}: expected a list like 0,1,2 or a count like 3x"
        ) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(default_search_path()),
                    help="search config: recipe, data, target (default: packaged)")  # fmt: skip
    ap.add_argument("--search", action="append", default=[], help="a search output folder")
    ap.add_argument("--arch", action="append", default=[], help="LABEL=JSON or LABEL=FILE")
    ap.add_argument("--presets", default="small,base")
    ap.add_argument("--versus", action="append", default=[],
                    help="an --arch LABEL to compare with like a preset (repeatable)")  # fmt: skip
    ap.add_argument("--hand-units", default="",
                    help="also train each preset with these tokenizer kinds (e.g. char: the "
                    "packaged training recipe's), labelled preset:NAME@KIND")  # fmt: skip
    ap.add_argument(
        "--seeds", default="0,1,2",
        help="comma-separated seed list (0,1,2), or a count with x (3x = seeds 0, 1, 2)",
    )  # fmt: skip
    ap.add_argument("--steps", type=int, default=900, help="optimizer steps per training")
    ap.add_argument("--minutes", type=float, default=None, help="minutes instead of steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training")
    ap.add_argument("--workers", type=int, default=2, help="trainings at a time")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap samples")
    ap.add_argument("--out", default="runs/bench-nas-vs-hand")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    cfg = load_search_config(args.config)
    base = retrain_base(cfg, prepare_base(cfg))  # builds the corpus once, before the workers
    models = _models(args)
    for label in args.versus:  # checked before any training
        if label not in models:
            raise SystemExit(f"--versus {label!r}: no such model; labels: {sorted(models)}")
    seeds = parse_seeds(args.seeds)
    print(f"seeds {seeds}", flush=True)
    steps = None if args.minutes else args.steps
    minutes = args.minutes or 1e6
    out = Path(args.out)
    jobs = [
        {"config": args.config, "label": label, "arch": arch.to_json(), "seed": seed,
         "tokenizer": label.partition("@")[2], "steps": steps,
         "minutes": minutes, "threads": args.threads,
         "out": str(out / f"{label.replace(':', '-').replace('@', '-')}-{arch.hash()[:8]}"
                    / f"seed{seed}")}
        for label, arch in models.items() for seed in seeds
    ]  # fmt: skip
    start = time.perf_counter()
    done = map_jobs(_train, jobs, args.workers)
    train_minutes = (time.perf_counter() - start) / 60
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in models}
    for job, res in zip(jobs, done, strict=True):
        runs[job["label"]].append(res)

    refs = {
        name: [u.text for u in load_utterances(m, skip_invalid=False)]
        for name, m in base.data.test.items()
    }
    words = {name: utterance_errors(r, r)[1] for name, r in refs.items()}
    tests = list(refs)
    presets = [k for k in models if k.startswith("preset:")]
    presets += args.versus  # other hand designs to compare with, e.g. a preset on new features
    vocab = {
        label: load_model(runs[label][0]["metrics"]["checkpoint"]).tokenizer.vocab_size
        for label in models
    }
    lat = _latency_rounds(models, cfg, vocab, args.rounds)
    rows: dict[str, Any] = {}
    for label, arch in models.items():
        first = runs[label][0]["metrics"]
        times = np.array(lat[label])
        row: dict[str, Any] = {
            "arch": arch.to_json(),
            "key": arch.hash()[:8],
            "params": first["params"],
            "steps": [r["metrics"]["steps"] for r in runs[label]],
            "train_minutes": [r["metrics"]["train_minutes"] for r in runs[label]],
            "latency_ms": float(np.median(times)),
            "latency_spread_ms": [float(times.min()), float(times.max())],
            "latency_rounds_ms": times.tolist(),
            "latency_ratio": {p: float(np.median(times / np.array(lat[p]))) for p in presets},
            "latency_predicted_ms": latency_model(cfg.target).predict(
                arch, cfg.latency_seconds, vocab[label]
            ),
            "wer": {},
            "vs": {},
        }
        for t in tests:
            per_seed = [float(_errors(r, refs, t).sum() / words[t].sum()) for r in runs[label]]
            row["wer"][t] = {"mean": float(np.mean(per_seed)),
                             "sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                             "seeds": per_seed}  # fmt: skip
        row["wer"]["mean"] = {"mean": float(np.mean([row["wer"][t]["mean"] for t in tests]))}
        for p in presets:
            if p == label:
                continue
            row["vs"][p] = {
                t: paired_bootstrap(
                    [_errors(r, refs, t) for r in runs[label]],
                    [_errors(r, refs, t) for r in runs[p]],
                    words[t],
                    samples=args.bootstrap,
                ).to_dict()
                for t in tests
            }
        rows[label] = row
    report = {
        "config": args.config,
        "budget": {"steps": steps, "minutes": args.minutes, "threads": args.threads},
        "recipe": dataclasses.asdict(base.optim),
        "seeds": seeds,
        "target": cfg.target,
        "latency_seconds": cfg.latency_seconds,
        "train_minutes_wall": train_minutes,
        "models": rows,
        "versions": versions(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    _print_table(rows, tests, presets, cfg.target)


def _print_table(rows: dict[str, Any], tests: list[str], presets: list[str], target: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search vs presets (WER mean ± sd over seeds; latency on {target})")
    ratio_cols = [f"latency / {p.removeprefix('preset:')}" for p in presets]
    for col in ("model", "params", "latency ms", "spread", *ratio_cols, *tests, "mean"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, r in rows.items():
        cells = [f"{100 * r['wer'][t]['mean']:.2f} ± {100 * r['wer'][t]['sd']:.2f}" for t in tests]
        lo, hi = r["latency_spread_ms"]
        ratios = [f"{r['latency_ratio'][p]:.2f}" for p in presets]
        table.add_row(label, f"{r['params'] / 1e6:.2f} M", f"{r['latency_ms']:.2f}",
                      f"{lo:.2f}-{hi:.2f}", *ratios, *cells,
                      f"{100 * r['wer']['mean']['mean']:.2f}")  # fmt: skip
    console = Console(file=sys.stderr, width=160)
    console.print(table)
    sig = Table(title="paired bootstrap: WER(model) - WER(preset), 95% interval, p")
    for col in ("model", "vs", *tests):
        sig.add_column(col, justify="left" if col in ("model", "vs") else "right")
    for label, r in rows.items():
        for p, by_test in r["vs"].items():
            cells = [
                f"{100 * b['delta']:+.2f} [{100 * b['ci_low']:+.2f}, {100 * b['ci_high']:+.2f}] "
                f"p={b['p_value']:.3f}"
                for b in (by_test[t] for t in tests)
            ]
            sig.add_row(label, p, *cells)
    console.print(sig)


if __name__ == "__main__":
    main()
