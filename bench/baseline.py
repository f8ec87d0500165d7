"""Baseline benchmark: Conformer-CTC of three sizes on the built-in digits corpus.

Prints JSON: corpus statistics (generation speed, hours per split), and per model size the
parameter count, WER/CER on dev and every test set after each time mark, and training throughput
in seconds of audio per second. Run by hand:

    .venv/bin/python bench/baseline.py                      # 20 min per size, marks 5/10/20
    .venv/bin/python bench/baseline.py --sizes base --minutes 5 --marks 5
    .venv/bin/python bench/baseline.py --sizes small --steps 600 --seeds 0,1 --threads 1

``--steps`` trains a fixed number of steps instead (the same work on any machine, so old and new
code or two machines compare without timing noise); WER is then reported at the end only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

from speechnas.cli import default_config_path
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.train.config import ModelConfig, load_config
from speechnas.train.trainer import Trainer
from speechnas.versions import versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,base,large")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--marks", default="5,10,20")
    ap.add_argument("--corpora", default="corpora")
    ap.add_argument("--out", default="runs/bench-baseline")
    ap.add_argument("--rebuild-corpus", action="store_true", help="time corpus generation anew")
    ap.add_argument("--steps", type=int, default=None, help="a step budget instead of minutes")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (config default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    info = build_corpus(CorpusConfig(), args.corpora, force=args.rebuild_corpus)
    base = load_config(default_config_path())
    m = info.manifests
    data = base.data.with_corpus(m)
    marks = tuple(float(x) for x in args.marks.split(","))
    report = {
        "corpus": {"folder": str(info.folder), **info.stats},
        "budget": {"steps": args.steps} if args.steps else {"minutes": args.minutes},
        "versions": versions(),
        "models": {},
    }
    if args.steps is not None:
        budget = dataclasses.replace(
            base.budget, max_minutes=None, max_steps=args.steps, eval_at_minutes=(), patience=None
        )
    else:
        budget = dataclasses.replace(
            base.budget, max_minutes=args.minutes, eval_at_minutes=marks, patience=None
        )
    runs = [(size, int(seed)) for size in args.sizes.split(",") for seed in args.seeds.split(",")]
    for size, seed in runs:
        name = size if len(args.seeds.split(",")) == 1 else f"{size}-seed{seed}"
        cfg = base.replace(
            data=data,
            model=ModelConfig(preset=size),
            seed=seed,
            threads=args.threads or base.threads,
            output_dir=f"{args.out}/{name}",
            budget=budget,
        )
        start = time.perf_counter()
        result = Trainer.from_config(cfg, show_progress=False).fit(resume=False)
        report["models"][name] = {
            "parameters": result.parameters,
            "seed": seed,
            "arch": cfg.architecture().to_json(),
            "wall_minutes": (time.perf_counter() - start) / 60,
            "train_minutes": result.train_seconds / 60,
            "epochs": result.epochs,
            "steps": result.steps,
            "throughput_audio_s_per_s": result.throughput,
            "marks": {
                f"{mk['minutes']:g}min": {k: round(v["wer"], 5) for k, v in mk["results"].items()}
                for mk in result.marks
            },
            "marks_cer": {
                f"{mk['minutes']:g}min": {k: round(v["cer"], 5) for k, v in mk["results"].items()}
                for mk in result.marks
            },
            "best_dev": {
                "dev_wer": result.best_dev_wer,
                **{k: round(v["wer"], 5) for k, v in result.test.items()},
            },
            "history": result.history,
        }
        print(json.dumps({name: report["models"][name]["best_dev"]}), file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
