"""How the batch size of the search's recipe decides what a minute-budgeted rung can see.

The default search judges candidates after 2 and 3 minutes of training on one thread. This
trains the search's seed (``small`` on Kaldi features, the search's recipe) for ``--minutes``
with each ``--batch-seconds`` (``optim.max_batch_seconds``), one thread per training,
``--workers`` trainings side by side (so every size meets the same load), and scores dev (and
``test``) every half minute. It prints JSON and a table: dev WER at each mark, mean ± sd over
``--seeds``, and the optimizer steps reached.

This benchmark is about wall-clock rungs, so its budgets are minutes on purpose: its figures
belong to the CPU they were measured on (the JSON names it).

    .venv/bin/python bench/batch_seconds.py --batch-seconds 60 30 20 15 --seeds 0 1 --minutes 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from _jobs import map_jobs


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """One training (a top-level function: a spawned pool runs it); cached in its folder."""
    import torch

    from speechnas.nn.presets import preset
    from speechnas.search.config import load_search_config
    from speechnas.search.runner import prepare_base
    from speechnas.train.trainer import Trainer

    out = Path(job["out"])
    done = out / "bench-row.json"  # beside the trainer's own result.json, never over it
    if done.is_file():
        return json.loads(done.read_text())
    torch.set_num_threads(1)
    base = prepare_base(load_search_config(job["config"])).replace(space=None)
    marks = tuple(np.arange(0.5, job["minutes"], 0.5).round(2).tolist())
    cfg = base.replace(
        arch=preset("small", frontend="knf80").to_json(),
        seed=job["seed"],
        threads=1,
        output_dir=str(out),
        data=dataclasses.replace(base.data, test={"test": base.data.test["test"]}),
        optim=dataclasses.replace(base.optim, max_batch_seconds=job["batch_seconds"]),
        budget=dataclasses.replace(base.budget, max_minutes=job["minutes"], max_steps=None,
                                   eval_at_minutes=marks, checkpoint_every_minutes=1e9),
    )  # fmt: skip
    result = Trainer.from_config(cfg).fit(resume=False)
    row = {
        "batch_seconds": job["batch_seconds"],
        "seed": job["seed"],
        "steps": result.steps,
        "marks": [
            {"minutes": m["minutes"], "step": m["step"], "dev": m["results"]["dev"]["wer"]}
            for m in json.loads((out / "result.json").read_text())["marks"]
        ]
        + [{"minutes": job["minutes"], "step": result.steps, "dev": result.best_dev_wer}],
        "test": result.test["test"]["wer"],
    }
    done.write_text(json.dumps(row))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-seconds", type=float, nargs="+", default=[60, 30, 20, 15])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--config", default=str(resources.files("speechnas") / "configs" /
                                            "search.yaml"))  # fmt: skip
    ap.add_argument("--out", default="runs/bench-batch-seconds")
    args = ap.parse_args()
    jobs = [
        {"config": args.config, "batch_seconds": b, "seed": s, "minutes": args.minutes,
         "out": str(Path(args.out) / f"b{b:g}-m{args.minutes:g}" / f"seed{s}")}
        for s in args.seeds for b in args.batch_seconds
    ]  # fmt: skip
    rows = map_jobs(train_one, jobs, args.workers)
    summary = []
    for b in args.batch_seconds:
        mine = [r for r in rows if r["batch_seconds"] == b]
        at: dict[float, list[float]] = {}
        for r in mine:
            for m in r["marks"]:
                at.setdefault(float(m["minutes"]), []).append(100 * m["dev"])
        summary.append({
            "batch_seconds": b,
            "steps": [r["steps"] for r in mine],
            "dev_wer": {f"{k:g}": [float(np.mean(v)), float(np.std(v))] for k, v in at.items()},
            "test_wer": [100 * r["test"] for r in mine],
        })  # fmt: skip
    from speechnas.hardware.cpu import cpu_report
    from speechnas.versions import versions

    out = {"cpu": cpu_report(), "versions": versions(), "minutes": args.minutes,
           "seeds": args.seeds, "summary": summary, "rows": rows}  # fmt: skip
    print(json.dumps(out, indent=1))
    marks = list(summary[0]["dev_wer"])
    print("\n| batch (s) | steps | " + " | ".join(f"dev WER at {m} min" for m in marks) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in marks) + " |")
    for s in summary:
        cells = [f"{s['dev_wer'][m][0]:.1f} ± {s['dev_wer'][m][1]:.1f}" for m in marks]
        print(f"| {s['batch_seconds']:g} | {'/'.join(map(str, s['steps']))} | "
              + " | ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
