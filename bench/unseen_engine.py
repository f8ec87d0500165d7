"""How far accuracy carries to speech from an engine never heard in training.

One architecture is trained from scratch, once per ``--seeds`` seed and the same ``--steps``
budget, on two built-in corpora that differ only in their training engines: eSpeak NG alone, and
the default multi-engine mix (eSpeak NG + Flite). Every model, and any ``--checkpoint`` given
(e.g. a model trained before the corpus had several engines), is scored on the same test sets:
the multi-engine corpus's ``test``, ``test-noisy``, ``test-tel`` and ``test-unseen-engine``
(Festival, in neither training mix), and the eSpeak-only corpus's ``test`` (``test-espeak``).
Reports WER mean ± sd over seeds, the unseen-engine / test ratio, and a paired bootstrap of the
multi-engine models against the eSpeak-only ones. Prints JSON and a table.

    .venv/bin/python bench/unseen_engine.py --arch small --seeds 0,1 --steps 600
    .venv/bin/python bench/unseen_engine.py --checkpoint before=old-run/retrained/best

Needs Flite and Festival (``bash scripts/install.sh`` installs them). A rerun with the same
arguments reuses every finished training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _retrain import hypotheses, train_on_corpora

from speechnas.data.loading import load_utterances
from speechnas.data.synth.corpus import CorpusConfig, build_corpus
from speechnas.evaluate.significance import paired_bootstrap, utterance_errors
from speechnas.nn.presets import PRESETS, preset
from speechnas.search.config import default_search_path
from speechnas.space import Arch
from speechnas.versions import versions

CORPORA = {
    "espeak-only": CorpusConfig(engines={"espeak": 1.0}, unseen_engine="festival"),
    "multi-engine": CorpusConfig(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(default_search_path()), help="search config: recipe")
    ap.add_argument("--arch", default="small", help="a preset name or an architecture JSON file")
    ap.add_argument("--checkpoint", action="append", default=[], help="LABEL=CHECKPOINT to score")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--corpora", default="corpora", help="root of the multi-engine corpus")
    ap.add_argument("--bootstrap", type=int, default=10_000)
    ap.add_argument("--out", default="runs/bench-unseen-engine")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    arch = preset(args.arch) if args.arch in PRESETS else Arch.from_json(
        json.loads(Path(args.arch).read_text())
    )  # fmt: skip
    out = Path(args.out)
    roots = {"espeak-only": out / "corpora", "multi-engine": Path(args.corpora)}
    infos = {name: build_corpus(cfg, roots[name]) for name, cfg in CORPORA.items()}
    builds = {name: {"stats": i.stats, "cached": i.cached} for name, i in infos.items()}
    multi = infos["multi-engine"].manifests
    tests = {k: str(v) for k, v in multi.items() if k.startswith("test")}
    tests["test-espeak"] = str(infos["espeak-only"].manifests["test"])
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = train_on_corpora(
        {name: info.manifests for name, info in infos.items()}, arch, tests, out,
        config=args.config, seeds=seeds, steps=args.steps, threads=args.threads,
        workers=args.workers,
    )  # fmt: skip
    for item in args.checkpoint:
        label, _, path = item.partition("=")
        runs[label] = [{"metrics": {"checkpoint": path}, "hypotheses": hypotheses(path, tests)}]

    refs = {
        name: [u.text for u in load_utterances(m, skip_invalid=False)] for name, m in tests.items()
    }
    words = {name: utterance_errors(r, r)[1] for name, r in refs.items()}

    def errors(res: dict[str, Any], test: str) -> np.ndarray:
        return utterance_errors(refs[test], res["hypotheses"][test])[0]

    rows: dict[str, Any] = {}
    for label, results in runs.items():
        wer = {}
        for t in tests:
            per_seed = [float(errors(r, t).sum() / words[t].sum()) for r in results]
            sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
            wer[t] = {"mean": float(np.mean(per_seed)), "sd": sd, "seeds": per_seed}
        rows[label] = {
            "wer": wer,
            # against the in-engine test of each training mix: the multi-engine corpus's test
            # (eSpeak + Flite) and the eSpeak-only corpus's test
            "unseen_over_test": wer["test-unseen-engine"]["mean"] / wer["test"]["mean"],
            "unseen_over_test_espeak": (
                wer["test-unseen-engine"]["mean"] / wer["test-espeak"]["mean"]
            ),
            "steps": [r["metrics"].get("steps") for r in results],
        }
    rows["multi-engine"]["vs_espeak_only"] = {
        t: paired_bootstrap(
            [errors(r, t) for r in runs["multi-engine"]],
            [errors(r, t) for r in runs["espeak-only"]],
            words[t],
            samples=args.bootstrap,
        ).to_dict()
        for t in tests
    }
    report = {
        "arch": arch.to_json(),
        "seeds": seeds,
        "budget": {"steps": args.steps, "threads": args.threads},
        "corpora": {k: dataclasses.asdict(v) for k, v in CORPORA.items()},
        "builds": builds,
        "tests": tests,
        "models": rows,
        "versions": versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    _print_table(rows, list(tests))


def _print_table(rows: dict[str, Any], tests: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="WER (mean ± sd over seeds) by training corpus")
    for col in ("trained on", *tests, "unseen / test", "unseen / test-espeak"):
        table.add_column(col, justify="left" if col == "trained on" else "right")
    for label, r in rows.items():
        cells = [f"{100 * r['wer'][t]['mean']:.2f} ± {100 * r['wer'][t]['sd']:.2f}" for t in tests]
        table.add_row(
            label, *cells, f"{r['unseen_over_test']:.2f}", f"{r['unseen_over_test_espeak']:.2f}"
        )
    console = Console(file=sys.stderr, width=160)
    console.print(table)
    sig = Table(title="paired bootstrap: WER(multi-engine) - WER(eSpeak only), 95% interval, p")
    for t in tests:
        sig.add_column(t, justify="right")
    by = rows["multi-engine"]["vs_espeak_only"]
    sig.add_row(
        *(
            f"{100 * by[t]['delta']:+.2f} [{100 * by[t]['ci_low']:+.2f}, "
            f"{100 * by[t]['ci_high']:+.2f}] p={by[t]['p_value']:.3f}"
            for t in tests
        )
    )
    console.print(sig)


if __name__ == "__main__":
    main()
