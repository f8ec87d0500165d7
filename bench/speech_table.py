"""The speech NAS benchmark table: architectures trained with step budgets, every metric kept.

Architectures of ``bench/tabular/speech-ctc.yaml`` (Conformer, Transformer, LSTM and CNN
encoders with CTC) are drawn per encoder family in turn (each family's draw uniform over its
own architectures; a draw over the whole space would be almost all Conformers, which have the
most combinations), and each is trained exactly as a trial of the default search
(``speechnas.search.trial.run_trial``, the search's recipe and built-in corpus, one thread) to
every fidelity of ``--steps`` in turn, each continuing the previous one. At every fidelity the
row keeps dev WER, steps and training minutes, and at the top one WER and CER on every test set
(scoring the five test sets at every fidelity took a fifth to a quarter of each
architecture's time); per architecture its parameters and MACs. Every ``--seed-every``-th
architecture is also trained with a second seed, which measures the WER noise between seeds
(differences smaller than it are not findings).

Step budgets make the table the same on any machine; wall time only says what it cost here.
The file is rewritten (atomically) after every finished fidelity and the scratch folder of an
unfinished architecture is kept, so the build can be stopped at any point and resumed with the
same command (it takes several sittings: about 5 minutes of one core per architecture here).

    .venv/bin/python bench/speech_table.py --archs 160 --workers 2        # build or resume
    .venv/bin/python bench/speech_table.py --summary                      # what is in it
    .venv/bin/python bench/speech_table.py --latency                      # time them (quiet!)
    .venv/bin/python bench/speech_table.py --config other-search.yaml \
        --out runs/other-table.json --scratch runs/other-table-scratch --archs 8  # another recipe

``--latency`` times every architecture of the table on ``--target`` (``cpu-ort-1t``, a 5-second
utterance, random weights: a float model's time does not depend on them) beside the ``small``
preset, in ``--rounds`` interleaved rounds in a shuffled order, and records the median time,
the median per-round ratio to ``small`` (what carries from one machine to another better than
milliseconds) and the block predictor's figure. Latency belongs to a machine, unlike the
trained results, so it goes in a file of its own (``speech-ctc-latency.json``), named with the
CPU it was measured on; it resumes like the build. Run it on a quiet machine, not beside the
build.

The JSON (``bench/tabular/speech-ctc.json``) is checked in; ``--summary`` prints the table's
size, cost and between-seed noise as JSON and a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _jobs import jobs_as_done
from rich.console import Console
from rich.table import Table

from speechnas.search.config import default_search_path, load_search_config
from speechnas.search.runner import prepare_base, retrain_base
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, load_space
from speechnas.train.config import TrainConfig
from speechnas.train.trainer import Diverged
from speechnas.versions import versions

HERE = Path(__file__).resolve().parent
SPACE = HERE / "tabular" / "speech-ctc.yaml"
TABLE = HERE / "tabular" / "speech-ctc.json"
LATENCY = HERE / "tabular" / "speech-ctc-latency.json"
REFERENCE = "small"  # the preset every round times beside the table's architectures
FAMILIES = ("conformer", "transformer", "lstm", "cnn")
DRAW_SEED = 0


def recipe(space: Path, config: str | None = None) -> TrainConfig:
    """The training recipe of the search ``config`` (default: the default search's) on its
    built-in corpus, scoring every test set, validating architectures by the table's
    ``space``."""
    cfg = load_search_config(config or default_search_path())
    base = prepare_base(cfg)
    return retrain_base(cfg, base).replace(threads=1, space=str(space))


def draw(space_path: Path, n: int) -> list[Arch]:
    """``n`` distinct architectures, the families in turn, each family's draw uniform over its
    own architectures (a family with fewer than its share gives all it has)."""
    space = load_space(space_path)
    rng = random.Random(DRAW_SEED)
    out: list[Arch] = []
    seen: set[str] = set()
    misses = dict.fromkeys(FAMILIES, 0)
    while len(out) < n and any(m < 200 for m in misses.values()):
        for fam in FAMILIES:
            if len(out) >= n or misses[fam] >= 200:
                continue
            arch = space.repair({"encoder": fam}, rng)
            if arch.key() in seen:
                misses[fam] += 1
                continue
            seen.add(arch.key())
            out.append(arch)
    return out


def _save(path: Path, table: dict[str, Any]) -> None:
    """Write via a temporary file and a rename, so an interrupted write leaves the old table."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _train(job: dict[str, Any]) -> dict[str, Any]:
    """One architecture and seed at every fidelity (in a worker process); returns the row."""
    import torch

    torch.set_num_threads(1)
    arch, seed, base = Arch.from_json(job["arch"]), job["seed"], job["base"]
    folder = Path(job["folder"])
    # A training stopped mid-way restarts: resumed, its first fidelity would be scored on the
    # steps it had already made beyond it.
    shutil.rmtree(folder, ignore_errors=True)
    row: dict[str, Any] = {"arch": job["arch"], "key": arch.key(), "hash": arch.hash(),
                           "family": arch["encoder"], "seed": seed, "fidelities": {},
                           "error": None}  # fmt: skip
    start = time.perf_counter()
    dev_only = base.replace(data=dataclasses.replace(base.data, test={}))
    for steps in job["steps"]:
        # Minutes far beyond any step budget, so the steps decide where every fidelity ends.
        fidelity = Fidelity(minutes=600.0, fraction=1.0, steps=steps)
        recipe = base if steps == job["steps"][-1] else dev_only
        try:
            m = run_trial(arch, base=recipe, fidelity=fidelity, output_dir=folder, seed=seed)
        except Diverged as e:
            row["error"] = f"diverged before {steps} steps: {e}"
            break
        row["params"], row["macs"] = m["params"], m["macs"]
        row["fidelities"][str(steps)] = {
            k: v for k, v in m.items() if k not in ("params", "macs") and not k.startswith("rtf:")
        }
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    row["versions"] = versions()
    shutil.rmtree(folder, ignore_errors=True)
    return row


def build(args: argparse.Namespace) -> None:
    out = Path(args.out)
    base = recipe(Path(args.space), args.config)
    base_json = json.loads(json.dumps(base.to_dict()))
    # the space by its place in the repository, so the checked-in table names no machine's path
    space_path = Path(args.space).resolve()
    if space_path.is_relative_to(HERE.parent):
        base_json["space"] = str(space_path.relative_to(HERE.parent))
    steps = [int(s) for s in args.steps.split(",")]
    space = load_space(args.space)
    header = {"space": space.to_dict(), "steps": steps, "base_config": base_json,
              "draw_seed": DRAW_SEED, "seed_every": args.seed_every}  # fmt: skip
    table = json.loads(out.read_text()) if out.is_file() else {**header, "rows": []}
    for k, v in header.items():
        if table.get(k) != v:
            sys.exit(
                f"{out}: its {k!r} differs from this build's; build into another --out, or move "
                "the file away to start afresh"
            )
    done = {(r["key"], r["seed"]) for r in table["rows"]}
    archs = draw(Path(args.space), args.archs)
    jobs = []
    for i, arch in enumerate(archs):
        for seed in (0, 1) if i % args.seed_every == 0 else (0,):
            if (arch.key(), seed) not in done:
                folder = Path(args.scratch) / f"{arch.hash()}-s{seed}"
                jobs.append({"arch": arch.to_json(), "seed": seed, "base": base, "steps": steps,
                             "folder": str(folder)})  # fmt: skip
    print(f"{len(table['rows'])} rows in {out}; {len(jobs)} trainings to go "
          f"({len(archs)} architectures, seeds 0 and 1 for every {args.seed_every}th)",
          flush=True)  # fmt: skip
    for n, (_, row) in enumerate(jobs_as_done(_train, jobs, args.workers, one_each=True), 1):
        table["rows"].append(row)
        _save(out, table)
        top = row["fidelities"].get(str(steps[-1]), {})
        wer = top.get("wer:test")
        print(f"[{n}/{len(jobs)}] {row['family']:11s} {row['hash']} seed {row['seed']}: "
              f"{row['params'] / 1e6 if 'params' in row else float('nan'):.2f} M, test WER "
              f"{'-' if wer is None else f'{100 * wer:.2f}%'} after {steps[-1]} steps, "
              f"{row['wall_seconds'] / 60:.1f} min", flush=True)  # fmt: skip


def _p90(v: list[float]) -> float:
    """The 90th percentile, interpolated between order statistics (one value: itself)."""
    return v[0] if len(v) == 1 else statistics.quantiles(v, n=10, method="inclusive")[-1]


def summary(path: Path) -> dict[str, Any]:
    """Size, cost and between-seed noise of a table."""
    table = json.loads(path.read_text())
    rows = table["rows"]
    steps = [str(s) for s in table["steps"]]
    top = steps[-1]
    complete = [r for r in rows if top in r["fidelities"]]
    by_family: dict[str, int] = {}
    for r in complete:
        if r["seed"] == 0:
            by_family[r["family"]] = by_family.get(r["family"], 0) + 1
    pairs: dict[str, list[float]] = {}
    seeds: dict[str, dict[int, dict[str, Any]]] = {}
    for r in complete:
        seeds.setdefault(r["key"], {})[r["seed"]] = r["fidelities"][top]
    tests = sorted({k for r in complete for k in r["fidelities"][top] if k.startswith("wer:")})
    for two in (s for s in seeds.values() if len(s) == 2):
        for t in ["dev_wer", *tests]:
            pairs.setdefault(t, []).append(abs(two[0][t] - two[1][t]))
    return {
        "file": str(path),
        "architectures": sum(by_family.values()),
        "by_family": by_family,
        "fidelities_steps": table["steps"],
        "rows": len(rows),
        "diverged": sum(1 for r in rows if r["error"]),
        "two_seed_architectures": len(pairs.get("dev_wer", [])),
        "build_cpu_hours": round(sum(r.get("wall_seconds", 0) for r in rows) / 3600, 2),
        # |WER(seed 0) - WER(seed 1)| at the top fidelity: its median and 90th percentile.
        "seed_noise": {
            t: {"median": statistics.median(v), "p90": _p90(v)} for t, v in pairs.items()
        },
        # dev WER at every fidelity by family (seed 0): what each family reaches, and how soon
        "family_dev_wer": {
            fam: {
                steps_: _spread([r["fidelities"][steps_]["dev_wer"] for r in mine])
                for steps_ in steps
            }
            for fam in sorted(by_family)
            if (mine := [r for r in complete if r["family"] == fam and r["seed"] == 0])
        },
    }


def _spread(v: list[float]) -> dict[str, float]:
    """Best, median and worst of a list."""
    return {"best": min(v), "median": statistics.median(v), "worst": max(v)}


def latency(args: argparse.Namespace) -> None:
    """Times the table's architectures beside ``small`` (see the module's doc)."""
    import numpy as np

    from speechnas.hardware.evaluation import measure_archs
    from speechnas.hardware.predictor import _cpu_name
    from speechnas.nn.presets import preset
    from speechnas.search.objectives import latency_model

    table = json.loads(Path(args.out).read_text())
    vocab = int(table["base_config"]["tokenizer"]["vocab_size"])
    path = Path(args.latency_out)
    header = {"table": Path(args.out).name, "target": args.target, "seconds": args.seconds,
              "rounds": args.rounds, "reference": REFERENCE, "vocab_size": vocab,
              "cpu": _cpu_name()}  # fmt: skip
    lat = json.loads(path.read_text()) if path.is_file() else {**header, "archs": {}}
    for k, v in header.items():
        if lat.get(k) != v:
            sys.exit(f"{path}: its {k!r} is {lat.get(k)!r}, this run's {v!r}; use another "
                     "--latency-out or move the file away")  # fmt: skip
    top = str(table["steps"][-1])
    todo: dict[str, Arch] = {}
    for r in table["rows"]:
        if top in r["fidelities"] and r["hash"] not in lat["archs"]:
            todo.setdefault(r["hash"], Arch.from_json(r["arch"]))
    print(f"{len(lat['archs'])} architectures timed in {path}; {len(todo)} to go", flush=True)
    predictor = latency_model(args.target)
    ref = preset(REFERENCE)
    items = list(todo.items())
    for start in range(0, len(items), args.batch):
        batch = items[start : start + args.batch]
        ms: dict[str, list[float]] = {h: [] for h, _ in batch}
        ratio: dict[str, list[float]] = {h: [] for h, _ in batch}
        for rnd in range(args.rounds):
            order = [("reference", ref), *batch]
            random.Random(rnd).shuffle(order)
            rows = measure_archs([a for _, a in order], args.target, [args.seconds],
                                 vocab_size=vocab, seed=rnd, rounds=1)  # fmt: skip
            got = {h: float(row["measured_ms"]) for (h, _), row in zip(order, rows, strict=True)}
            for h, _ in batch:
                ms[h].append(got[h])
                ratio[h].append(got[h] / got["reference"])
        for h, arch in batch:
            lat["archs"][h] = {
                "measured_ms": float(np.median(ms[h])),
                "rounds_ms": [round(v, 4) for v in ms[h]],
                "ratio_to_reference": float(np.median(ratio[h])),
                "predicted_ms": float(predictor.predict(arch, args.seconds, vocab)),
            }
        lat["versions"] = versions()
        _save(path, lat)
        shown = ", ".join(f"{h[:8]} {lat['archs'][h]['measured_ms']:.2f} ms" for h, _ in batch)
        print(f"[{len(lat['archs'])}] {shown}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default=str(SPACE))
    ap.add_argument("--out", default=str(TABLE))
    ap.add_argument("--config", default=None,
                    help="a search config whose training recipe to use (default: the default "
                    "search's); build into another --out and --scratch")  # fmt: skip
    ap.add_argument("--archs", type=int, default=160, help="architectures to tabulate")
    ap.add_argument("--steps", default="150,400,1000", help="fidelities (optimizer steps)")
    ap.add_argument("--seed-every", type=int, default=5, help="a second seed for every Nth")
    ap.add_argument("--workers", type=int, default=2, help="trainings at a time, 1 thread each")
    ap.add_argument("--scratch", default="runs/speech-table-scratch", help="training folders")
    ap.add_argument("--summary", action="store_true", help="print what the table holds")
    ap.add_argument("--latency", action="store_true", help="time the tabulated architectures")
    ap.add_argument("--latency-out", default=str(LATENCY))
    ap.add_argument("--target", default="cpu-ort-1t")
    ap.add_argument("--seconds", type=float, default=5.0, help="utterance length timed")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--batch", type=int, default=8, help="architectures per set of rounds")
    args = ap.parse_args()
    if args.latency:
        latency(args)
        return
    if args.summary:
        s = summary(Path(args.out))
        print(json.dumps(s, indent=1))
        t = Table(title=f"{s['file']}: between-seed |ΔWER| at {s['fidelities_steps'][-1]} steps")
        for col in ("set", "median", "p90"):
            t.add_column(col, justify="left" if col == "set" else "right")
        for name, v in s["seed_noise"].items():
            t.add_row(name, f"{100 * v['median']:.2f}", f"{100 * v['p90']:.2f}")
        console = Console(width=120)
        console.print(t)
        f = Table(title="dev WER % by family (seed 0): median (best-worst)")
        f.add_column("family")
        f.add_column("architectures", justify="right")
        for steps_ in s["fidelities_steps"]:
            f.add_column(f"{steps_} steps", justify="right")
        for fam, by_steps in s["family_dev_wer"].items():
            cells = [
                f"{100 * v['median']:.1f} ({100 * v['best']:.1f}-{100 * v['worst']:.1f})"
                for v in by_steps.values()
            ]
            f.add_row(fam, str(s["by_family"][fam]), *cells)
        console.print(f)
        return
    build(args)


if __name__ == "__main__":
    main()
