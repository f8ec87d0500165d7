"""A real search with the WER predictor on against the same search with it off.

Runs ``speechnas search`` once per arm on the same config, seed and trial budget, one after the
other (never side by side: the rungs are minute budgets, so two searches at once would slow each
other), and compares what each trained and found:

* ``off``: the config as it is;
* ``screen``: ``screen: {}`` added (:mod:`speechnas.search.screen`): a proposal whose
  optimistic predicted dev WER is dominated by a trained trial is recorded as screened and
  replaced by the strategy's next proposal;
* ``predicted``: the screen and ``fidelity.rank_by: predicted`` (promotion by the dev WER
  predicted at the top rung rather than the one observed at the rung).

Per arm: wall time, trials trained and screened, the front's hypervolume (the search's own
objectives and reference point, so the arms compare), the selection with its dev WER and
latency at the top rung, and the retrained selection's WER per test set. A screened proposal
frees its slot, so under a trial budget the screened arm trains as many trials as the other
but on other proposals; what it buys shows in the hypervolume and the selection.

The screen needs ``min_history`` (8) completed rung-0 trials before it judges anything, and the
default search's 12 trials hold 8 rung-0 trials in all: give it a larger ``--trials``.
Minute budgets make each search's figures belong to the CPU it ran on (the JSON names it), and
one search per arm is one draw, not a claim; ``--seeds`` runs more.

    .venv/bin/python bench/screen_search.py --trials 24                  # about 55 minutes
    .venv/bin/python bench/screen_search.py --trials 24 --arms off,screen,predicted --seeds 0 1

A rerun into the same ``--out`` reuses every finished search (``pareto.json`` with its
retrained selection) and resumes an unfinished one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from speechnas.search.config import (
    ScreenConfig,
    default_search_path,
    load_search_config,
    search_config_path,
)
from speechnas.search.drivers.pool import trained_at_rung0
from speechnas.search.screen import Screen
from speechnas.space import load_space

ARMS: dict[str, dict[str, Any]] = {
    "off": {"screen": None},
    "screen": {"screen": {}},
    "predicted": {"screen": {}, "fidelity": {"rank_by": "predicted"}},
}


def arm_config(config: str, arm: str, out: Path) -> Path:
    """The search YAML of one arm: ``config`` with its paths made absolute and the arm's
    changes, written under ``out`` (what the search ran, kept beside its results)."""
    cfg = load_search_config(search_config_path(config)).to_dict()
    for key, value in ARMS[arm].items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = out / "search.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_arm(config: str, arm: str, seed: int, trials: int, out: Path) -> dict[str, Any]:
    """One search (reused when finished, resumed when not) and what it found."""
    folder = out / f"{arm}-seed{seed}"
    pareto = folder / "run" / "pareto.json"
    stamp = folder / "wall.json"
    if not (pareto.is_file() and "retrained" in json.loads(pareto.read_text())):
        path = arm_config(config, arm, folder)
        cmd = [str(Path(sys.executable).parent / "speechnas"), "search", "--config", str(path),
               "--trials", str(trials), "--seed", str(seed),
               "--output-dir", str(folder / "run")]  # fmt: skip
        if (folder / "run" / "study.db").is_file():
            cmd.append("--resume")
        print(f"[{arm} seed {seed}] {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=sys.stderr)  # stdout carries only the JSON
        spent = time.perf_counter() - t0
        before = json.loads(stamp.read_text())["seconds"] if stamp.is_file() else 0.0
        stamp.write_text(json.dumps({"seconds": before + spent}))
    return summarise(arm, seed, json.loads(pareto.read_text()), json.loads(stamp.read_text()))


KEPT = ("dev_wer", "steps", "latency_measured", "latency_ratio_to_limit")


def summarise(arm: str, seed: int, p: dict[str, Any], wall: dict[str, Any]) -> dict[str, Any]:
    sel, re = p["selected"], p["retrained"]
    return {
        "arm": arm,
        "seed": seed,
        "wall_minutes": wall["seconds"] / 60,
        "trials": p["trials"],
        "trained": p["trials"].get("COMPLETE", 0) + p["trials"].get("FAIL", 0),
        "screened": p["trials"].get("screened", 0),
        "hypervolume": p["hypervolume"][-1]["hv"] if p["hypervolume"] else 0.0,
        "front": len(p["front"]),
        "selected": {
            "key": sel["key"],
            "params": sel["metrics"].get("params"),
            **sel["objectives"],
        },
        "retrained": {k: v for k, v in re.items() if k.startswith("wer:") or k in KEPT},
    }


def replay(folder: Path, confidences: list[float]) -> list[dict[str, Any]]:
    """What the screen would have done in a finished search at each confidence: every rung-0
    trial after the first ``min_history`` is judged by a screen fitted on the rung-0 trials
    numbered before it (the search's own screen sees those complete when it proposes, which
    are fewer). A screened trial is *wrongly* screened when no earlier trial dominates its
    observed values (it would have joined the front)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_search_config(folder / "search.yaml")
    space = load_space(cfg.space)
    study = optuna.load_study(study_name=cfg.study_name,
                              storage=f"sqlite:///{folder / 'run' / 'study.db'}")  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    rung0 = sorted(trained_at_rung0(trials), key=lambda t: t.number)
    out = []
    for conf in confidences:
        sc_cfg = ScreenConfig(confidence=conf)
        judged = screened = wrong = 0
        width = []
        for k in range(sc_cfg.min_history, len(rung0)):
            held, before = rung0[k], rung0[:k]
            screen = Screen(sc_cfg, objectives=cfg.objectives, space=space, vocab_size=64,
                            seed=cfg.seed + k)  # fmt: skip
            screen.fit(before)
            metrics = trials[held.number].user_attrs.get("metrics", {})
            verdict = screen.judge(held.arch, metrics)
            p = next(iter(screen._models.values())).predict(screen._row(held.arch))
            width.append(float(p.high[0] - p.median[0]))
            judged += 1
            if verdict is not None:
                screened += 1
                wrong += not any(
                    all(a <= b for a, b in zip(t.values, held.values, strict=True))
                    and t.values != held.values
                    for t in before
                )
        out.append({"confidence": conf, "judged": judged, "screened": screened,
                    "wrongly_screened": wrong,
                    "median_half_width": statistics.median(width) if width else None})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(default_search_path()))
    ap.add_argument("--arms", default="off,screen", help=f"comma-separated: {', '.join(ARMS)}")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bench-screen")
    ap.add_argument("--replay", type=float, nargs="*", default=[0.9, 0.8, 0.5],
                    help="confidences the finished searches are replayed at")  # fmt: skip
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms: {unknown} unknown; choose from {list(ARMS)}")
    load_search_config(search_config_path(args.config))  # a bad config fails before any search
    rows = [run_arm(args.config, a, s, args.trials, Path(args.out))
            for s in args.seeds for a in arms]  # fmt: skip

    from speechnas.hardware.cpu import cpu_report
    from speechnas.versions import versions

    by_arm = {
        a: {k: statistics.fmean(r[k] for r in rows if r["arm"] == a)
            for k in ("wall_minutes", "trained", "screened", "hypervolume")}
        for a in arms
    }  # fmt: skip
    for r in rows:
        r["replay"] = replay(Path(args.out) / f"{r['arm']}-seed{r['seed']}", args.replay)
    print(json.dumps({"cpu": cpu_report(), "versions": versions(), "config": args.config,
                      "trials": args.trials, "seeds": args.seeds, "mean": by_arm,
                      "rows": rows}, indent=1))  # fmt: skip
    sets = sorted({k for r in rows for k in r["retrained"] if k.startswith("wer:")})
    table = Table(title="search with the WER predictor on and off (WER %)")
    for col in ("arm", "seed", "wall min", "trained", "screened", "HV", "selected",
                "dev WER", "latency ms", *[s[4:] for s in sets]):  # fmt: skip
        table.add_column(col)
    for r in rows:
        sel = r["selected"]
        table.add_row(
            r["arm"], str(r["seed"]), f"{r['wall_minutes']:.1f}", str(r["trained"]),
            str(r["screened"]), f"{r['hypervolume']:.4f}", sel["key"][:8],
            f"{100 * sel.get('dev_wer', float('nan')):.2f}", f"{sel.get('latency', 0):.2f}",
            *[f"{100 * r['retrained'].get(s, float('nan')):.2f}" for s in sets],
        )  # fmt: skip
    console = Console(stderr=True, width=200)
    console.print(table)
    again = Table(title="the finished searches replayed: rung-0 trials the screen would skip")
    for col in ("arm", "seed", "confidence", "judged", "screened", "wrongly screened",
                "interval half-width (WER)"):  # fmt: skip
        again.add_column(col)
    for r in rows:
        for p in r["replay"]:
            half = p["median_half_width"]
            again.add_row(r["arm"], str(r["seed"]), f"{p['confidence']:g}", str(p["judged"]),
                          str(p["screened"]), str(p["wrongly_screened"]),
                          "" if half is None else f"{100 * half:.1f} points")  # fmt: skip
    console.print(again)


if __name__ == "__main__":
    main()
