"""Trains the same config with the same seed twice and prints both results at full precision.

.venv/bin/python bench/repeatability.py            # base model, 10% of train, 80 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from safetensors.torch import load_file

from speechnas.cli import default_config_path
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.train.config import ModelConfig, load_config
from speechnas.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--preset", default="small", help="model size: small, base, large")
    ap.add_argument("--out", default="runs/bench-repeat")
    args = ap.parse_args()
    info = build_corpus(CorpusConfig(), "corpora")
    base = load_config(default_config_path())
    m = info.manifests
    runs = []
    for name in ("a", "b"):
        cfg = base.replace(
            model=ModelConfig(preset=args.preset),
            output_dir=f"{args.out}/{name}",
            data=dataclasses.replace(
                base.data,
                train=str(m["train"]),
                dev=str(m["dev"]),
                test={"test": str(m["test"])},
                fraction=args.fraction,
            ),
            budget=dataclasses.replace(base.budget, max_minutes=None, max_steps=args.steps),
        )
        r = Trainer.from_config(cfg, show_progress=False).fit(resume=False)
        test = {k: v for k, v in r.test["test"].items() if k != "rtf"}  # rtf is a timing
        runs.append({"dev_wer": r.best_dev_wer, "test": test, "steps": r.steps})
    wa = load_file(f"{args.out}/a/last/model.safetensors")
    wb = load_file(f"{args.out}/b/last/model.safetensors")
    same = all(bool((wa[k] == wb[k]).all()) for k in wa)
    print(
        json.dumps(
            {
                "runs": runs,
                "identical_wer": runs[0]["test"]["wer"] == runs[1]["test"]["wer"],
                "identical_weights": same,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
