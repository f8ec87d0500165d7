"""On-device choices measured: the MAD pre-normaliser against plain LayerNorm.

One architecture (a preset) is trained with ``norm: layernorm`` and with ``norm: mad_prenorm``,
once per ``--seeds`` seed, with the same step budget and recipe (the default search's), and both
are scored on the built-in test sets: WER mean ± sd over seeds, a paired bootstrap over the
pooled seeds and MAPSSWE per seed pair. Also, for each trained model, the largest |activation -
mean| entering any LayerNorm on the test set (in float32) and whether a float16 LayerNorm
computed op by op overflows on it. Prints JSON and a table; a rerun reuses finished trainings.

    .venv/bin/python bench/ondevice.py --arch small --seeds 0,1 --steps 600
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _retrain import trained
from rich.console import Console
from rich.table import Table

from speechnas.data.dataset import SpeechDataset
from speechnas.data.loading import load_utterances
from speechnas.evaluate.decode import prepare_batches
from speechnas.evaluate.significance import mapsswe, paired_bootstrap, utterance_errors
from speechnas.nn.presets import preset
from speechnas.search.config import default_search_path, load_search_config
from speechnas.search.runner import prepare_base
from speechnas.space import Arch
from speechnas.train.checkpoint import load_model
from speechnas.versions import versions

NORMS = ("layernorm", "mad_prenorm")


@torch.no_grad()
def largest_deviation(checkpoint: str, manifest: str, n: int = 50) -> float:
    """max |x - mean(x)| over the inputs of every LayerNorm, on ``n`` test utterances."""
    loaded = load_model(checkpoint)
    ds = SpeechDataset(load_utterances(manifest, skip_invalid=False)[:n], loaded.tokenizer,
                       loaded.features)  # fmt: skip
    worst = [0.0]

    def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        worst[0] = max(worst[0], float((x - x.mean(-1, keepdim=True)).abs().max()))

    for m in loaded.model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.register_forward_pre_hook(hook)
    for _, batch in prepare_batches(ds):
        loaded.model.encode(batch.feats, batch.feat_lens)
    return worst[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(default_search_path()), help="search config: recipe")
    ap.add_argument("--arch", default="small", help="a preset name")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-ondevice")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    base = prepare_base(load_search_config(args.config)).replace(space=None)
    tests = dict(base.data.test)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {}
    for norm in NORMS:
        arch = Arch({**preset(args.arch), "norm": norm})
        runs[norm] = [
            trained(Path(args.out) / f"{args.arch}-{norm}" / f"seed{seed}", base, arch, tests,
                    minutes=1e6, seed=seed, steps=args.steps, threads=args.threads)
            for seed in seeds
        ]  # fmt: skip
    refs = {t: [u.text for u in load_utterances(m, skip_invalid=False)] for t, m in tests.items()}
    rows: dict[str, Any] = {}
    for norm, results in runs.items():
        wer = {}
        for t in tests:
            words = utterance_errors(refs[t], refs[t])[1].sum()
            per_seed = [
                float(utterance_errors(refs[t], r["hypotheses"][t])[0].sum() / words)
                for r in results
            ]
            wer[t] = {"mean": float(np.mean(per_seed)), "sd": float(np.std(per_seed, ddof=1))
                      if len(per_seed) > 1 else 0.0, "seeds": per_seed}  # fmt: skip
        dev = [largest_deviation(r["metrics"]["checkpoint"], tests["test"]) for r in results]
        rows[norm] = {"wer": wer, "largest_layernorm_deviation": dev,
                      "fp16_squares_overflow": [d * d > 65504 for d in dev]}  # fmt: skip
    tests_vs = {}
    for t in tests:
        words = utterance_errors(refs[t], refs[t])[1]
        err = {
            n: [utterance_errors(refs[t], r["hypotheses"][t])[0] for r in runs[n]] for n in NORMS
        }
        tests_vs[t] = {
            "bootstrap": paired_bootstrap(err["mad_prenorm"], err["layernorm"], words).to_dict(),
            "mapsswe_per_seed": [
                mapsswe(refs[t], a["hypotheses"][t], b["hypotheses"][t]).p_value
                for a, b in zip(runs["mad_prenorm"], runs["layernorm"], strict=True)
            ],
        }
    report = {"arch": args.arch, "seeds": seeds, "steps": args.steps, "models": rows,
              "mad_prenorm_vs_layernorm": tests_vs, "versions": versions()}  # fmt: skip
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    table = Table(
        title=f"{args.arch}: WER % (mean ± sd over seeds {args.seeds}), {args.steps} steps"
    )
    for col in ("norm", *tests, "max |x - mean| into a LayerNorm"):
        table.add_column(col, justify="left" if col == "norm" else "right")
    for norm, r in rows.items():
        table.add_row(norm, *(f"{100 * r['wer'][t]['mean']:.2f} ± {100 * r['wer'][t]['sd']:.2f}"
                              for t in tests),
                      ", ".join(f"{d:.0f}" for d in r["largest_layernorm_deviation"]))  # fmt: skip
    Console(width=160).print(table)
    for t, v in tests_vs.items():
        b = v["bootstrap"]
        print(
            f"{t}: mad - layernorm {100 * b['delta']:+.2f} points, bootstrap p {b['p_value']:.3f}, "
            f"MAPSSWE p per seed {[round(p, 3) for p in v['mapsswe_per_seed']]}"
        )


if __name__ == "__main__":
    main()
