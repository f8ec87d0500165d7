"""Does the supernet rank its paths like stand-alone training does? Step budgets, a noise ceiling.

On the elastic subspace of the default search space (``supernet_space`` of its space; the
search's recipe and built-in corpus), ``--paths`` paths spread from the smallest to the largest
by parameters (as in ``bench/oneshot.py``) are:

* trained **stand-alone** for ``--standalone-steps`` optimizer steps, once per ``--seeds``
  (one thread each, ``--workers`` side by side); the reference is their mean dev WER;
* scored by **inherited weights** from each supernet variant on the whole dev set.

Every variant (``--variants``: ``name:option=value,...`` with the one-shot options
``random_subnets``, ``distill``, ``path_draw``, ``shrink`` and ``shrink_order``) trains its
supernet for ``--supernet-steps`` steps on ``--threads`` threads, once per
``--supernet-seeds``. Step budgets make the figures the same on
any machine; the training minutes say what each cost here (more paths per step cost more per
step).

Reported: Kendall tau and Spearman of each variant's inherited dev WER against the
reference, and the **ceiling**: the same between the two seeds' stand-alone WERs (a predictor
of the stand-alone ranking cannot be judged beyond what stand-alone training agrees with itself
on). And the search cost on these paths as a small table (:func:`search_cost`): the optimizer
steps and CPU minutes that random search and each one-shot variant (its supernet, then its
finalists in the order it hands them over) spend to reach 95% and 99% of the best
hypervolume of (stand-alone dev WER, parameters).

``--lr`` sets the peak learning rate of every training (stand-alone and supernet alike; the
search's recipe otherwise); ``--lr-scale on`` lowers it for bigger encoders
(``optim.lr_scale``; a supernet trains at its largest path's rate). Prints JSON and a table.
Everything is kept under ``--out``; a rerun reuses the finished trainings and resumes the
others.

    .venv/bin/python bench/supernet_rank.py                              # about 1.5 hours
    .venv/bin/python bench/supernet_rank.py --lr 0.001 --variants sandwich2:random_subnets=2
    .venv/bin/python bench/supernet_rank.py --lr-scale on --variants sandwich2:random_subnets=2
    .venv/bin/python bench/supernet_rank.py --variants "sandwich2:random_subnets=2" \
        "sandwich4:random_subnets=4" --paths 10 --standalone-steps 800 --supernet-steps 1000
    .venv/bin/python bench/supernet_rank.py --variants "by-choice:random_subnets=2" \
        "by-arch:random_subnets=2,path_draw=architecture"    # how the random paths are drawn
    .venv/bin/python bench/supernet_rank.py --variants "by-choice:random_subnets=2" \
        "shrink:random_subnets=2,shrink=0.5"                  # progressive shrinking
    .venv/bin/python bench/supernet_rank.py --variants "by-choice:random_subnets=2" \
        "shrink:random_subnets=2,shrink=0.5" --supernet-seeds 0 1 2   # supernet-seed noise
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from speechnas.nn.cost import count_parameters
from speechnas.search.drivers.oneshot import (
    OneShotOptions,
    PathScorer,
    pick_finalists,
    train_supernet,
)
from speechnas.search.pareto import hypervolume, normalize
from speechnas.search.runner import prepare_base, trial_base, vocab_size
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch
from speechnas.train.config import LrScaleConfig, OptimConfig
from speechnas.versions import versions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _jobs import map_jobs
from oneshot import spread, write_subspace  # the paths bench/oneshot.py ranks

CONSOLE = Console(stderr=True, width=160)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value,...`` as (name, one-shot options); the options are checked here."""
    name, _, rest = text.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variants {text!r}: {item!r} is not key=value")
        options[key] = yaml.safe_load(value)
    if not name:
        raise ValueError(f"--variants {text!r}: give it a name before the colon")
    OneShotOptions.from_options(options)  # a bad key or value fails before any training
    return name, options


def _standalone(job: tuple[dict[str, Any], Any, int, str, int]) -> dict[str, Any]:
    import torch

    arch_json, base, steps, out, seed = job
    torch.set_num_threads(1)
    m = run_trial(Arch.from_json(arch_json), base=base.replace(threads=1),
                  fidelity=Fidelity(minutes=600.0, fraction=1.0, steps=steps),
                  output_dir=out, seed=seed)  # fmt: skip
    return {"dev_wer": m["dev_wer"], "steps": m["steps"], "minutes": m["train_minutes"]}


def tau(x: list[float], y: list[float]) -> dict[str, float | None]:
    """Kendall tau and Spearman; None when either side is constant (every path scoring 100%
    WER, say), where neither is defined."""
    from scipy.stats import kendalltau, spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return {"kendall_tau": None, "spearman": None}
    return {"kendall_tau": float(kendalltau(x, y).statistic),
            "spearman": float(spearmanr(x, y).statistic)}  # fmt: skip


def rate_tag(optim: OptimConfig, explicit: bool) -> str:
    """The folder suffix of a learning-rate recipe: empty for the recipe's own unscaled rate
    (the first runs' folders), else ``lr<peak>`` and ``scaled<d>x<layers>p<power>``."""
    parts = [f"lr{optim.lr:g}"] if explicit else []
    if (s := optim.lr_scale) is not None:
        parts.append(f"scaled{s.d_model}x{s.layers}p{s.power:g}")
    return "-".join(parts)


#: supernet settings added after the first runs, left out of a folder's name at these values
ADDED_LATER = {"shrink_order": "together"}

#: normalised objectives' reference point, as bench/table_search.py
REFERENCE = 1.1


def trainings_to_share(order: list[int], points: np.ndarray, share: float) -> int:
    """How many stand-alone trainings, taken in ``order``, until the hypervolume of what they
    trained reaches ``share`` of every path's (objectives min-max normalised over the paths)."""
    return _counter(points, share)(order)


def _counter(points: np.ndarray, share: float) -> Callable[[list[int]], int]:
    """:func:`trainings_to_share` for many orders of the same paths: the normalisation and
    the target hypervolume computed once."""
    norm = normalize(points, points.min(axis=0), points.max(axis=0))
    ref = [REFERENCE] * points.shape[1]
    target = share * hypervolume(norm, ref) - 1e-12

    def count(order: list[int]) -> int:
        for k in range(1, len(order) + 1):
            if hypervolume(norm[order[:k]], ref) >= target:
                return k
        raise AssertionError("every path trained reaches the best hypervolume")

    return count


def search_cost(
    reference: list[float],
    params: list[int],
    minutes: list[float],
    steps: int,
    rankings: dict[str, dict[str, Any]],
    shares: tuple[float, ...] = (0.95, 0.99),
    draws: int = 2_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The cost of reaching ``shares`` of the best hypervolume of (stand-alone dev WER,
    parameters) over these paths, in optimizer steps and in CPU minutes.

    Random search trains paths in a random order (``draws`` orders, mean ± sd). A one-shot
    search (``rankings[name]``: ``inherited`` dev WERs, supernet ``path_steps`` and
    ``cpu_minutes``) first pays for its supernet, then trains the paths in the order it would
    hand them over (:func:`pick_finalists` on inherited WER and parameters: its front first,
    spread by crowding distance) until the stand-alone results reach the share. A path's
    training costs ``steps`` and its stand-alone minutes (``minutes``, one thread). The
    one-shot search fine-tunes its finalists from inherited weights rather than training them
    from scratch; counting a whole training for each is the conservative side."""
    points = np.column_stack([reference, params]).astype(float)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for share in shares:
        key = f"{share:g}"
        count = _counter(points, share)
        counts, cost_min = [], []
        for _ in range(draws):  # minutes depend on which paths a random order trains first
            order = list(rng.permutation(len(points)))
            counts.append(k := count(order))
            cost_min.append(sum(minutes[i] for i in order[:k]))
        rows = {"random": {
            "trainings": _ms(counts), "steps": _ms([steps * c for c in counts]),
            "cpu_minutes": _ms(cost_min),
        }}  # fmt: skip
        for name, r in rankings.items():
            recs = [
                {"key": str(i), "values": (w, p)}
                for i, (w, p) in enumerate(zip(r["inherited"], params, strict=True))
            ]
            order = [int(x["key"]) for x in pick_finalists(recs, len(recs))]
            k = count(order)
            rows[name] = {
                "order": order, "trainings": k,
                "steps": r["path_steps"] + steps * k,
                "cpu_minutes": r["cpu_minutes"] + sum(minutes[i] for i in order[:k]),
            }  # fmt: skip
        out[key] = rows
    return out


def across_seeds(
    rows: list[dict[str, Any]], reference: list[float], cost: dict[str, Any]
) -> dict[str, Any]:
    """Each variant over its supernet seeds: tau (mean ± sd), the tau of its seeds' mean
    inherited WER, the mean inherited WER over the paths per seed, and its cost ratio to random
    search per share (mean ± sd). And every other variant against the first, paired by supernet
    seed: the differences of tau and of the paths' mean inherited WER, seed by seed, and in how
    many seeds the other variant ranks better and scores lower."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    out: dict[str, Any] = {"variants": {}, "against_first": {}}
    for name, runs in by.items():
        taus = [r["kendall_tau"] for r in runs if r["kendall_tau"] is not None]
        mean_wer = np.mean([r["inherited_dev_wer"] for r in runs], axis=0)
        ratios = {
            share: {unit: [c[r["run"]][unit] / c["random"][unit]["mean"] for r in runs]
                    for unit in ("steps", "cpu_minutes")}
            for share, c in cost.items()
        }  # fmt: skip
        out["variants"][name] = {
            "seeds": len(runs),
            "kendall_tau": _ms(taus),
            "of_mean": tau([float(w) for w in mean_wer], reference),
            "path_mean_wer": [float(np.mean(r["inherited_dev_wer"])) for r in runs],
            "train_minutes": _ms([r["train_minutes"] for r in runs]),
            "ratio_to_random": {
                share: {unit: _ms(v) for unit, v in units.items()}
                for share, units in ratios.items()
            },
        }
    names = list(by)
    first = {r["seed"]: r for r in by[names[0]]}
    for name in names[1:]:
        pairs = [(first[r["seed"]], r) for r in by[name] if r["seed"] in first]
        d_tau = [b["kendall_tau"] - a["kendall_tau"] for a, b in pairs
                 if a["kendall_tau"] is not None and b["kendall_tau"] is not None]  # fmt: skip
        d_wer = [float(np.mean(b["inherited_dev_wer"]) - np.mean(a["inherited_dev_wer"]))
                 for a, b in pairs]  # fmt: skip
        out["against_first"][name] = {
            "first": names[0], "seeds": [b["seed"] for _, b in pairs],
            "tau_difference": d_tau, "path_mean_wer_difference": d_wer,
            "tau_higher_in": sum(d > 0 for d in d_tau),
            "wer_lower_in": sum(d < 0 for d in d_wer),
        }  # fmt: skip
    return out


def _ms(xs: list[float]) -> dict[str, float | None]:
    """Mean and sample sd (sd 0 for a single value, None for none)."""
    if not xs:
        return {"mean": None, "sd": None}
    sd = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
    return {"mean": float(np.mean(xs)), "sd": sd}


def show(v: float | None) -> str:
    return "undefined (a constant side)" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench-supernet-rank")
    ap.add_argument("--paths", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--standalone-steps", type=int, default=800)
    ap.add_argument("--supernet-steps", type=int, default=1000)
    ap.add_argument(
        "--supernet-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="train every variant's supernet once per seed (supernet-seed noise)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate of every training (default: the search's recipe)",
    )
    ap.add_argument(
        "--lr-scale",
        choices=["recipe", "on", "off"],
        default="recipe",
        help="lower the peak rate for bigger encoders (optim.lr_scale at its defaults: "
        "width x depth over 64 x 2, square root); recipe: as the search's recipe says",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["sandwich2:random_subnets=2", "sandwich4:random_subnets=4"],
    )
    args = ap.parse_args(argv)  # fmt: skip
    if len(args.seeds) < 1 or args.paths < 4:
        ap.error("--paths: at least 4; --seeds: at least one")
    if len(set(args.supernet_seeds)) != len(args.supernet_seeds):
        ap.error(f"--supernet-seeds {args.supernet_seeds}: a seed given twice")
    variants = dict(parse_variant(v) for v in args.variants)
    out = Path(args.out)
    default, sub, space_file = write_subspace(out)
    cfg = default.replace(space=str(space_file), seed=0)
    base = prepare_base(cfg)
    tbase = trial_base(cfg, base)
    if args.lr is not None:
        tbase = tbase.replace(optim=dataclasses.replace(tbase.optim, lr=args.lr))
    if args.lr_scale != "recipe":
        scale = LrScaleConfig() if args.lr_scale == "on" else None
        tbase = tbase.replace(optim=dataclasses.replace(tbase.optim, lr_scale=scale))
    rate = rate_tag(tbase.optim, args.lr is not None)
    tag = f"{args.standalone_steps}" + (f"-{rate}" if rate else "")
    vocab = vocab_size(tbase)
    paths = spread(sub, args.paths, vocab, 0)

    # stand-alone references, every seed
    jobs = [(a.to_json(), tbase, args.standalone_steps,
             str(out / "standalone" / f"{a.hash()[:8]}-s{s}-{tag}"), s)
            for a in paths for s in args.seeds]  # fmt: skip
    CONSOLE.print(f"{len(jobs)} stand-alone trainings of {args.standalone_steps} steps")
    alone = map_jobs(_standalone, jobs, args.workers)  # a killed worker's job runs again
    per_seed = {s: [alone[i * len(args.seeds) + k]["dev_wer"] for i in range(len(paths))]
                for k, s in enumerate(args.seeds)}  # fmt: skip
    reference = [statistics.fmean(per_seed[s][i] for s in args.seeds) for i in range(len(paths))]
    ceiling = [
        {"seeds": [a, b], **tau(per_seed[a], per_seed[b])}
        for a, b in itertools.combinations(args.seeds, 2)
    ]

    # one supernet per variant, its paths scored by inherited weights
    rows = []
    for name, options in variants.items():
        opts = OneShotOptions.from_options(
            {**options, "threads": args.threads, "supernet_steps": args.supernet_steps,
             "supernet_minutes": 600.0}
        )  # fmt: skip
        # The folder names the supernet's settings too, so a rerun never reuses a supernet
        # trained otherwise under the same variant name (as when a default changes).
        settings = dataclasses.asdict(opts.supernet_config())
        for key, default in ADDED_LATER.items():  # so the supernets trained before are reused
            if settings.get(key) == default:
                del settings[key]
        spec = json.dumps(settings, sort_keys=True)
        digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
        for seed in args.supernet_seeds:
            # seed 0 keeps the folder of the runs made before supernet seeds were an option
            leaf = rate if seed == 0 else "-".join(filter(None, [rate, f"s{seed}"]))
            folder = out / f"supernet-{name}-{args.supernet_steps}-{digest}" / leaf
            CONSOLE.print(f"supernet {name}, seed {seed}: {options}, {args.supernet_steps} steps")
            t0 = time.perf_counter()
            trained = train_supernet(tbase, str(space_file), opts, folder, seed=seed,
                                     show_progress=True)  # fmt: skip
            scorer = PathScorer(folder / "last", tbase.data.dev, utterances=0, seed=0)
            inherited = [scorer(a)["dev_wer"] for a in paths]
            rows.append({
                "variant": name, "seed": seed, "options": options, "steps": trained["steps"],
                "run": name if len(args.supernet_seeds) == 1 else f"{name}/s{seed}",
                "train_minutes": trained["train_seconds"] / 60,
                "wall_minutes_this_run": (time.perf_counter() - t0) / 60,
                "paths_per_step": 2 + opts.random_subnets,  # the sandwich rule
                "cpu_minutes": trained["train_seconds"] / 60 * args.threads,
                "inherited_dev_wer": inherited, **tau(inherited, reference),
                "per_seed": {str(s): tau(inherited, per_seed[s]) for s in args.seeds},
            })  # fmt: skip

    params = [count_parameters(a, vocab_size=vocab) for a in paths]
    size = tau([-p for p in params], reference)
    minutes = [
        statistics.fmean(alone[i * len(args.seeds) + k]["minutes"] for k in range(len(args.seeds)))
        for i in range(len(paths))
    ]
    cost = search_cost(
        reference, params, minutes, args.standalone_steps,
        {r["run"]: {"inherited": r["inherited_dev_wer"],
                        "path_steps": r["steps"] * r["paths_per_step"],
                        "cpu_minutes": r["cpu_minutes"]} for r in rows},
    )  # fmt: skip
    report = {
        "versions": versions(), "args": vars(args), "subspace_paths": sub.count(),
        "paths": [{"arch": a.to_json(), "params": params[i],
                   "standalone_dev_wer": {str(s): per_seed[s][i] for s in args.seeds},
                   "reference": reference[i]} for i, a in enumerate(paths)],
        "ceiling": ceiling, "variants": rows, "parameters_alone": size,
        "search_cost": cost, "across_seeds": across_seeds(rows, reference, cost),
    }  # fmt: skip
    (out / f"report-{tag}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    table = Table(title=f"ranking {len(paths)} paths against stand-alone training "
                        f"({args.standalone_steps} steps, seeds {args.seeds})")  # fmt: skip
    for col in ("ranker", "steps", "train min", "Kendall tau", "Spearman"):
        table.add_column(col)
    for c in ceiling:
        table.add_row(f"stand-alone seed {c['seeds'][0]} vs {c['seeds'][1]} (ceiling)",
                      str(args.standalone_steps), "", show(c["kendall_tau"]),
                      show(c["spearman"]))  # fmt: skip
    for r in rows:
        table.add_row(f"supernet {r['run']}", str(r["steps"]), f"{r['train_minutes']:.1f}",
                      show(r["kendall_tau"]), show(r["spearman"]))  # fmt: skip
    if len(args.supernet_seeds) > 1:
        for name, a in report["across_seeds"]["variants"].items():
            t = a["kendall_tau"]
            table.add_row(f"supernet {name}, {a['seeds']} seeds: mean ± sd", "",
                          f"{a['train_minutes']['mean']:.1f}",
                          f"{t['mean']:.2f} ± {t['sd']:.2f}", "")  # fmt: skip
            table.add_row(f"supernet {name}, mean inherited WER of its seeds", "", "",
                          show(a["of_mean"]["kendall_tau"]),
                          show(a["of_mean"]["spearman"]))  # fmt: skip
    table.add_row("parameters alone (bigger is better)", "", "", show(size["kendall_tau"]),
                  show(size["spearman"]))  # fmt: skip
    CONSOLE.print(table)
    table = Table(title=f"cost to a share of the best hypervolume of (stand-alone dev WER, "
                        f"parameters) over these {len(paths)} paths")  # fmt: skip
    for col in ("search", "share", "trainings", "steps", "CPU minutes", "ratio to random"):
        table.add_column(col)
    for share, by in cost.items():
        rand = by["random"]
        for name, c in by.items():
            if name == "random":
                cells = [
                    f"{c['trainings']['mean']:.1f} ± {c['trainings']['sd']:.1f}",
                    f"{c['steps']['mean']:,.0f} ± {c['steps']['sd']:,.0f}",
                    f"{c['cpu_minutes']['mean']:.1f} ± {c['cpu_minutes']['sd']:.1f}",
                    "1",
                ]
            else:
                cells = [
                    str(c["trainings"]),
                    f"{c['steps']:,}",
                    f"{c['cpu_minutes']:.1f}",
                    f"{c['steps'] / rand['steps']['mean']:.2f} (steps), "
                    f"{c['cpu_minutes'] / rand['cpu_minutes']['mean']:.2f} (minutes)",
                ]
            table.add_row("random" if name == "random" else f"one-shot {name}", share, *cells)
    CONSOLE.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
