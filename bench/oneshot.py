"""One-shot benchmark: ranking quality, cost against a multi-trial search, and the best
extracted subnet against the same architecture trained from scratch. Prints JSON.

All on the built-in digits corpus and one subspace: the elastic subspace of the default search
space (``supernet_space`` of ``configs/search-space.yaml``), written to ``OUT/subspace.yaml`` so
both searches see exactly the same architectures.

1. One-shot search (``strategy: oneshot``) into ``OUT/oneshot``: supernet, scoring, finalists.
2. Multi-trial search (the default search's NSGA-II and successive halving) into ``OUT/multi``
   on the same subspace, objectives and target.
   Cost: CPU seconds of this process and its children during each search; the fronts'
   hypervolume over (wer:test, predicted latency) in the box from 0 to the default search's
   reference point, scaled to [0, 1];
   and the multi-trial compute (sum of its trials' training seconds, one thread each) at which
   its hypervolume first reached the one-shot search's.
3. Ranking: ``--subnets`` paths spread over the subspace by parameter count (the smallest, the
   largest, and even quantiles of a random sample between them) are scored on the whole dev set
   by inherited weights and trained stand-alone for ``--standalone-minutes`` each (two at a
   time, one thread each); Kendall tau and Spearman rho between the two dev WERs.
4. The best one-shot finalist (lowest test WER after fine-tuning) against its architecture
   trained from scratch for the supernet's training time plus its fine-tuning time, on the
   same threads.

    .venv/bin/python bench/oneshot.py                       # about 50 minutes on 2 cores
    .venv/bin/python bench/oneshot.py --supernet-minutes 4 --subnets 15 --standalone-minutes 1

Run again into the same ``--out``, it resumes: both searches are reused, and with a larger
``--standalone-minutes`` the stand-alone models continue from their checkpoints (so a longer
reference costs only the extra minutes); ``--skip-multi --skip-scratch`` leave those parts out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from speechnas.nn.cost import count_parameters
from speechnas.nn.supernet import largest, smallest, supernet_space
from speechnas.search.config import SearchConfig, default_search_path, load_search_config
from speechnas.search.drivers.oneshot import PathScorer
from speechnas.search.runner import prepare_base, run_search, trial_base, vocab_size
from speechnas.search.select import front, normalized_hypervolume, results
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, SearchSpace, load_space
from speechnas.versions import versions

CONSOLE = Console(stderr=True)  # progress to stderr; stdout carries only the JSON


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def spread(space: SearchSpace, n: int, vocab: int, seed: int) -> list[Arch]:
    """``n`` distinct paths from the smallest to the largest, evenly spaced in parameters."""
    rng = random.Random(seed)
    pool = {a.hash(): a for a in (space.sample(rng) for _ in range(40 * n))}
    pool.pop(smallest(space).hash(), None)
    pool.pop(largest(space).hash(), None)
    ranked = sorted(pool.values(), key=lambda a: (count_parameters(a, vocab_size=vocab), a.key()))
    inner = [ranked[round(i * (len(ranked) - 1) / (n - 3))] for i in range(n - 2)]
    return [smallest(space), *inner, largest(space)]


def write_subspace(out: Path) -> tuple[SearchConfig, SearchSpace, Path]:
    """The default search config, its supernet subspace, and that subspace written to
    ``out/subspace.yaml`` so every search and training of a benchmark sees the same one."""
    out.mkdir(parents=True, exist_ok=True)
    default = load_search_config(default_search_path())
    sub = supernet_space(load_space(default.space))
    space_file = out / "subspace.yaml"
    space_file.write_text(yaml.safe_dump(sub.to_dict(), sort_keys=False))
    return default, sub, space_file


def _standalone(job: tuple[dict[str, Any], Any, float, str, int]) -> dict[str, Any]:
    import torch

    arch_json, base, minutes, out, seed = job
    torch.set_num_threads(1)
    arch = Arch.from_json(arch_json)
    m = run_trial(arch, base=base.replace(threads=1), fidelity=Fidelity(minutes, 1.0),
                  output_dir=out, seed=seed)  # fmt: skip
    return {"key": arch.hash(), "dev_wer": m["dev_wer"], "wer:test": m["wer:test"],
            "steps": m["steps"], "params": m["params"]}  # fmt: skip


def front_hv(study: Any, reference: tuple[float, ...]) -> tuple[float, list[dict[str, Any]]]:
    fr = front(results(study))
    return normalized_hypervolume([r.values for r in fr], reference), [
        {"key": r.key, "values": list(r.values)} for r in fr
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench-oneshot")
    ap.add_argument("--supernet-minutes", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evaluations", type=int, default=60)
    ap.add_argument("--finalists", type=int, default=4)
    ap.add_argument("--finetune-minutes", type=float, default=0.5)
    ap.add_argument("--subnets", type=int, default=16)
    ap.add_argument("--standalone-minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-multi", action="store_true", help="no multi-trial search")
    ap.add_argument("--skip-scratch", action="store_true", help="no from-scratch comparison")
    args = ap.parse_args(argv)
    out = Path(args.out)
    default, sub, space_file = write_subspace(out)
    common = default.replace(space=str(space_file), retrain_minutes=0, seed=args.seed)
    reference = tuple(float(common.reference[o]) for o in common.objectives)
    report: dict[str, Any] = {"versions": versions(), "args": vars(args), "paths": sub.count()}

    # 1. one-shot search
    options = {
        "supernet_minutes": args.supernet_minutes, "threads": args.threads,
        "evaluations": args.evaluations, "finalists": args.finalists,
        "finetune_minutes": args.finetune_minutes,
    }  # fmt: skip
    oneshot_cfg = common.replace(
        strategy=dataclasses.replace(common.strategy, name="oneshot", options=options),
        output_dir=str(out / "oneshot"),
    )
    cpu, wall = cpu_seconds(), time.perf_counter()
    one = run_search(oneshot_cfg, resume=(out / "oneshot" / "study.db").exists(), console=CONSOLE)
    hv_one, front_one = front_hv(one.study, reference)
    summary = one.study.study.user_attrs["oneshot"]
    report["oneshot"] = {
        "cpu_minutes": (cpu_seconds() - cpu) / 60,
        "wall_minutes": (time.perf_counter() - wall) / 60,
        "hypervolume": hv_one,
        "front": front_one,
        "summary": {k: summary[k] for k in ("supernet", "proposed", "scored", "wall_seconds")},
    }
    print(json.dumps({"oneshot": report["oneshot"]}), file=sys.stderr)

    # 2. multi-trial search on the same subspace
    if not args.skip_multi:
        multi_cfg = common.replace(output_dir=str(out / "multi"))
        cpu, wall = cpu_seconds(), time.perf_counter()
        multi = run_search(multi_cfg, resume=(out / "multi" / "study.db").exists(), console=CONSOLE)
        hv_multi, front_multi = front_hv(multi.study, reference)
        spent, reached = 0.0, None
        done = sorted(
            (t for t in multi.study.trials() if t.datetime_complete is not None),
            key=lambda t: t.datetime_complete,
        )
        for k, t in enumerate(done):
            spent += float(t.user_attrs.get("metrics", {}).get("wall_seconds", 0.0))
            hv_k, _ = front_hv(done[: k + 1], reference)
            if reached is None and hv_k >= hv_one:
                reached = {"trials": k + 1, "train_cpu_minutes": spent / 60}
        report["multi_trial"] = {
            "cpu_minutes": (cpu_seconds() - cpu) / 60,
            "wall_minutes": (time.perf_counter() - wall) / 60,
            "hypervolume": hv_multi,
            "front": front_multi,
            "trials": len(done),
            "train_cpu_minutes": spent / 60,
            "reached_oneshot_hypervolume": reached,
        }
        print(json.dumps({"multi_trial": report["multi_trial"]}), file=sys.stderr)

    # 3. ranking: inherited dev WER against stand-alone dev WER
    base = prepare_base(common)
    tbase = trial_base(common, base)
    vocab = vocab_size(tbase)
    paths = spread(sub, args.subnets, vocab, args.seed)
    scorer = PathScorer(out / "oneshot" / "supernet" / "last", tbase.data.dev, utterances=0,
                        seed=args.seed)  # fmt: skip
    inherited = {a.hash(): scorer(a)["dev_wer"] for a in paths}
    jobs = [
        (a.to_json(), tbase, args.standalone_minutes, str(out / "standalone" / a.hash()[:8]),
         args.seed)
        for a in paths
    ]  # fmt: skip
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        alone = list(pool.map(_standalone, jobs))
    from scipy.stats import kendalltau, spearmanr

    x = [inherited[r["key"]] for r in alone]
    y = [r["dev_wer"] for r in alone]
    report["ranking"] = {
        "subnets": len(paths),
        "kendall_tau": float(kendalltau(x, y).statistic),
        "spearman": float(spearmanr(x, y).statistic),
        "rows": [{**r, "inherited_dev_wer": inherited[r["key"]]} for r in alone],
    }
    print(json.dumps({"ranking": {k: v for k, v in report["ranking"].items() if k != "rows"}}),
          file=sys.stderr)  # fmt: skip

    # 4. the best finalist against its architecture trained from scratch for the same time
    if not args.skip_scratch:
        best = min(
            (t for t in one.study.trials() if t.values),
            key=lambda t: t.user_attrs["metrics"]["wer:test"],
        )
        arch = Arch.from_json(best.user_attrs["arch"])
        m = best.user_attrs["metrics"]
        minutes = summary["supernet"]["train_seconds"] / 60 + m["train_minutes"]
        scratch = run_trial(
            arch, base=tbase.replace(threads=args.threads), fidelity=Fidelity(minutes, 1.0),
            output_dir=out / "scratch" / arch.hash()[:8], seed=args.seed,
        )  # fmt: skip
        report["finalist_vs_scratch"] = {
            "arch": arch.to_json(),
            "params": m["params"],
            "minutes_each": minutes,
            "oneshot": {"inherited_dev_wer": best.user_attrs["inherited"]["dev_wer"],
                        "dev_wer": m["dev_wer"], "wer:test": m["wer:test"],
                        "finetune_steps": m["steps"]},
            "scratch": {"dev_wer": scratch["dev_wer"], "wer:test": scratch["wer:test"],
                        "steps": scratch["steps"]},
        }  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
