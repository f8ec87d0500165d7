"""Does training through recording devices help on devices no training utterance passed through?

One architecture is trained from scratch, once per ``--seeds`` seed and the same ``--steps``
budget, on two built-in corpora that differ only in ``train_devices``: the default (no training
utterance through a device chain) and ``--share`` of the training utterances through one
(microphone response, level, clipping, DC offset, codec: ``test-device``'s ranges, other draws;
``speechnas data synth --train-devices``). The test sets are the same audio in both corpora (the
share changes only the training split); every model is scored on the default corpus's. Reports
WER mean ± sd over seeds and a paired bootstrap of the device-trained models against the others.
Prints JSON and a table.

    .venv/bin/python bench/train_devices.py --arch small --frontend knf80 --seeds 0,1 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _retrain import train_on_corpora

from speechnas.data.loading import load_utterances
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.evaluate.significance import paired_bootstrap, utterance_errors
from speechnas.nn.presets import PRESETS, preset
from speechnas.search.config import default_search_path
from speechnas.space import Arch
from speechnas.versions import versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(default_search_path()), help="search config: recipe")
    ap.add_argument("--arch", default="small", help="a preset name or an architecture JSON file")
    ap.add_argument("--frontend", default=None, help="a preset's frontend instead of its own")
    ap.add_argument("--share", type=float, default=0.3, help="training share through devices")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps per training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--corpora", default="corpora", help="root of the default corpus")
    ap.add_argument("--devices-corpora", default=None, help="root of the other (default: OUT)")
    ap.add_argument("--bootstrap", type=int, default=10_000)
    ap.add_argument("--out", default="runs/bench-train-devices")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if args.arch in PRESETS:
        arch = preset(args.arch, **({"frontend": args.frontend} if args.frontend else {}))
    else:
        arch = Arch.from_json(json.loads(Path(args.arch).read_text()))
    out = Path(args.out)
    corpora = {"default": CorpusConfig(), "devices": CorpusConfig(train_devices=args.share)}
    roots = {"default": Path(args.corpora),
             "devices": Path(args.devices_corpora or out / "corpora")}  # fmt: skip
    infos = {name: build_corpus(cfg, roots[name]) for name, cfg in corpora.items()}
    tests = {k: str(v) for k, v in infos["default"].manifests.items() if k.startswith("test")}
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = train_on_corpora(
        {name: info.manifests for name, info in infos.items()}, arch, tests, out,
        config=args.config, seeds=seeds, steps=args.steps, threads=args.threads,
        workers=args.workers,
    )  # fmt: skip
    refs = {t: [u.text for u in load_utterances(m, skip_invalid=False)] for t, m in tests.items()}
    words = {t: utterance_errors(r, r)[1] for t, r in refs.items()}

    def errors(res: dict[str, Any], test: str) -> np.ndarray:
        return utterance_errors(refs[test], res["hypotheses"][test])[0]

    rows: dict[str, Any] = {}
    for label, results in runs.items():
        per = {t: [float(errors(r, t).sum() / words[t].sum()) for r in results] for t in tests}
        rows[label] = {t: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)),
                           "seeds": v} for t, v in per.items()}  # fmt: skip
    versus = {
        t: paired_bootstrap([errors(r, t) for r in runs["devices"]],
                            [errors(r, t) for r in runs["default"]], words[t],
                            samples=args.bootstrap).to_dict()
        for t in tests
    }  # fmt: skip
    report = {"arch": arch.to_json(), "share": args.share, "seeds": seeds,
              "budget": {"steps": args.steps, "threads": args.threads}, "tests": tests,
              "models": rows, "devices_vs_default": versus,
              "builds": {n: {"cached": i.cached, "stats": i.stats} for n, i in infos.items()},
              "versions": versions()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"WER % (mean ± sd over seeds {seeds}), {args.steps} steps")
    for col in ("trained on", *tests):
        table.add_column(col, justify="left" if col == "trained on" else "right")
    for label, r in rows.items():
        cells = [f"{100 * r[t]['mean']:.2f} ± {100 * r[t]['sd']:.2f}" for t in tests]
        table.add_row(label if label == "default" else f"{args.share:g} via devices", *cells)
    table.add_row("difference [95%], p", *(
        f"{100 * v['delta']:+.2f} [{100 * v['ci_low']:+.2f}, {100 * v['ci_high']:+.2f}] "
        f"p={v['p_value']:.3f}" for v in versus.values()))  # fmt: skip
    Console(file=sys.stderr, width=180).print(table)


if __name__ == "__main__":
    main()
